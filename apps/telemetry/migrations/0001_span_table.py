"""The span table, partitioned by day on start_time.

Partitions are created by partitions.ensure_partitions (ahead of time by the maintenance
task, and on demand by the receiver for late or backfilled spans).
"""

from __future__ import annotations

from typing import ClassVar

from django.db import migrations

CREATE = """
CREATE TABLE telemetry_span (
    project_id          bigint NOT NULL,
    trace_id            uuid NOT NULL,
    span_id             bigint NOT NULL,
    parent_span_id      bigint,
    start_time          timestamptz NOT NULL,
    end_time            timestamptz NOT NULL,
    duration_ms         double precision NOT NULL,
    name                text NOT NULL,
    kind                smallint NOT NULL,
    status_code         smallint NOT NULL,
    status_message      text,
    service_name        text,
    scope_name          text,
    is_llm              boolean NOT NULL,
    provider            text,
    operation           text,
    request_model       text,
    response_model      text,
    input_tokens        integer,
    cache_read_tokens   integer,
    cache_write_tokens  integer,
    output_tokens       integer,
    reasoning_tokens    integer,
    ttft_ms             double precision,
    queue_ms            double precision,
    prefill_ms          double precision,
    decode_ms           double precision,
    server_e2e_ms       double precision,
    finish_reasons      text[],
    error_type          text,
    is_streaming        boolean,
    tenant              text,
    feature             text,
    user_id             text,
    session_id          text,
    task_id             text,
    retry_attempt       integer,
    semantic_cache_hit  boolean,
    system_fingerprint  text,
    service_tier        text,
    response_id         text,
    supplied_cost_usd   numeric(20, 10),
    cost_usd            numeric(20, 10),
    price_id            bigint,
    prompt_chars        integer,
    completion_chars    integer,
    prompt_hash         text,
    attributes          jsonb NOT NULL DEFAULT '{}'::jsonb,
    resource            jsonb NOT NULL DEFAULT '{}'::jsonb,
    received_at         timestamptz NOT NULL DEFAULT now(),
    -- Idempotency: an exporter's retry re-sends the same (trace_id, span_id) with the same
    -- start time, and INSERT ... ON CONFLICT DO NOTHING drops it. start_time is in the key
    -- because a partitioned table's unique keys must contain the partition key.
    PRIMARY KEY (trace_id, span_id, start_time)
) PARTITION BY RANGE (start_time);

-- Re-pricing a time range and listing unpriced models scan LLM spans by time; trace pages
-- and trace inheritance look spans up by trace_id (the primary key's prefix covers that).
CREATE INDEX telemetry_span_llm_start ON telemetry_span (start_time) WHERE is_llm;
COMMENT ON INDEX telemetry_span_llm_start IS
    'pricing.reprice_range and the unpriced-models listing: LLM spans by start_time';
"""

DROP = "DROP TABLE IF EXISTS telemetry_span CASCADE;"


class Migration(migrations.Migration):
    initial = True
    dependencies: ClassVar[list[tuple[str, str]]] = []
    operations = [migrations.RunSQL(CREATE, DROP)]
