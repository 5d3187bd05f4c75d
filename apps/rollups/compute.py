"""The SQL that turns raw spans into RollupHour rows (docs/metrics.md, implemented once).

rollup_rows_sql() returns one SELECT with the named parameters %(project_ids)s (bigint[]),
%(start)s and %(end)s (timestamptz, any range, hour-aligned or not). It yields rows whose
columns are exactly ROLLUP_COLUMNS, RollupHour's own names: one per (project, UTC hour of
the span, grouping set, dimension values). The rollup runner INSERTs them for whole hours;
the metrics query layer runs the same SELECT over the still-open edge of a range.

Only spans that start in [start, end) are counted. Their traces are read in a wider window,
[start - ATTRIBUTION_WINDOW, end + ATTRIBUTION_WINDOW), to find LLM parents (a call is an LLM
span whose parent is no LLM span), the trace's tenant and feature, and a task's root and
first call: a parent, a root or an agent's other trace further away than that is not seen
(docs/rollups.md, "Attribution window").

The plan it is written for (EXPLAIN ANALYZE in bench/rollup.py, one hour of 2M spans/30 days):

  touched        the range's spans, trace ids only: a Bitmap Heap Scan on the BRIN index
                 telemetry_span_start_brin of the one or two day partitions in range (rollups
                 migration 0002), a Seq Scan when the range covers most of a partition.
  touched_spans  every span of those traces in the window, by the primary key's prefix
                 trace_id: a Nested Loop over the distinct trace ids with an Index Scan on each
                 window partition's pkey (initial pruning drops the other partitions at
                 executor start). For a day or more, a Hash Join over Seq Scans of the window's
                 partitions, which reads each one once. Materialized: read three times below.
  task_peers     other traces of the task ids those spans carry, by the partial index
                 telemetry_span_task (rollups migration 0002): no rows, nothing read, when no
                 span carries observatory.task.id.
  nested         LLM spans whose parent is an LLM span: a Hash Join of touched_spans with
                 itself; the calls are the other LLM spans (Hash Anti Join).
  traces         one row per trace: attribution, root, first call. A GroupAggregate over
                 touched_spans sorted once by (project, trace, root-first order): PostgreSQL
                 16 presorts ordered aggregates that share an ORDER BY.
  grouped        one pass over the facts (calls, cache lookups, queue times, tasks) that
                 feeds every grouping set at once: a MixedAggregate (HashAggregate) with one
                 hash table per grouping set. The distributions leave it as unsorted arrays
                 of bucket indexes.
  final SELECT   per output row, each array becomes (sorted indexes, counts): the second
                 level of the two-level aggregation, a small unnest + HashAggregate + sort.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from apps.rollups.models import ALL_DIMS, DIM_BITS, DIMENSIONS, DISTRIBUTIONS, GROUPING_SETS
from apps.rollups.sketch import BUCKET_SQL

# How far from the rolled-up range a trace's other spans are looked for.
ATTRIBUTION_WINDOW = timedelta(hours=24)

# RollupHour's columns, in the order the SELECT yields them (the INSERT's column list).
ROLLUP_COLUMNS: tuple[str, ...] = (
    "project_id",
    "bucket",
    "grouping",
    *DIMENSIONS,
    "requests",
    "errors",
    "errors_by_type",
    "retries",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "tokens_unknown",
    "cost_usd",
    "cost_unknown",
    "cache_savings_usd",
    "semantic_cache_lookups",
    "semantic_cache_hits",
    "tasks",
    "successful_tasks",
    "generation_tokens",
    "generation_ms",
    *(f"{name}_{part}" for name in DISTRIBUTIONS for part in ("idx", "cnt")),
)

SET_BASED = True
_STATUS_ERROR = 2  # OTLP Status.StatusCode ERROR (collectors.records.STATUS_ERROR)


def _literal(text: str) -> str:
    """A SQL string literal inside a pyformat query (quotes doubled, % escaped)."""
    return "'" + text.replace("'", "''").replace("%", "%%") + "'"


def fallback_feature_sql(alias: str = "s") -> str:
    """The span's FEATURE_FALLBACK_ATTRIBUTE resource attribute ('' counts as absent)."""
    key = settings.FEATURE_FALLBACK_ATTRIBUTE
    if key == "service.name":
        return f"nullif({alias}.service_name, '')"  # ingest keeps it in its own column
    return f"nullif({alias}.resource ->> {_literal(key)}, '')"


def _grouping_sets_sql(grouping_sets: Sequence[int]) -> str:
    sets = []
    for mask in grouping_sets:
        if mask & ~ALL_DIMS:
            raise ValueError(f"grouping set {mask} names no known dimensions")
        sets.append("(" + ", ".join(name for name in DIMENSIONS if mask & DIM_BITS[name]) + ")")
    return ", ".join(sets)


# GROUPING(a, b, ...) sets a bit for each argument NOT grouped by, the first argument in the
# highest bit; with DIMENSIONS reversed the bits line up with DIM_BITS, so the mask of the
# dimensions grouped by is ALL_DIMS minus it.
_GROUPING_MASK = f"({ALL_DIMS} - GROUPING({', '.join(reversed(DIMENSIONS))}))::smallint"

_MODEL = "coalesce(nullif({a}.request_model, ''), nullif({a}.response_model, ''), '')"

# Columns of a span the rollup reads; is_call and the fallback feature are added per span.
_SPAN_COLUMNS = """
    s.project_id, s.trace_id, s.span_id, s.parent_span_id, s.start_time, s.duration_ms, s.status_code,
    s.is_llm, s.service_name, s.provider, s.request_model, s.response_model, s.input_tokens,
    s.cache_read_tokens, s.cache_write_tokens, s.output_tokens, s.reasoning_tokens, s.ttft_ms, s.queue_ms,
    s.finish_reasons, s.error_type, nullif(s.tenant, '') AS tenant, nullif(s.feature, '') AS feature,
    nullif(s.task_id, '') AS task_id, s.retry_attempt, s.semantic_cache_hit, s.cost_usd, s.price_id"""



def _window(alias: str) -> str:
    """`alias` starts in the attribution window around the range. The bounds are parameters
    (rollup_params), not `%(start)s - interval ...`: a constant lets the planner prune the
    day partitions at plan time and cost the trace look-ups on the few it will touch."""
    return f"{alias}.start_time >= %(window_start)s AND {alias}.start_time < %(window_end)s"


def rollup_params(project_ids: Iterable[int], start: datetime, end: datetime) -> dict[str, Any]:
    """The parameters of rollup_rows_sql() for spans of `project_ids` in [start, end)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("rollup_params needs aware datetimes")
    return {
        "project_ids": list(project_ids),
        "start": start,
        "end": end,
        "window_start": start - ATTRIBUTION_WINDOW,
        "window_end": end + ATTRIBUTION_WINDOW,
    }


# A trace's spans, root first (a span without a parent), then by start: the order in which
# they give the trace its tenant, feature, task id, root and first call. Every frame is the
# whole trace, so each window aggregate is computed once per trace.
_TRACE_WINDOW = """trace AS (
        PARTITION BY s.project_id, s.trace_id ORDER BY s.parent_span_id IS NOT NULL, s.start_time, s.span_id
        ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"""


def _traced_spans_sql(traces: str) -> str:
    """Every span in the window of the traces in `traces` (project_id, trace_id), each with its
    trace's context: whether it is a call, the trace's tenant, feature and task id, its rank
    in the trace (1 = the root), and the trace's first call.

    Two window levels over one sort: the first collects the trace's LLM span ids (a call is an
    LLM span whose parent is not one of them), the second needs is_call.
    """
    return f"""
    SELECT s.*,
        (array_agg(s.tenant) FILTER (WHERE s.tenant IS NOT NULL) OVER trace)[1] AS trace_tenant,
        (array_agg(s.feature) FILTER (WHERE s.feature IS NOT NULL) OVER trace)[1] AS trace_feature,
        (array_agg(s.task_id) FILTER (WHERE s.task_id IS NOT NULL) OVER trace)[1] AS trace_task_id,
        bool_or(s.parent_span_id IS NULL) OVER trace AS trace_has_root,
        bool_or(s.is_llm OR s.semantic_cache_hit IS NOT NULL) OVER trace AS trace_has_llm_work,
        (array_agg(s.start_time) FILTER (WHERE s.is_call) OVER trace)[1] AS call_start,
        (array_agg(coalesce(s.provider, '')) FILTER (WHERE s.is_call) OVER trace)[1] AS call_provider,
        (array_agg({_MODEL.format(a="s")}) FILTER (WHERE s.is_call) OVER trace)[1] AS call_model,
        (array_agg(coalesce(s.service_name, '')) FILTER (WHERE s.is_call) OVER trace)[1] AS call_service
    FROM (
        SELECT s.*, s.is_llm AND NOT coalesce(s.parent_span_id = ANY(s.llm_span_ids), false) AS is_call
        FROM (
            SELECT {_SPAN_COLUMNS}, {fallback_feature_sql("s")} AS fallback_feature,
                array_agg(s.span_id) FILTER (WHERE s.is_llm) OVER trace AS llm_span_ids,
                row_number() OVER trace AS trace_rank
            FROM {traces} AS t
            JOIN telemetry_span AS s ON s.trace_id = t.trace_id AND s.project_id = t.project_id
            WHERE {_window("s")}
            WINDOW {_TRACE_WINDOW}
        ) AS s
    ) AS s
    WINDOW {_TRACE_WINDOW}"""


# The traces with a span in the range. A subquery, not a CTE: the planner then knows the
# pairs are distinct and how many there are, and hashes them (not the spans) in a hash join.
_TOUCHED = """(
            SELECT DISTINCT s.project_id, s.trace_id
            FROM telemetry_span AS s
            WHERE s.project_id = ANY(%(project_ids)s::bigint[])
              AND s.start_time >= %(start)s AND s.start_time < %(end)s
        )"""


def _bucket(expression: str) -> str:
    return BUCKET_SQL.format(x=f"({expression})")


_STATUS_ERROR_SQL = str(_STATUS_ERROR)


def _task_fact_sql(alias: str) -> str:
    """A task's fact columns from its root span's row `alias` (docs/metrics.md, Task): the
    hour of its root, the trace's tenant and feature, the first call's provider, model and
    service (the root's own when the task made no call)."""
    has_call = f"{alias}.call_start IS NOT NULL"
    return f"""
        {alias}.project_id, date_trunc('hour', {alias}.start_time, 'UTC') AS bucket,
        coalesce({alias}.trace_tenant, '') AS tenant,
        coalesce({alias}.trace_feature, {alias}.fallback_feature, '') AS feature,
        CASE WHEN {has_call} THEN {alias}.call_provider ELSE coalesce({alias}.provider, '') END AS provider,
        CASE WHEN {has_call} THEN {alias}.call_model ELSE {_MODEL.format(a=alias)} END AS model,
        CASE WHEN {has_call} THEN {alias}.call_service ELSE coalesce({alias}.service_name, '') END AS service,
        false AS is_call, NULL::text AS error_key, false AS retried, false AS tokens_known, false AS tokens_unknown,
        NULL::int AS input_tokens, NULL::int AS cache_read_tokens, NULL::int AS cache_write_tokens,
        NULL::int AS output_tokens, NULL::int AS reasoning_tokens, NULL::numeric AS cost_usd,
        false AS cost_unknown, NULL::numeric AS cache_savings_usd, NULL::boolean AS semantic_cache_hit,
        true AS is_task, {alias}.status_code <> {_STATUS_ERROR} AS task_succeeded,
        NULL::int AS generation_tokens, NULL::float8 AS generation_ms,
        {", ".join(f"NULL::int AS {name}_idx" for name in DISTRIBUTIONS)}"""


def rollup_rows_sql(grouping_sets: Sequence[int] = GROUPING_SETS) -> str:
    """The SELECT of RollupHour rows for spans of %(project_ids)s in [%(start)s, %(end)s);
    its parameters come from rollup_params()."""
    model = _MODEL.format(a="s")
    is_error = (
        f"(s.status_code = {_STATUS_ERROR} OR nullif(s.error_type, '') IS NOT NULL "
        "OR 'abort' = ANY(s.finish_reasons))"
    )
    tokens_known = "(s.input_tokens IS NOT NULL AND s.output_tokens IS NOT NULL)"
    has_generation = "(s.ttft_ms IS NOT NULL AND s.output_tokens IS NOT NULL)"
    distributions = {
        "e2e_ms": "CASE WHEN s.is_call THEN s.duration_ms END",
        "ttft_ms": "CASE WHEN s.is_call THEN s.ttft_ms END",
        "tpot_ms": "CASE WHEN s.is_call AND s.output_tokens >= 2 "
        "THEN (s.duration_ms - s.ttft_ms) / (s.output_tokens - 1) END",
        "queue_ms": "CASE WHEN s.is_llm THEN s.queue_ms END",
        "output_tokens": "CASE WHEN s.is_call THEN s.output_tokens::float8 END",
    }
    assert tuple(distributions) == DISTRIBUTIONS
    distribution_columns = ",\n        ".join(f"{_bucket(expr)} AS {name}_idx" for name, expr in distributions.items())
    distribution_aggregates = ",\n        ".join(
        f"array_agg(f.{name}_idx) FILTER (WHERE f.{name}_idx IS NOT NULL) AS {name}_all" for name in DISTRIBUTIONS
    )
    # Second level of the distributions, in one subquery per row for all five: each group's
    # bucket indexes become sorted (index, count) pairs.
    unnests = "\n            UNION ALL ".join(
        f"SELECT {number} AS d, unnest(g.{name}_all) AS i" for number, name in enumerate(DISTRIBUTIONS)
    )
    compacted = ",\n        ".join(
        f"coalesce(array_agg(p.i ORDER BY p.i) FILTER (WHERE p.d = {number}), '{{}}') AS {name}_idx, "
        f"coalesce(array_agg(p.n ORDER BY p.i) FILTER (WHERE p.d = {number}), '{{}}') AS {name}_cnt"
        for number, name in enumerate(DISTRIBUTIONS)
    )
    distribution_laterals = f"""CROSS JOIN LATERAL (
    SELECT {compacted}
    FROM (SELECT u.d, u.i, count(*)::int AS n FROM (
            {unnests}
        ) AS u GROUP BY u.d, u.i) AS p
) AS sketch"""
    distribution_outputs = ", ".join(f"sketch.{name}_idx, sketch.{name}_cnt" for name in DISTRIBUTIONS)
    set_unnests = "\n        UNION ALL ".join(
        f"SELECT g.gid, {number} AS d, unnest(g.{name}_all) AS i FROM grouped AS g"
        for number, name in enumerate(DISTRIBUTIONS)
    )
    set_compacted = ",\n        ".join(
        f"array_agg(p.i ORDER BY p.i) FILTER (WHERE p.d = {number}) AS {name}_idx, "
        f"array_agg(p.n ORDER BY p.i) FILTER (WHERE p.d = {number}) AS {name}_cnt"
        for number, name in enumerate(DISTRIBUTIONS)
    )
    set_outputs = ", ".join(
        f"coalesce(sketch.{name}_idx, '{{}}') AS {name}_idx, coalesce(sketch.{name}_cnt, '{{}}') AS {name}_cnt"
        for name in DISTRIBUTIONS
    )
    if SET_BASED:
        distribution_outputs = set_outputs
        distribution_laterals = f"""LEFT JOIN (
    SELECT p.gid, {set_compacted}
    FROM (
        SELECT u.gid, u.d, u.i, count(*)::int AS n
        FROM (
        {set_unnests}
        ) AS u
        GROUP BY u.gid, u.d, u.i
    ) AS p
    GROUP BY p.gid
) AS sketch ON sketch.gid = g.gid"""
    dims = ", ".join(f"g.{name}" for name in DIMENSIONS)
    root_order = "ORDER BY NOT r.trace_has_root, r.start_time, r.trace_id"
    call_order = "ORDER BY r.call_start, r.trace_id) FILTER (WHERE r.call_start IS NOT NULL"

    return f"""
WITH spans AS MATERIALIZED (
    {_traced_spans_sql(_TOUCHED)}
), task_traces AS (
    -- Every trace in the window that carries one of the task ids the range's traces carry
    -- (an agent's earlier or later steps, and those traces themselves): a task is counted
    -- in the hour of its root, which may lie in any of them.
    SELECT DISTINCT p.project_id, p.trace_id
    FROM (SELECT DISTINCT project_id, task_id FROM spans WHERE task_id IS NOT NULL) AS k
    JOIN telemetry_span AS p ON p.project_id = k.project_id AND p.task_id = k.task_id
    WHERE p.task_id IS NOT NULL AND {_window("p")}
), task_roots AS (
    -- The root span of each of those traces.
    SELECT * FROM ({_traced_spans_sql("task_traces")}) AS task_spans
    WHERE trace_rank = 1 AND trace_task_id IS NOT NULL
), id_tasks AS (
    -- A task id's root is the earliest root span of its traces (else their earliest span);
    -- its first call the earliest first call of any of them.
    SELECT r.project_id,
        (array_agg(r.start_time {root_order}))[1] AS start_time,
        (array_agg(r.status_code {root_order}))[1] AS status_code,
        (array_agg(r.trace_tenant {root_order}))[1] AS trace_tenant,
        (array_agg(r.trace_feature {root_order}))[1] AS trace_feature,
        (array_agg(r.fallback_feature {root_order}))[1] AS fallback_feature,
        (array_agg(r.provider {root_order}))[1] AS provider,
        (array_agg(r.request_model {root_order}))[1] AS request_model,
        (array_agg(r.response_model {root_order}))[1] AS response_model,
        (array_agg(r.service_name {root_order}))[1] AS service_name,
        min(r.call_start) AS call_start,
        (array_agg(r.call_provider {call_order}))[1] AS call_provider,
        (array_agg(r.call_model {call_order}))[1] AS call_model,
        (array_agg(r.call_service {call_order}))[1] AS call_service,
        bool_or(r.trace_has_llm_work) AS trace_has_llm_work
    FROM task_roots AS r
    GROUP BY r.project_id, r.trace_task_id
), facts AS (
    -- Calls, semantic-cache lookups and LLM spans with a queue time that start in the range,
    -- with their attributed dimensions ...
    SELECT s.project_id, date_trunc('hour', s.start_time, 'UTC') AS bucket,
        coalesce(s.tenant, s.trace_tenant, '') AS tenant,
        coalesce(s.feature, s.trace_feature, s.fallback_feature, '') AS feature,
        coalesce(s.provider, '') AS provider, {model} AS model, coalesce(s.service_name, '') AS service,
        s.is_call,
        CASE WHEN s.is_call AND {is_error} THEN coalesce(nullif(s.error_type, ''), 'error') END AS error_key,
        s.is_call AND s.retry_attempt > 0 AS retried,
        s.is_call AND {tokens_known} AS tokens_known,
        s.is_call AND NOT {tokens_known} AS tokens_unknown,
        s.input_tokens, s.cache_read_tokens, s.cache_write_tokens, s.output_tokens, s.reasoning_tokens,
        CASE WHEN s.is_call THEN s.cost_usd END AS cost_usd,
        s.is_call AND s.cost_usd IS NULL AS cost_unknown,
        CASE WHEN s.is_call AND s.cache_read_tokens > 0 AND s.price_id IS NOT NULL THEN (
            SELECT s.cache_read_tokens * (pr.input_per_mtok - coalesce(pr.cached_input_per_mtok, pr.input_per_mtok))
                / 1000000
            FROM pricing_price AS pr WHERE pr.id = s.price_id
        ) END AS cache_savings_usd,
        s.semantic_cache_hit,
        false AS is_task, false AS task_succeeded,
        CASE WHEN s.is_call AND {has_generation} THEN s.output_tokens END AS generation_tokens,
        CASE WHEN s.is_call AND {has_generation} THEN s.duration_ms - s.ttft_ms END AS generation_ms,
        {distribution_columns}
    FROM spans AS s
    WHERE s.start_time >= %(start)s AND s.start_time < %(end)s
      AND (s.is_call OR s.semantic_cache_hit IS NOT NULL OR (s.is_llm AND s.queue_ms IS NOT NULL))
    UNION ALL
    -- ... and the tasks whose root starts in the range: a trace (its root span) ...
    SELECT {_task_fact_sql("s")}
    FROM spans AS s
    WHERE s.trace_rank = 1 AND s.trace_task_id IS NULL AND s.trace_has_llm_work
      AND s.start_time >= %(start)s AND s.start_time < %(end)s
    UNION ALL
    -- ... or the traces of a task id.
    SELECT {_task_fact_sql("s")}
    FROM id_tasks AS s
    WHERE s.trace_has_llm_work AND s.start_time >= %(start)s AND s.start_time < %(end)s
), grouped AS {"MATERIALIZED" if SET_BASED else ""} (
    SELECT {"row_number() OVER () AS gid," if SET_BASED else ""} f.project_id, f.bucket, {_GROUPING_MASK} AS grouping, f.tenant, f.feature, f.provider, f.model, f.service,
        count(*) FILTER (WHERE f.is_call) AS requests,
        count(f.error_key) AS errors,
        array_agg(f.error_key) FILTER (WHERE f.error_key IS NOT NULL) AS error_keys,
        count(*) FILTER (WHERE f.retried) AS retries,
        sum(f.input_tokens) FILTER (WHERE f.tokens_known) AS input_tokens,
        sum(f.cache_read_tokens) FILTER (WHERE f.tokens_known) AS cache_read_tokens,
        sum(f.cache_write_tokens) FILTER (WHERE f.tokens_known) AS cache_write_tokens,
        sum(f.output_tokens) FILTER (WHERE f.tokens_known) AS output_tokens,
        sum(f.reasoning_tokens) FILTER (WHERE f.tokens_known) AS reasoning_tokens,
        count(*) FILTER (WHERE f.tokens_unknown) AS tokens_unknown,
        sum(f.cost_usd) AS cost_usd,
        count(*) FILTER (WHERE f.cost_unknown) AS cost_unknown,
        sum(f.cache_savings_usd) AS cache_savings_usd,
        count(f.semantic_cache_hit) AS semantic_cache_lookups,
        count(*) FILTER (WHERE f.semantic_cache_hit) AS semantic_cache_hits,
        count(*) FILTER (WHERE f.is_task) AS tasks,
        count(*) FILTER (WHERE f.task_succeeded) AS successful_tasks,
        sum(f.generation_tokens) AS generation_tokens,
        sum(f.generation_ms) AS generation_ms,
        {distribution_aggregates}
    FROM facts AS f
    GROUP BY f.project_id, f.bucket, GROUPING SETS ({_grouping_sets_sql(grouping_sets)})
)
SELECT g.project_id, g.bucket, g.grouping, {dims},
    g.requests::int AS requests, g.errors::int AS errors,
    CASE WHEN g.error_keys IS NULL THEN '{{}}'::jsonb ELSE (
        SELECT jsonb_object_agg(e.error_key, e.n)
        FROM (SELECT k AS error_key, count(*) AS n FROM unnest(g.error_keys) AS k GROUP BY k) AS e
    ) END AS errors_by_type,
    g.retries::int AS retries,
    coalesce(g.input_tokens, 0)::bigint AS input_tokens,
    coalesce(g.cache_read_tokens, 0)::bigint AS cache_read_tokens,
    coalesce(g.cache_write_tokens, 0)::bigint AS cache_write_tokens,
    coalesce(g.output_tokens, 0)::bigint AS output_tokens,
    coalesce(g.reasoning_tokens, 0)::bigint AS reasoning_tokens,
    g.tokens_unknown::int AS tokens_unknown,
    coalesce(g.cost_usd, 0) AS cost_usd,
    g.cost_unknown::int AS cost_unknown,
    coalesce(g.cache_savings_usd, 0) AS cache_savings_usd,
    g.semantic_cache_lookups::int AS semantic_cache_lookups,
    g.semantic_cache_hits::int AS semantic_cache_hits,
    g.tasks::int AS tasks, g.successful_tasks::int AS successful_tasks,
    coalesce(g.generation_tokens, 0)::bigint AS generation_tokens,
    coalesce(g.generation_ms, 0)::float8 AS generation_ms,
    {distribution_outputs}
FROM grouped AS g
{distribution_laterals}
"""
