"""Exact figures straight from raw spans, written from docs/metrics.md alone, for the
metrics tests to hold the query layer against.

A call is an LLM span whose parent is not an LLM span; its tenant and feature are its own,
else its trace's (the root span's, else the earliest span's that has one); an unknown tenant
is '' and an unknown feature is the span's service name. Percentiles are percentile_cont.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection

from apps.metrics.query import FILTER_FIELDS, Filters, Scope

CALLS = """
CREATE TEMP TABLE reference_calls ON COMMIT DROP AS
WITH trace AS (
    -- The trace's tenant and feature: the root span's, else the earliest span's that has one.
    SELECT trace_id,
           (array_agg(tenant ORDER BY parent_span_id IS NOT NULL, start_time) FILTER (WHERE tenant IS NOT NULL))[1]
               AS tenant,
           (array_agg(feature ORDER BY parent_span_id IS NOT NULL, start_time) FILTER (WHERE feature IS NOT NULL))[1]
               AS feature
    FROM telemetry_span GROUP BY trace_id
)
SELECT c.project_id, c.start_time, c.duration_ms AS e2e_ms, c.ttft_ms, c.cost_usd, c.input_tokens, c.output_tokens,
       c.cache_read_tokens,
       coalesce(c.tenant, trace.tenant, '') AS tenant,
       coalesce(c.feature, trace.feature, c.service_name) AS feature,
       c.provider, coalesce(c.request_model, c.response_model) AS model, c.service_name AS service
FROM telemetry_span c
JOIN trace USING (trace_id)
LEFT JOIN telemetry_span parent ON parent.trace_id = c.trace_id AND parent.span_id = c.parent_span_id
WHERE c.is_llm AND parent.is_llm IS NOT TRUE
"""

TIME = {None: "NULL::timestamptz", "hour": "date_trunc('hour', start_time, 'UTC')",
        "day": "date_trunc('day', start_time, 'UTC')", "week": "date_trunc('week', start_time, 'UTC')"}  # fmt: skip
QUANTILES = (0.5, 0.95, 0.99)


def create_reference_calls() -> None:
    """Materialise every call with its attribution (inside the test's transaction)."""
    with connection.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS reference_calls")
        cur.execute("ANALYZE telemetry_span")
        cur.execute(CALLS)
        cur.execute("ANALYZE reference_calls")


def exact_rows(
    start: datetime,
    end: datetime,
    filters: Filters,
    scope: Scope,
    group_by: Sequence[str],
    granularity: str | None,
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """(time, *group values) -> exact figures, for groups with at least one call."""
    where = ["start_time >= %(start)s", "start_time < %(end)s"]
    params: dict[str, Any] = {"start": start, "end": end}
    if filters.projects:
        where.append("project_id = ANY(%(projects)s)")
        params["projects"] = list(filters.projects)
    for dim, field in FILTER_FIELDS.items():
        values = getattr(filters, field)
        if values:
            where.append(f"{dim} = ANY(%(f_{dim})s)")
            params[f"f_{dim}"] = list(values)
    if scope.tenants is not None:
        where.append("tenant = ANY(%(scope)s) AND tenant <> ''")
        params["scope"] = list(scope.tenants)
    keys = [f"{TIME[granularity]} AS t", *group_by]
    sql = f"""
        SELECT {", ".join(keys)}, count(*) AS requests, sum(cost_usd) AS cost_usd,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
               sum(cache_read_tokens) AS cache_read_tokens, count(ttft_ms) AS ttft_samples,
               percentile_cont(%(qs)s::float8[]) WITHIN GROUP (ORDER BY e2e_ms) AS e2e,
               percentile_cont(%(qs)s::float8[]) WITHIN GROUP (ORDER BY ttft_ms) AS ttft
        FROM reference_calls WHERE {" AND ".join(where)}
        GROUP BY {", ".join(str(n + 1) for n in range(len(keys)))}
    """
    params["qs"] = list(QUANTILES)
    with connection.cursor() as cur:
        cur.execute(sql, params)
        names = [column.name for column in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return {(row["t"], *(row[dim] for dim in group_by)): row for row in rows}
