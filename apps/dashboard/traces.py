"""The traces explorer: find traces by their root span, then show one trace's spans.

Metrics come from the query layer; this is search, so it reads raw spans. A trace is
listed through its root span (the span without a parent), which is where applications put
the tenant and feature. Filters on calls (provider, model) look inside the trace by its
trace_id, the primary key's prefix.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection

from apps.metrics.query import Scope

PAGE_SIZE = 50
SORTS = {
    "time": "r.start_time DESC",
    "oldest": "r.start_time ASC",
    "duration": "r.duration_ms DESC",
    "shortest": "r.duration_ms ASC",
}
STATUSES = ("ok", "error")
# How far a trace's spans may sit from its root: calls are searched in the listed range
# widened by this much, so the search stays within a few partitions.
TRACE_SPREAD = timedelta(hours=6)


@dataclass(frozen=True)
class TraceSearch:
    start: datetime
    end: datetime
    tenants: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    status: str | None = None  # "ok" / "error"
    min_duration_ms: float | None = None
    sort: str = "time"
    page: int = 1


# Roots in range, newest first by default. The partial index telemetry_span_root_start
# serves the range scan in start_time order; the EXISTS probes run per candidate root
# against the primary key (trace_id prefix) of the few partitions the widened range
# covers, and stop at the first matching call.
_LIST_SQL = """
SELECT r.trace_id, r.span_id, r.start_time, r.duration_ms, r.name, r.service_name, r.tenant, r.feature,
       r.status_code, r.error_type,
       calls.n_calls, calls.cost_usd, calls.cost_unknown, calls.models, calls.errors
FROM telemetry_span r
CROSS JOIN LATERAL (
    SELECT count(*) AS n_calls, sum(c.cost_usd) AS cost_usd,
           count(*) FILTER (WHERE c.cost_usd IS NULL) AS cost_unknown,
           array_agg(DISTINCT coalesce(c.request_model, c.response_model)) AS models,
           count(*) FILTER (WHERE c.status_code = 2 OR c.error_type IS NOT NULL) AS errors
    FROM telemetry_span c
    WHERE c.trace_id = r.trace_id AND c.is_llm
      AND c.start_time >= %(wide_start)s AND c.start_time < %(wide_end)s
) calls
WHERE r.parent_span_id IS NULL
  AND r.start_time >= %(start)s AND r.start_time < %(end)s
  {conditions}
ORDER BY {order}
LIMIT %(limit)s OFFSET %(offset)s
"""

_CALL_FILTER = """
  AND EXISTS (
    SELECT 1 FROM telemetry_span m
    WHERE m.trace_id = r.trace_id AND m.is_llm
      AND m.start_time >= %(wide_start)s AND m.start_time < %(wide_end)s
      {call_conditions}
  )
"""


def search_traces(search: TraceSearch, scope: Scope) -> tuple[list[dict[str, Any]], bool]:
    """One page of matching traces, and whether there is a next page."""
    params: dict[str, Any] = {
        "start": search.start,
        "end": search.end,
        "wide_start": search.start - TRACE_SPREAD,
        "wide_end": search.end + TRACE_SPREAD,
        "limit": PAGE_SIZE + 1,
        "offset": (max(search.page, 1) - 1) * PAGE_SIZE,
    }
    conditions: list[str] = []
    tenants = search.tenants
    if scope.tenants is not None:
        tenants = tuple(t for t in tenants if t in scope.tenants) if tenants else scope.tenants
        if not tenants:
            return [], False
    if tenants:
        conditions.append("AND r.tenant = ANY(%(tenants)s)")
        params["tenants"] = list(tenants)
    if search.features:
        conditions.append("AND r.feature = ANY(%(features)s)")
        params["features"] = list(search.features)
    if search.status == "error":
        conditions.append("AND (r.status_code = 2 OR r.error_type IS NOT NULL)")
    elif search.status == "ok":
        conditions.append("AND r.status_code <> 2 AND r.error_type IS NULL")
    if search.min_duration_ms is not None:
        conditions.append("AND r.duration_ms >= %(min_duration)s")
        params["min_duration"] = search.min_duration_ms
    call_conditions = []
    if search.providers:
        call_conditions.append("AND m.provider = ANY(%(providers)s)")
        params["providers"] = list(search.providers)
    if search.models:
        call_conditions.append("AND (m.request_model = ANY(%(models)s) OR m.response_model = ANY(%(models)s))")
        params["models"] = list(search.models)
    if call_conditions:
        conditions.append(_CALL_FILTER.format(call_conditions="\n      ".join(call_conditions)))
    sql = _LIST_SQL.format(conditions="\n  ".join(conditions), order=SORTS.get(search.sort, SORTS["time"]))
    with connection.cursor() as cur:
        cur.execute(sql, params)
        columns = [c.name for c in cur.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    for row in rows:
        row["trace_hex"] = row["trace_id"].hex
        row["models"] = sorted(m for m in (row["models"] or []) if m)
        row["is_error"] = row["status_code"] == 2 or row["error_type"] is not None or bool(row["errors"])
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


_TRACE_SQL = """
SELECT trace_id, span_id, parent_span_id, start_time, end_time, duration_ms, name, kind, status_code,
       status_message, service_name, is_llm, provider, operation, request_model, response_model,
       input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
       ttft_ms, queue_ms, prefill_ms, decode_ms, server_e2e_ms, finish_reasons, error_type, tenant, feature,
       retry_attempt, cost_usd, price_id, response_id, system_fingerprint
FROM telemetry_span
WHERE trace_id = %(trace_id)s
ORDER BY start_time, span_id
LIMIT 2000
"""


def load_trace(trace_hex: str, scope: Scope) -> list[dict[str, Any]] | None:
    """Every span of a trace, or None when it does not exist or is not the user's to see."""
    try:
        trace_id = uuid.UUID(hex=trace_hex)
    except ValueError:
        return None
    with connection.cursor() as cur:
        cur.execute(_TRACE_SQL, {"trace_id": trace_id})
        columns = [c.name for c in cur.description]
        spans = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    if not spans:
        return None
    tenants = {span["tenant"] for span in spans if span["tenant"]}
    if scope.tenants is not None and not (tenants and tenants <= set(scope.tenants)):
        return None
    return spans


def span_hex(span_id: int | None) -> str:
    if span_id is None:
        return ""
    return (span_id & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big").hex()
