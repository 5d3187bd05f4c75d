"""Writing canonical spans to telemetry_span: COPY into a temporary table, then one
INSERT ... ON CONFLICT DO NOTHING, so a batch is all-or-nothing and a re-sent span is a no-op
(and notes no hour for re-rollup).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from django.db import connection, transaction
from psycopg.types.json import Jsonb

from apps.telemetry.partitions import ensure_partitions_for
from collectors.records import CanonicalSpan

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# (column, PostgreSQL type for binary COPY, how to read it off a CanonicalSpan). The order
# is the COPY order; keep it in step with migrations/0001_span_table.py.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("project_id", "int8"),
    ("trace_id", "uuid"),
    ("span_id", "int8"),
    ("parent_span_id", "int8"),
    ("start_time", "timestamptz"),
    ("end_time", "timestamptz"),
    ("duration_ms", "float8"),
    ("name", "text"),
    ("kind", "int2"),
    ("status_code", "int2"),
    ("status_message", "text"),
    ("service_name", "text"),
    ("scope_name", "text"),
    ("is_llm", "bool"),
    ("provider", "text"),
    ("operation", "text"),
    ("request_model", "text"),
    ("response_model", "text"),
    ("input_tokens", "int4"),
    ("cache_read_tokens", "int4"),
    ("cache_write_tokens", "int4"),
    ("output_tokens", "int4"),
    ("reasoning_tokens", "int4"),
    ("ttft_ms", "float8"),
    ("queue_ms", "float8"),
    ("prefill_ms", "float8"),
    ("decode_ms", "float8"),
    ("server_e2e_ms", "float8"),
    ("finish_reasons", "text[]"),
    ("error_type", "text"),
    ("is_streaming", "bool"),
    ("tenant", "text"),
    ("feature", "text"),
    ("user_id", "text"),
    ("session_id", "text"),
    ("task_id", "text"),
    ("retry_attempt", "int4"),
    ("semantic_cache_hit", "bool"),
    ("system_fingerprint", "text"),
    ("service_tier", "text"),
    ("response_id", "text"),
    ("supplied_cost_usd", "numeric"),
    ("cost_usd", "numeric"),
    ("price_id", "int8"),
    ("prompt_chars", "int4"),
    ("completion_chars", "int4"),
    ("prompt_hash", "text"),
    ("attributes", "jsonb"),
    ("resource", "jsonb"),
    ("output_valid", "bool"),
    ("refused", "bool"),
)
_COLUMN_LIST = ", ".join(name for name, _ in COLUMNS)
_TYPES = [pg_type for _, pg_type in COLUMNS]


def ns_to_datetime(ns: int) -> datetime:
    # Integer microseconds: a float division loses precision at today's epoch values.
    return EPOCH + timedelta(microseconds=ns // 1000)


def span_id_to_int(raw: bytes) -> int:
    return int.from_bytes(raw, "big", signed=True)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()


def _row(project_id: int, s: CanonicalSpan) -> tuple[Any, ...]:
    return (
        project_id,
        uuid.UUID(bytes=s.trace_id),
        span_id_to_int(s.span_id),
        span_id_to_int(s.parent_span_id) if s.parent_span_id else None,
        ns_to_datetime(s.start_ns),
        ns_to_datetime(s.end_ns),
        (s.end_ns - s.start_ns) / 1e6,
        s.name,
        s.kind,
        s.status_code,
        s.status_message or None,
        s.service_name or None,
        s.scope_name or None,
        s.is_llm,
        s.provider,
        s.operation,
        s.request_model,
        s.response_model,
        s.input_tokens,
        s.cache_read_tokens,
        s.cache_write_tokens,
        s.output_tokens,
        s.reasoning_tokens,
        s.ttft_ms,
        s.queue_ms,
        s.prefill_ms,
        s.decode_ms,
        s.server_e2e_ms,
        s.finish_reasons,
        s.error_type,
        s.is_streaming,
        s.tenant,
        s.feature,
        s.user_id,
        s.session_id,
        s.task_id,
        s.retry_attempt,
        s.semantic_cache_hit,
        s.system_fingerprint,
        s.service_tier,
        s.response_id,
        s.supplied_cost_usd,
        s.cost_usd,
        s.price_id,
        s.prompt_chars,
        s.completion_chars,
        s.prompt_hash,
        Jsonb(s.attributes, dumps=_dumps),
        Jsonb(s.resource, dumps=_dumps),
        s.output_valid,
        s.refused,
    )


def span_days(spans: Sequence[CanonicalSpan]) -> set[date]:
    return {ns_to_datetime(s.start_ns).date() for s in spans}


def insert_spans(project_id: int, spans: Sequence[CanonicalSpan]) -> int:
    """Store spans durably; returns how many were new (a re-sent span is not counted twice).

    The caller acknowledges the client only after this returns: the transaction has
    committed by then (synchronous_commit stays on).
    """
    if not spans:
        return 0
    ensure_partitions_for(span_days(spans))
    with transaction.atomic(), connection.cursor() as cur:
        # A session-lifetime temp table, emptied at each commit: no DDL per batch.
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS span_incoming "
            "(LIKE telemetry_span INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY span_incoming ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_TYPES)
            for span in spans:
                copy.write_row(_row(project_id, span))
        # The hours that gained spans get a rollup note in the same transaction: the note is
        # visible exactly when the spans are (apps/rollups/models.py, DirtyHour).
        cur.execute(
            f"""
            WITH inserted AS (
                INSERT INTO telemetry_span ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM span_incoming
                ON CONFLICT DO NOTHING
                RETURNING project_id, start_time
            ), noted AS (
                INSERT INTO rollups_dirtyhour (project_id, hour, noted_at)
                SELECT DISTINCT project_id, date_trunc('hour', start_time), now() FROM inserted
            )
            SELECT count(*) FROM inserted
            """
        )
        return int(cur.fetchone()[0])
