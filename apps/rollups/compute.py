"""The SQL that turns raw spans into RollupHour rows: docs/metrics.md, implemented once.

rollup_rows_sql() returns one SELECT whose parameters come from rollup_params(project_ids,
start, end): %(project_ids)s (bigint[]), %(start)s and %(end)s (timestamptz, any range,
hour-aligned or not), and the attribution window's bounds %(window_start)s/%(window_end)s.
It yields rows whose columns are exactly ROLLUP_COLUMNS, RollupHour's own names: one per
(project, UTC hour, grouping set, dimension values). The runner INSERTs them for whole hours;
the metrics query layer runs the same SELECT over the still-open edge of a range.

Only spans that start in [start, end) are counted. Their traces are read in a wider window,
[start - ATTRIBUTION_WINDOW, end + ATTRIBUTION_WINDOW), to find LLM parents and duplicates (one
provider call is one call: docs/metrics.md, "Call"), the trace's tenant, feature and task id, and a task's root
and first call; a parent, root or other step of a task further away is not seen
(docs/rollups.md, "Attribution window").

The plan it is written for, checked with EXPLAIN ANALYZE on 2M spans over 30 days
(bench/rollup.py prints it for one hour; tests/rollups/test_plan.py asserts its shape):

  touched   (a subquery) the traces with a span in the range: the range's rows of its one or
            two day partitions (a Bitmap Heap Scan on the BRIN index telemetry_span_start_brin
            for an hour, a Seq Scan for a day), HashAggregate on (project, trace).
  spans     every span of those traces in the window, each with its trace's context. For a
            short range, a Nested Loop over the traces with an Index Scan of each window
            partition's primary key (prefix trace_id): a few thousand probes instead of 49
            hours of spans. For a day or more (bulk=True), a Hash Join that hashes the traces
            and probes with one Seq Scan of each window partition. Then one Sort by (project,
            trace, root first, start) feeds two WindowAggs (the second reuses the order; it
            buffers only the columns needed above it). Materialized: read by the facts and
            the tasks.
            Between the two levels, a call candidate of a trace that can hold two spans of one
            call (LLM spans of two scopes, or a response id seen twice) reads its trace again by
            the primary key to find them (_duplicates_sql); every other span skips it.
  task_traces  the traces of the task ids those traces carry, by the partial index
            telemetry_span_task: nothing is read when no span carries observatory.task.id.
  facts     calls, cache lookups and queue times of the range, and tasks. A trace's task
            rides on its first call's row when both have the same hour and dimensions (most
            do): a task row of its own would go through every grouping set again.
  grouped   one pass over the facts for every grouping set: a GroupAggregate over three sorts
            of the facts (each serves the grouping sets that are prefixes of its order).
            Sorting beats hashing here (measured): the aggregates hold arrays. The
            distributions leave it as unsorted arrays of bucket indexes, the first level of a
            two-level aggregation.
  final     the second level: per row and distribution, a subquery counts the indexes and
            returns them sorted; an array of at most one index,
            most of the finest grouping set's, needs none.

Measured per day of the bench's traffic, in CPU time of the one backend (bench/rollup.py;
the rollup's cost grows with spans and with rollup rows, about 0.3 rows a span at 2M spans
over 30 days and 0.1 at 10M):

  2M spans / 30 days: 67k spans and 22k rows a day: the statement ~1.0 s (spans ~0.4, the
      grouping sets ~0.25, the second level ~0.3), inserting the rows ~0.25 s.
  10M spans / 30 days: 333k spans and 34k rows a day: the statement ~4.4 s (spans ~1.9),
      inserting ~0.35 s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from apps.rollups.models import ALL_DIMS, COUNT_COLUMNS, DIM_BITS, DIMENSIONS, DISTRIBUTIONS, GROUPING_SETS
from apps.rollups.sketch import BUCKET_SQL

# How far around the rolled-up range a trace's other spans are looked for.
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
    *COUNT_COLUMNS,
    "empty_answers",
    "refused_answers",
    "validated_outputs",
    "invalid_outputs",
    *(f"{name}_{part}" for name in DISTRIBUTIONS for part in ("idx", "cnt")),
)

_STATUS_ERROR = 2  # OTLP Status.StatusCode ERROR (collectors.records.STATUS_ERROR)


def rollup_params(project_ids: Iterable[int], start: datetime, end: datetime) -> dict[str, Any]:
    """The parameters of rollup_rows_sql() for spans of `project_ids` in [start, end).

    The window's bounds are parameters, not `%(start)s - interval ...` in the SQL: constants
    let the planner prune the day partitions at plan time and cost the trace look-ups on the
    few partitions it will read.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("rollup_params needs aware datetimes")
    return {
        "project_ids": list(project_ids),
        "start": start,
        "end": end,
        "window_start": start - ATTRIBUTION_WINDOW,
        "window_end": end + ATTRIBUTION_WINDOW,
    }


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


def _grouping_mask_sql(grouping_sets: Sequence[int]) -> str:
    """The row's grouping bitmask (DIM_BITS of the dimensions it is grouped by). GROUPING(x)
    is 1 when the row is not grouped by x; it may only name columns some grouping set has."""
    used = [name for name in DIMENSIONS if any(mask & DIM_BITS[name] for mask in grouping_sets)]
    if not used:
        return "0::smallint"
    return "(" + " + ".join(f"{DIM_BITS[name]} * (1 - GROUPING({name}))" for name in used) + ")::smallint"


# The UTC hour a moment falls in: date_trunc('hour', x) in UTC, as plain arithmetic on the
# timestamp (date_trunc with a zone name looks the zone up for every row).
HOUR_OF_SQL = "date_bin('1 hour', {x}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"


def _bucket(expression: str) -> str:
    return BUCKET_SQL.format(x=f"({expression})")


# A trace's spans, root first (a span without a parent), then by start: the order in which
# they give the trace its tenant, feature, task id, root and first call. Every frame is the
# whole trace, so each window aggregate is computed once per trace.
_TRACE_WINDOW = """trace AS (
        PARTITION BY {a}.project_id, {a}.trace_id ORDER BY {child}, {a}.start_time, {a}.span_id
        ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"""
# A task's fact rides on its trace's first call's row (saving a row through every grouping
# set) when both rows have the same hour and dimensions: the call's own tenant and feature,
# if it has any, are the trace's, and without a trace feature both spans fall back alike.
_CALL_FITS_TASK = """(
    (l.own_tenant IS NULL OR l.own_tenant = l.trace_tenant)
    AND (l.own_feature IS NULL OR l.own_feature = l.trace_feature)
    AND (l.trace_feature IS NOT NULL OR coalesce(l.fallback_feature, '') = coalesce(l.root_fallback_feature, ''))
    AND {hour_of_call} = {hour_of_root})"""

# docs/metrics.md, "Call". An LLM span nested in another LLM span (its parent is one) is
# part of its parent's call. The others are call candidates; two of them are the same call
# when SAME_CALL_SQL holds for the pair, and such a group is counted once, on its richest span.
NESTED_SQL = "coalesce({x}.parent_span_id = ANY(l.llm_span_ids), false)"

# Two LLM spans `o` and `l` of one trace are one provider call seen twice: the same non-empty
# response id; or, when either lacks one, the overlap rule (two instrumentations of one call:
# different scopes, since one instrumentation never emits two spans for one call; siblings or
# one nested in the other; the same provider when both say; overlapping by at least
# OVERLAP_SHARE of the shorter span; and output-token counts that agree when both are known).
# Parallel calls of one instrumentation (asyncio.gather) share a scope: never paired.
# `l` is a row of the traced spans (response_id and provider normalised, end_time), `o` a
# telemetry_span row.
OVERLAP_SHARE = 0.8
SAME_CALL_SQL = f"""(
    nullif(o.response_id, '') = l.response_id
    OR ((nullif(o.response_id, '') IS NULL OR l.response_id IS NULL)
        AND coalesce(o.scope_name, '') <> l.scope_name
        AND (o.parent_span_id = l.parent_span_id OR (o.parent_span_id IS NULL AND l.parent_span_id IS NULL)
             OR o.span_id = l.parent_span_id OR o.parent_span_id = l.span_id)
        AND (nullif(o.provider, '') IS NULL OR l.provider = '' OR o.provider = l.provider)
        AND least(o.end_time, l.end_time) - greatest(o.start_time, l.start_time)
            >= least(o.end_time - o.start_time, l.end_time - l.start_time) * {OVERLAP_SHARE}
        AND (o.output_tokens IS NULL OR l.output_tokens IS NULL OR o.output_tokens = l.output_tokens)))"""

# A trace with more LLM spans than this is not searched for duplicate pairs (the search is
# quadratic in a trace's LLM spans); nesting still applies. Real traces have a handful.
MAX_PAIRED_LLM_SPANS = 1000

# How much a span knows of its call: the call is represented by its richest span.
RICHNESS_SQL = """((o.input_tokens IS NOT NULL)::int + (o.output_tokens IS NOT NULL)::int
    + (o.cache_read_tokens IS NOT NULL)::int + (o.cache_write_tokens IS NOT NULL)::int
    + (o.reasoning_tokens IS NOT NULL)::int + (o.ttft_ms IS NOT NULL)::int
    + (nullif(o.response_model, '') IS NOT NULL)::int + (o.cost_usd IS NOT NULL)::int)"""
_BEST_FIRST = f"ORDER BY {RICHNESS_SQL} DESC, o.start_time, o.span_id"
# A field unknown on the call's span is taken from a duplicate only where it measures the
# same thing: a span of the same kind (a vLLM server span under a client span times the
# server's part of the call, not the client's) and of the same provider when both say.
_FILLS_FROM = "o.kind = l.kind AND (nullif(o.provider, '') IS NULL OR l.provider = '' OR o.provider = l.provider)"
# Fields of the call's span that its duplicates may fill: name -> the telemetry_span expression.
_FILLED = {
    "input_tokens": "o.input_tokens",
    "output_tokens": "o.output_tokens",
    "cache_read_tokens": "o.cache_read_tokens",
    "cache_write_tokens": "o.cache_write_tokens",
    "reasoning_tokens": "o.reasoning_tokens",
    "ttft_ms": "o.ttft_ms",
    "retry_attempt": "o.retry_attempt",
    "model": "coalesce(nullif(o.request_model, ''), nullif(o.response_model, ''))",
}


def _is_error_sql(alias: str) -> str:
    return (
        f"{alias}.status_code = {_STATUS_ERROR} OR nullif({alias}.error_type, '') IS NOT NULL"
        f" OR 'abort' = ANY({alias}.finish_reasons)"
    )


def _error_key_sql(alias: str) -> str:
    return f"CASE WHEN {_is_error_sql(alias)} THEN coalesce(nullif({alias}.error_type, ''), 'error') END"


# The SQL type of each value _duplicates_sql returns (jsonb keeps numeric exact).
_DUPLICATE_TYPES = {
    "call_span_id": "bigint", "input_tokens": "int", "output_tokens": "int", "cache_read_tokens": "int",
    "cache_write_tokens": "int", "reasoning_tokens": "int", "ttft_ms": "float8", "retry_attempt": "int",
    "model": "text", "cost_usd": "numeric", "price_id": "bigint", "error_key": "text",
}  # fmt: skip


def _duplicate(name: str) -> str:
    """A value of the call that candidate `l` is part of, from its `dup` column (NULL when the
    trace holds no pair)."""
    return f"(l.dup ->> '{name}')::{_DUPLICATE_TYPES[name]}"


def _duplicates_sql() -> str:
    """The `dup` column of a call candidate `l` (an LLM span not nested in one): over the
    trace's LLM spans that are the same call (itself included), the call's span
    (`call_span_id`, the richest candidate) and the best known value of each fillable field,
    as one jsonb object. Only for candidates of traces that can hold a pair (LLM spans from
    two scopes, or a response id seen twice): the CASE evaluates the subquery for them alone
    (a LATERAL join would rescan a node per span: measured 2x slower on the bench), which
    reads the trace again by the primary key's prefix, as the spans were read."""
    gate = (
        f"l.is_llm AND NOT {NESTED_SQL.format(x='l')} AND l.trace_llm_spans BETWEEN 2 AND {MAX_PAIRED_LLM_SPANS}"
        " AND (l.llm_scope_min <> l.llm_scope_max"
        " OR cardinality(array_positions(l.llm_response_ids, l.response_id)) > 1)"
    )

    def best(expression: str, where: str) -> str:
        return f"(array_agg({expression} {_BEST_FIRST}) FILTER (WHERE {where}))[1]"

    values = {
        "call_span_id": best("o.span_id", "NOT " + NESTED_SQL.format(x="o")),
        **{name: best(expr, f"{expr} IS NOT NULL AND {_FILLS_FROM}") for name, expr in _FILLED.items()},
        "cost_usd": best("o.cost_usd", f"o.cost_usd IS NOT NULL AND {_FILLS_FROM}"),
        "price_id": best("o.price_id", f"o.cost_usd IS NOT NULL AND {_FILLS_FROM}"),
        "error_key": best(_error_key_sql("o"), _is_error_sql("o")),
    }
    assert set(values) == set(_DUPLICATE_TYPES)
    pairs = ",\n                ".join(f"'{name}', {expression}" for name, expression in values.items())
    return f"""CASE WHEN {gate} THEN (
            SELECT jsonb_build_object(
                {pairs})
            FROM telemetry_span AS o
            WHERE o.trace_id = l.trace_id AND o.project_id = l.project_id AND o.is_llm
              AND o.start_time >= %(window_start)s AND o.start_time < %(window_end)s
              AND (o.span_id = l.span_id OR {SAME_CALL_SQL})
        ) END"""


def _first(expression: str, where: str) -> str:
    """`expression` of the trace's first span (in window order) for which `where` holds."""
    return f"(array_agg({expression}) FILTER (WHERE {where}) OVER trace)[1]"


# Every span of a trace in the window. Trace by trace through the primary key's prefix
# (trace_id): OFFSET 0 keeps the planner from flattening this into a join that it would hash
# over every span of the window (49 hours of spans to find one hour's traces; its cost model
# overrates index probes on cached pages).
_SPANS_BY_TRACE = """CROSS JOIN LATERAL (
            SELECT * FROM telemetry_span AS s
            WHERE s.trace_id = t.trace_id AND s.project_id = t.project_id
              AND s.start_time >= %(window_start)s AND s.start_time < %(window_end)s
            OFFSET 0
        ) AS s"""
# For a day or more, a plain join: the planner hashes the traces and probes with one scan of
# each partition of the window, cheaper than a probe per trace when the range is most of it.
_SPANS_BY_SCAN = """JOIN telemetry_span AS s ON s.trace_id = t.trace_id AND s.project_id = t.project_id
            AND s.start_time >= %(window_start)s AND s.start_time < %(window_end)s"""


# The columns of a traced span that the levels above pass on; those in _FILLED, cost_usd,
# price_id and error_key are the call's (filled from its duplicates) on a call's row.
_PASSED_ON = (
    "project_id", "trace_id", "start_time", "trace_rank", "trace_has_root", "trace_has_llm_work", "trace_task_id",
    "status_code", "provider", "model", "service", "is_llm", "error_key", "retry_attempt", "input_tokens",
    "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "price_id",
    "semantic_cache_hit", "queue_ms", "ttft_ms", "duration_ms", "root_start", "root_status",
    "finish_reason", "response_model", "system_fingerprint", "refused", "output_valid",
)  # fmt: skip


def _call_value(name: str) -> str:
    """A passed-on column at the level that decides calls: the span's own value, else (a
    call's fields) the best known value of its duplicates."""
    if name in _FILLED or name == "error_key":
        own = f"nullif(l.{name}, '')" if name == "model" else f"l.{name}"
        fallback = "''" if name == "model" else "NULL"
        return f"coalesce({own}, {_duplicate(name)}, {fallback}) AS {name}"
    if name == "cost_usd":
        return f"coalesce(l.cost_usd, {_duplicate('cost_usd')}) AS cost_usd"
    if name == "price_id":
        return (
            f"CASE WHEN l.cost_usd IS NULL AND {_duplicate('cost_usd')} IS NOT NULL "
            f"THEN {_duplicate('price_id')} ELSE l.price_id END AS price_id"
        )
    return f"l.{name}"


def traced_spans_sql(traces: str, *, bulk: bool = False, detail: bool = False, capped: bool = False) -> str:
    """Every span in the window of the traces in `traces` (project_id, trace_id), as one
    compact row with what the rollup needs: its attributed dimensions, whether it is a call
    (docs/metrics.md: counted once however many instrumentations saw it), its error type,
    its rank in the trace (1 = the root), and its trace's task id and first call. Two window
    levels over one sort: the first collects the trace's LLM spans and attribution, the
    second needs is_call for the first call.

    Parameters: %(window_start)s, %(window_end)s. `detail` adds span_id, parent_span_id and
    same_call_as (for an LLM span that is not a call: the span of the call it is part of) for
    the traces explorer, which also reads at most %(spans_per_trace)s spans of a trace, the
    earliest (`capped`). This is the one definition of a call: rollups, the query layer's
    open edge and the traces explorer all read it.
    """
    if capped:
        spans_of_traces = _SPANS_BY_TRACE.replace("OFFSET 0", "ORDER BY s.start_time LIMIT %(spans_per_trace)s")
    else:
        spans_of_traces = _SPANS_BY_SCAN if bulk else _SPANS_BY_TRACE
    fits = _CALL_FITS_TASK.format(
        hour_of_call=HOUR_OF_SQL.format(x="l.start_time"), hour_of_root=HOUR_OF_SQL.format(x="l.root_start")
    )
    passed_on = ", ".join(f"l.{name}" for name in _PASSED_ON)
    call_values = ",\n            ".join(_call_value(name) for name in _PASSED_ON)
    nested = NESTED_SQL.format(x="l")
    call_span = _duplicate("call_span_id")
    is_call = f"(l.is_llm AND NOT {nested} AND coalesce({call_span} = l.span_id, true))"
    detail_columns = ""
    detail_below = ""
    if detail:
        detail_columns = ", l.span_id, l.parent_span_id, l.same_call_as"
        detail_below = f""", l.parent_span_id,
            CASE WHEN l.is_llm AND {nested} THEN l.parent_span_id
                 WHEN {call_span} <> l.span_id THEN {call_span} END AS same_call_as"""
    return f"""
    SELECT {passed_on}, l.tenant, l.feature, l.is_call,
        {_first("l.start_time", "l.is_call")} AS call_start,
        -- The first call's provider, model and service: {{{{provider, model, service}}}}.
        (array_agg(ARRAY[l.provider, l.model, l.service]) FILTER (WHERE l.is_call) OVER trace)[1:1] AS call_dims,
        {_first("l.fits_task", "l.is_call")} AS first_call_fits_task,
        l.is_call AND l.span_id = {_first("l.span_id", "l.is_call")} AS is_first_call{detail_columns}
    FROM (
        -- Each span's attribution, whether it is a call (and a call's fields, filled from its
        -- duplicates), whether its row could carry its trace's task; and only the columns
        -- needed above, so that the window level above buffers narrower rows.
        SELECT {call_values}, l.span_id, l.is_child{detail_below},
            coalesce(l.own_tenant, l.trace_tenant, '') AS tenant,
            coalesce(l.own_feature, l.trace_feature, l.fallback_feature, '') AS feature,
            {is_call} AS is_call, {fits} AS fits_task
        FROM (
        SELECT l.*, {_duplicates_sql()} AS dup
        FROM (
        SELECT s.project_id, s.trace_id, s.span_id, s.parent_span_id, s.start_time, s.end_time, s.duration_ms,
            s.status_code, s.kind, s.is_llm, nullif(s.tenant, '') AS own_tenant, nullif(s.feature, '') AS own_feature,
            {fallback_feature_sql("s")} AS fallback_feature, coalesce(s.provider, '') AS provider,
            coalesce(nullif(s.request_model, ''), nullif(s.response_model, ''), '') AS model,
            coalesce(s.service_name, '') AS service, coalesce(s.scope_name, '') AS scope_name,
            nullif(s.response_id, '') AS response_id,
            {_error_key_sql("s")} AS error_key,
            s.retry_attempt, s.input_tokens, s.cache_read_tokens, s.cache_write_tokens, s.output_tokens,
            s.reasoning_tokens, s.cost_usd, s.semantic_cache_hit, s.queue_ms, s.ttft_ms,
            s.price_id,
            -- What the drift detector counts per call (COUNT_COLUMNS and the answer counts).
            s.finish_reasons[1] AS finish_reason, nullif(s.response_model, '') AS response_model,
            nullif(s.system_fingerprint, '') AS system_fingerprint, s.refused, s.output_valid,
            s.parent_span_id IS NOT NULL AS is_child,
            row_number() OVER trace AS trace_rank,
            first_value(s.start_time) OVER trace AS root_start,
            first_value(s.status_code) OVER trace AS root_status,
            first_value({fallback_feature_sql("s")}) OVER trace AS root_fallback_feature,
            array_agg(s.span_id) FILTER (WHERE s.is_llm) OVER trace AS llm_span_ids,
            -- Whether the trace can hold two spans of one call (_duplicates_sql's gate).
            count(*) FILTER (WHERE s.is_llm) OVER trace AS trace_llm_spans,
            min(coalesce(s.scope_name, '')) FILTER (WHERE s.is_llm) OVER trace AS llm_scope_min,
            max(coalesce(s.scope_name, '')) FILTER (WHERE s.is_llm) OVER trace AS llm_scope_max,
            array_agg(s.response_id) FILTER (WHERE s.is_llm AND s.response_id <> '') OVER trace AS llm_response_ids,
            {_first("s.tenant", "s.tenant <> ''")} AS trace_tenant,
            {_first("s.feature", "s.feature <> ''")} AS trace_feature,
            {_first("s.task_id", "s.task_id <> ''")} AS trace_task_id,
            bool_or(s.parent_span_id IS NULL) OVER trace AS trace_has_root,
            bool_or(s.is_llm OR s.semantic_cache_hit IS NOT NULL) OVER trace AS trace_has_llm_work
        FROM {traces} AS t
        {spans_of_traces}
        WINDOW {_TRACE_WINDOW.format(a="s", child="s.parent_span_id IS NOT NULL")}
        ) AS l
        -- OFFSET 0: the level above reads `dup` several times; the subquery must run once.
        OFFSET 0
        ) AS l
    ) AS l
    -- The order of the level below, by its output column: no second sort.
    WINDOW {_TRACE_WINDOW.format(a="l", child="l.is_child")}"""


# The traces with a span in the range. A subquery, not a CTE: the planner then knows the
# pairs are distinct and how many there are, and hashes them (not the spans) in a hash join.
_TOUCHED = """(
            SELECT DISTINCT s.project_id, s.trace_id
            FROM telemetry_span AS s
            WHERE s.project_id = ANY(%(project_ids)s::bigint[])
              AND s.start_time >= %(start)s AND s.start_time < %(end)s
        )"""


def _task_fact_sql(alias: str) -> str:
    """A task's fact columns from its root span's row `alias` (docs/metrics.md, Task): the
    hour of its root, its trace's tenant and feature (the root's, attributed), the first
    call's provider, model and service (the root's own when the task made no call)."""
    has_call = f"{alias}.call_start IS NOT NULL"
    return f"""
        {alias}.project_id, {HOUR_OF_SQL.format(x=f"{alias}.start_time")} AS bucket, {alias}.tenant, {alias}.feature,
        CASE WHEN {has_call} THEN {alias}.call_dims[1][1] ELSE {alias}.provider END AS provider,
        CASE WHEN {has_call} THEN {alias}.call_dims[1][2] ELSE {alias}.model END AS model,
        CASE WHEN {has_call} THEN {alias}.call_dims[1][3] ELSE {alias}.service END AS service,
        false AS is_call, NULL::text AS error_key, false AS retried, false AS tokens_known, false AS tokens_unknown,
        NULL::int AS input_tokens, NULL::int AS cache_read_tokens, NULL::int AS cache_write_tokens,
        NULL::int AS output_tokens, NULL::int AS reasoning_tokens, NULL::numeric AS cost_usd,
        false AS cost_unknown, NULL::numeric AS cache_savings_usd, NULL::boolean AS semantic_cache_hit,
        true AS is_task, {alias}.status_code <> {_STATUS_ERROR} AS task_succeeded,
        NULL::int AS generation_tokens, NULL::float8 AS generation_ms,
        NULL::text AS finish_reason, NULL::text AS response_model, NULL::text AS system_fingerprint,
        false AS empty_answer, false AS refused, NULL::boolean AS output_valid,
        {", ".join(f"NULL::int AS {name}_idx" for name in DISTRIBUTIONS)}"""


# A count column (COUNT_COLUMNS) keeps at most this many distinct keys per row, the most
# frequent (ties by key), and folds the rest into OTHER_KEY; each key is cut to
# COUNT_KEY_CHARS characters. A row's JSON stays small whatever the traffic sends.
MAX_COUNT_KEYS = 50
COUNT_KEY_CHARS = 200
OTHER_KEY = "other"


def counts_json(keys: str) -> str:
    """SQL: a text[] of keys (one per call, NULL when none) as a {key: calls} jsonb object,
    capped (MAX_COUNT_KEYS, COUNT_KEY_CHARS). One key alone (most rows of the finest
    grouping set) skips the subquery."""
    pairs = f"SELECT left(k, {COUNT_KEY_CHARS}) AS k, count(*) AS n FROM unnest({keys}) AS k GROUP BY 1"
    return f"""CASE WHEN {keys} IS NULL THEN '{{}}'::jsonb
        WHEN cardinality({keys}) = 1 THEN jsonb_build_object(left({keys}[1], {COUNT_KEY_CHARS}), 1)
        ELSE {capped_counts_sql(pairs)}
    END"""


def capped_counts_sql(pairs: str) -> str:
    """SQL: a scalar subquery turning `pairs` (a SELECT of distinct keys k and counts n) into a
    jsonb object of at most MAX_COUNT_KEYS + 1 keys (the rest summed under OTHER_KEY)."""
    return f"""(SELECT jsonb_object_agg(c.k, c.n) FROM (
            SELECT CASE WHEN r.rank <= {MAX_COUNT_KEYS} THEN r.k ELSE '{OTHER_KEY}' END AS k, sum(r.n)::bigint AS n
            -- An OTHER_KEY already there (merging capped rows) ranks last: it never takes a slot.
            FROM (SELECT p.k, p.n, row_number() OVER (ORDER BY p.k = '{OTHER_KEY}', p.n DESC, p.k) AS rank
                  FROM ({pairs}) AS p) AS r
            GROUP BY 1) AS c)"""


def rollup_rows_sql(grouping_sets: Sequence[int] = GROUPING_SETS, *, bulk: bool = False) -> str:
    """The SELECT of RollupHour rows for the spans of %(project_ids)s that start in
    [%(start)s, %(end)s); its parameters come from rollup_params().

    `bulk` is for ranges of a day or more (rollup_range): the window's spans are read by
    scanning its partitions instead of trace by trace; the rows are the same.
    """
    tokens_known = "s.input_tokens IS NOT NULL AND s.output_tokens IS NOT NULL"
    # The trace's task rides on its first call's row (it starts in the range: it is a fact).
    carries_task = (
        "(s.is_first_call AND s.first_call_fits_task AND s.trace_task_id IS NULL "
        "AND s.root_start >= %(start)s AND s.root_start < %(end)s)"
    )
    has_generation = "s.ttft_ms IS NOT NULL AND s.output_tokens IS NOT NULL"
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
    distribution_arrays = ",\n        ".join(
        f"array_agg(f.{name}_idx) FILTER (WHERE f.{name}_idx IS NOT NULL) AS {name}_all" for name in DISTRIBUTIONS
    )
    # The second level of the distributions: per row and distribution, the bucket indexes
    # counted and sorted, as one array (the indexes, then their counts) that the outer SELECT
    # splits. An array of at most one index (most of the finest grouping set's) needs no
    # subquery.
    pairs = ",\n        ".join(
        f"""CASE WHEN g.{name}_all IS NULL THEN '{{}}'
            WHEN cardinality(g.{name}_all) = 1 THEN g.{name}_all || 1
            ELSE (SELECT array_agg(p.i ORDER BY p.i) || array_agg(p.n ORDER BY p.i)
                  FROM (SELECT i, count(*)::int AS n FROM unnest(g.{name}_all) AS i GROUP BY i ORDER BY i) AS p)
        END AS {name}_pair"""
        for name in DISTRIBUTIONS
    )
    distribution_outputs = ",\n    ".join(
        f"g.{name}_pair[1:cardinality(g.{name}_pair) / 2] AS {name}_idx, "
        f"g.{name}_pair[cardinality(g.{name}_pair) / 2 + 1:] AS {name}_cnt"
        for name in DISTRIBUTIONS
    )
    # A dimension no grouping set has is NULL ("all values") in every row.
    grouped_dims = ", ".join(
        f"f.{name}" if any(mask & DIM_BITS[name] for mask in grouping_sets) else f"NULL::text AS {name}"
        for name in DIMENSIONS
    )
    root_order = "ORDER BY NOT r.trace_has_root, r.start_time, r.trace_id"
    call_order = "ORDER BY r.call_start, r.trace_id) FILTER (WHERE r.call_start IS NOT NULL"

    return f"""
WITH spans AS MATERIALIZED (
    {traced_spans_sql(_TOUCHED, bulk=bulk)}
), task_traces AS (
    -- Every trace in the window whose task id is one the range's traces have (an agent's
    -- earlier or later steps, and those traces themselves): a task is counted in the hour of
    -- its root, which may lie in any of them.
    SELECT DISTINCT p.project_id, p.trace_id
    FROM (SELECT DISTINCT project_id, trace_task_id FROM spans WHERE trace_task_id IS NOT NULL) AS k
    JOIN telemetry_span AS p ON p.project_id = k.project_id AND p.task_id = k.trace_task_id
    WHERE p.task_id IS NOT NULL AND p.start_time >= %(window_start)s AND p.start_time < %(window_end)s
), id_tasks AS (
    -- A task id's root is the earliest root span of its traces (else their earliest span),
    -- its first call the earliest first call of any of them.
    SELECT r.project_id,
        (array_agg(r.start_time {root_order}))[1] AS start_time,
        (array_agg(r.status_code {root_order}))[1] AS status_code,
        (array_agg(r.tenant {root_order}))[1] AS tenant,
        (array_agg(r.feature {root_order}))[1] AS feature,
        (array_agg(r.provider {root_order}))[1] AS provider,
        (array_agg(r.model {root_order}))[1] AS model,
        (array_agg(r.service {root_order}))[1] AS service,
        min(r.call_start) AS call_start,
        ARRAY[ARRAY[{", ".join(f"(array_agg(r.call_dims[1][{n}] {call_order}))[1]" for n in (1, 2, 3))}]] AS call_dims,
        bool_or(r.trace_has_llm_work) AS trace_has_llm_work
    FROM ({traced_spans_sql("task_traces")}) AS r
    WHERE r.trace_rank = 1 AND r.trace_task_id IS NOT NULL
    GROUP BY r.project_id, r.trace_task_id
), facts AS (
    -- Calls, semantic-cache lookups and LLM spans with a queue time that start in the range ...
    SELECT s.project_id, {HOUR_OF_SQL.format(x="s.start_time")} AS bucket,
        s.tenant, s.feature, s.provider, s.model, s.service, s.is_call,
        CASE WHEN s.is_call THEN s.error_key END AS error_key,
        s.is_call AND s.retry_attempt > 0 AS retried,
        s.is_call AND {tokens_known} AS tokens_known,
        s.is_call AND NOT ({tokens_known}) AS tokens_unknown,
        s.input_tokens, s.cache_read_tokens, s.cache_write_tokens, s.output_tokens, s.reasoning_tokens,
        CASE WHEN s.is_call THEN s.cost_usd END AS cost_usd,
        s.is_call AND s.cost_usd IS NULL AS cost_unknown,
        -- What prompt caching saved: cache reads at the input rate less the cached-input rate
        -- of the call's price row.
        CASE WHEN s.is_call AND s.cache_read_tokens > 0 AND s.price_id IS NOT NULL THEN (
            SELECT s.cache_read_tokens * (pr.input_per_mtok - coalesce(pr.cached_input_per_mtok, pr.input_per_mtok))
                / 1000000
            FROM pricing_price AS pr WHERE pr.id = s.price_id
        ) END AS cache_savings_usd,
        s.semantic_cache_hit,
        {carries_task} AS is_task,
        {carries_task} AND s.root_status <> {_STATUS_ERROR} AS task_succeeded,
        CASE WHEN s.is_call AND {has_generation} THEN s.output_tokens END AS generation_tokens,
        CASE WHEN s.is_call AND {has_generation} THEN s.duration_ms - s.ttft_ms END AS generation_ms,
        -- Answers as the drift detector sees them: an empty answer is a call that did not
        -- fail and returned no output token (unknown is not empty).
        CASE WHEN s.is_call THEN s.finish_reason END AS finish_reason,
        CASE WHEN s.is_call THEN s.response_model END AS response_model,
        CASE WHEN s.is_call THEN s.system_fingerprint END AS system_fingerprint,
        s.is_call AND s.error_key IS NULL AND s.output_tokens = 0 AS empty_answer,
        s.is_call AND coalesce(s.refused, false) AS refused,
        CASE WHEN s.is_call THEN s.output_valid END AS output_valid,
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
      -- unless its first call's row carries it
      AND NOT coalesce(s.first_call_fits_task AND s.call_start >= %(start)s AND s.call_start < %(end)s, false)
    UNION ALL
    -- ... or the traces of a task id.
    SELECT {_task_fact_sql("s")}
    FROM id_tasks AS s
    WHERE s.trace_has_llm_work AND s.start_time >= %(start)s AND s.start_time < %(end)s
), grouped AS (
    SELECT f.project_id, f.bucket, {_grouping_mask_sql(grouping_sets)} AS grouping, {grouped_dims},
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
        array_agg(f.finish_reason) FILTER (WHERE f.finish_reason IS NOT NULL) AS finish_reason_keys,
        array_agg(f.response_model) FILTER (WHERE f.response_model IS NOT NULL) AS response_model_keys,
        array_agg(f.system_fingerprint) FILTER (WHERE f.system_fingerprint IS NOT NULL) AS fingerprint_keys,
        count(*) FILTER (WHERE f.empty_answer) AS empty_answers,
        count(*) FILTER (WHERE f.refused) AS refused_answers,
        count(f.output_valid) AS validated_outputs,
        count(*) FILTER (WHERE NOT f.output_valid) AS invalid_outputs,
        {distribution_arrays}
    FROM facts AS f
    GROUP BY f.project_id, f.bucket, GROUPING SETS ({_grouping_sets_sql(grouping_sets)})
)
SELECT g.project_id, g.bucket, g.grouping, {", ".join(f"g.{name}" for name in DIMENSIONS)},
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
    g.tasks::int AS tasks,
    g.successful_tasks::int AS successful_tasks,
    coalesce(g.generation_tokens, 0)::bigint AS generation_tokens,
    coalesce(g.generation_ms, 0)::float8 AS generation_ms,
    {counts_json("g.finish_reason_keys")} AS finish_reasons,
    {counts_json("g.response_model_keys")} AS response_models,
    {counts_json("g.fingerprint_keys")} AS fingerprints,
    g.empty_answers::int AS empty_answers,
    g.refused_answers::int AS refused_answers,
    g.validated_outputs::int AS validated_outputs,
    g.invalid_outputs::int AS invalid_outputs,
    {distribution_outputs}
FROM (
    -- OFFSET 0 keeps this a subquery: the SELECT above reads each pair twice, and must not
    -- compute it twice.
    SELECT g.*, {pairs}
    FROM grouped AS g
    OFFSET 0
) AS g
"""
