"""The traces explorer: find traces by their root span, then show one trace's spans.

Metrics come from the query layer; this is search, so it reads raw spans, but what it says
about calls (how many, their cost, models and errors) and who may see a span come from the
query layer's own rules (apps/rollups/compute.traced_spans_sql, docs/metrics.md): a provider
call seen by two instrumentations is one call, and a span's tenant is its own, else its
trace's.

Cost is bounded whatever the data (docs/traces.md):

- the list is one row per root span (a span without a parent) in the range, paged by a
  keyset cursor (sort key, trace id, span id), never OFFSET: page 10,000 costs what page 1 does;
- filters on the root's own columns narrow the candidates; a filter that looks inside a
  candidate's trace (tenant or feature inherited by a root without its own, provider, model,
  service) runs on at most CANDIDATE_BATCHES batches of CANDIDATE_BATCH candidates a page
  (then the page says how far it searched), and reads at most PROBE_SPANS of the trace's
  spans, those within ATTRIBUTION_WINDOW of the root (the daily partitions around it);
- calls, cost and models are worked out once per distinct trace of the page, over at most
  SPANS_PER_TRACE of its spans (the earliest); a row says when its trace had more;
- the web process's statements run under WEB_STATEMENT_TIMEOUT_MS (observatory/
  statement_timeout.py): a search that still takes too long answers 503 with a message.

Who sees what: a trace is listed (and its page shown) to a user limited to some tenants
when its root span is attributed to one of them; inside it, spans attributed to other
tenants are left out (their calls, cost and models too).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.http import QueryDict

from apps.dashboard.params import BadParameter
from apps.metrics.query import Scope
from apps.metrics.reads import snapshot
from apps.rollups.compute import ATTRIBUTION_WINDOW, traced_spans_sql

PAGE_SIZE = 50
# Sort name -> the root span's column; direction.
SORTS: dict[str, tuple[str, str]] = {
    "time": ("start_time", "DESC"),
    "oldest": ("start_time", "ASC"),
    "duration": ("duration_ms", "DESC"),
    "shortest": ("duration_ms", "ASC"),
}
STATUSES = ("ok", "error")
# Spans of one trace read to count its calls (the list) or to show it (the trace page).
SPANS_PER_TRACE = 5000
# Spans of one trace a per-root filter reads (an inherited tenant, a call's provider, ...).
PROBE_SPANS = 2000
# Candidate roots a filtered search reads per statement, and statements per page: a filter
# that looks inside traces costs a probe per candidate (about 0.07 ms warm at 10M spans), so
# a page reads at most 2,000 candidates (~0.15 s when none matches) and then says how far it
# searched instead of reading a month.
CANDIDATE_BATCH = 500
CANDIDATE_BATCHES = 4
# The moments a range may name: spans are kept from ingest, which refuses far-future ones.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_AHEAD = timedelta(days=1)


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: the sort key of the row next to it, and that row's ids."""

    key: datetime | float
    trace_id: uuid.UUID
    span_id: int
    backwards: bool = False  # the page before the row, not after it

    def encode(self) -> str:
        key = self.key.isoformat() if isinstance(self.key, datetime) else repr(self.key)
        return f"{key}_{self.trace_id.hex}_{self.span_id}"

    @classmethod
    def decode(cls, raw: str, sort: str, backwards: bool) -> Cursor:
        problem = f"cursor={raw!r} is not a position in this list; start again from the first page"
        parts = raw.split("_")
        if len(parts) != 3:
            raise BadParameter(problem)
        try:
            key: datetime | float
            if SORTS[sort][0] == "start_time":
                key = datetime.fromisoformat(parts[0])
                if key.tzinfo is None:
                    raise ValueError
            else:
                key = float(parts[0])
            trace_id = uuid.UUID(hex=parts[1])
            span_id = int(parts[2])
        except ValueError:
            raise BadParameter(problem) from None
        if not -(2**63) <= span_id < 2**63 or (isinstance(key, float) and key != key):
            raise BadParameter(problem)
        return cls(key, trace_id, span_id, backwards)


@dataclass(frozen=True)
class TraceSearch:
    start: datetime
    end: datetime
    tenants: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    status: str | None = None  # "ok" / "error"
    min_duration_ms: float | None = None
    sort: str = "time"
    cursor: Cursor | None = None


@dataclass(frozen=True)
class SearchedTo:
    """Where a search that stopped before filling its page got to."""

    start_time: datetime  # the root span of the last candidate read
    candidates: int  # how many candidate roots the page read


@dataclass
class TracePage:
    rows: list[dict[str, Any]]
    next_cursor: Cursor | None  # the page after this one, if any
    prev_cursor: Cursor | None  # the page before this one, if any
    # Set when the page read its most candidates without filling up: more may exist past it.
    searched_to: SearchedTo | None = None


def check_request(query: QueryDict) -> None:
    """What the shared page parameters let through and PostgreSQL cannot take: a NUL
    character in any parameter. (Until the shared request model of apps/metrics lands;
    then this goes.)"""
    for name, values in query.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            shown = name.replace("\x00", "\\0")
            raise BadParameter(f"parameter {shown!r} contains a NUL character, which no value can hold")


def check_range(start: datetime, end: datetime, now: datetime) -> None:
    """A range Observatory can hold spans in (and do date arithmetic around)."""
    latest = now + LATEST_AHEAD
    if start < EARLIEST or end > latest:
        raise BadParameter(
            f"the range must lie between {EARLIEST:%Y-%m-%d} and {latest:%Y-%m-%d %H:%M} UTC; "
            "no spans are kept outside it"
        )


# One batch of candidate roots: the roots in range that pass the filters on the root's own
# columns (status, duration), in list order from the cursor on, at most %(batch)s of them.
# For the time sorts the partial index telemetry_span_root_start serves that as a range scan
# from the cursor on (backwards for newest first), and row_number() streams over it. The
# level above applies the filters that look inside a candidate's trace ({matches}) one
# candidate at a time as the LIMIT pulls rows: OFFSET 0 keeps that level apart so each
# filter runs once per candidate, and nothing above the window sorts, so the scan stops at
# the page's last match. The batch's last candidate comes back matched or not: where the
# next batch starts.
_LIST_SQL = """
SELECT c.* FROM (
    SELECT r.*, {matches} AS matches
    FROM (
        SELECT r.project_id, r.trace_id, r.span_id, r.start_time, r.duration_ms, r.name, r.service_name,
               r.tenant, r.feature, r.status_code, r.error_type,
               row_number() OVER (ORDER BY {order}) AS candidate_rank
        FROM telemetry_span r
        WHERE r.parent_span_id IS NULL
          AND r.start_time >= %(start)s AND r.start_time < %(end)s
          {conditions}
        ORDER BY {order}
        LIMIT %(batch)s
    ) AS r
    OFFSET 0
) AS c
WHERE c.matches OR c.candidate_rank = %(batch)s
LIMIT %(limit)s
"""

# At most %(probe_spans)s spans of the root's trace (any of them: in key order), among those
# within ATTRIBUTION_WINDOW of the root: the bound on r.start_time lets the executor prune
# the probe to the two or three daily partitions around the root (run-time pruning on the
# outer row's value) instead of probing every partition of a 30-day range's primary key
# (6.8 ms a candidate at 10M spans, 32 index probes); the bound on the range's window prunes
# at plan time, so the plan holds only the range's partitions (planning was 35 ms of a batch).
_PROBE = """(SELECT * FROM telemetry_span p
      WHERE p.trace_id = r.trace_id AND p.project_id = r.project_id
        AND p.start_time >= %(window_start)s AND p.start_time < %(window_end)s
        AND p.start_time >= r.start_time - %(attribution_window)s
        AND p.start_time < r.start_time + %(attribution_window)s
      LIMIT %(probe_spans)s)"""
# The root's tenant or feature as the rollups attribute it: its own, else its trace's (the
# first root's, else the earliest span's that has one).
_ATTRIBUTED = """coalesce(nullif(r.{column}, ''), (
    SELECT p.{column} FROM {probe} AS p WHERE p.{column} <> ''
    ORDER BY p.parent_span_id IS NOT NULL, p.start_time, p.span_id LIMIT 1), '')"""

# Per distinct trace of the page: its calls by the query layer's rule, counted over the
# spans the viewer may see.
_TRACE_CALLS_SQL = """
SELECT x.project_id, x.trace_id, count(*) AS spans_read,
       (array_agg(x.tenant ORDER BY x.trace_rank))[1] AS trace_tenant,
       (array_agg(x.feature ORDER BY x.trace_rank))[1] AS trace_feature,
       count(*) FILTER (WHERE x.is_call AND {visible}) AS n_calls,
       sum(x.cost_usd) FILTER (WHERE x.is_call AND {visible}) AS cost_usd,
       count(*) FILTER (WHERE x.is_call AND x.cost_usd IS NULL AND {visible}) AS cost_unknown,
       array_agg(DISTINCT nullif(x.model, '')) FILTER (WHERE x.is_call AND {visible}) AS models,
       count(*) FILTER (WHERE x.is_call AND x.error_key IS NOT NULL AND {visible}) AS errors
FROM ({spans}) AS x
GROUP BY x.project_id, x.trace_id
"""
_PAGE_TRACES = """(
    SELECT DISTINCT p.project_id, p.trace_id
    FROM unnest(%(page_projects)s::bigint[], %(page_traces)s::uuid[]) AS p(project_id, trace_id)
)"""


def _visible(scope: Scope, column: str) -> str:
    return "true" if scope.tenants is None else f"{column} = ANY(%(scope_tenants)s::text[])"


def search_traces(search: TraceSearch, scope: Scope) -> TracePage:
    """One page of matching traces, and the cursors of the pages either side.

    Candidates are read in batches of CANDIDATE_BATCH from the cursor on, at most
    CANDIDATE_BATCHES of them: a filter that matches rarely (or never) in a long range
    costs a bounded amount, and the page then says how far it searched and offers to go on.
    """
    if scope.tenants is not None and not scope.tenants:
        return TracePage([], None, None)
    params: dict[str, Any] = {
        "start": search.start,
        "end": search.end,
        "attribution_window": ATTRIBUTION_WINDOW,
        "window_start": search.start - ATTRIBUTION_WINDOW,
        "window_end": search.end + ATTRIBUTION_WINDOW,
        "probe_spans": PROBE_SPANS,
        "spans_per_trace": SPANS_PER_TRACE,
        "scope_tenants": list(scope.tenants or ()),
    }
    root_conditions = _root_conditions(search, params)
    trace_conditions = _trace_conditions(search, scope, params)
    # Without a filter inside traces every candidate matches: one batch of a page's rows.
    params["batch"] = CANDIDATE_BATCH if trace_conditions else PAGE_SIZE + 1
    column, direction = SORTS[search.sort]
    backwards = search.cursor is not None and search.cursor.backwards
    if backwards:
        direction = "ASC" if direction == "DESC" else "DESC"
    after = "<" if direction == "DESC" else ">"
    order = ", ".join(f"r.{name} {direction}" for name in (column, "trace_id", "span_id"))
    matches = " AND ".join(f"({condition})" for condition in trace_conditions) or "true"

    def batch_sql(position: Cursor | None) -> str:
        conditions = list(root_conditions)
        if position is not None:
            conditions.append(
                f"AND (r.{column}, r.trace_id, r.span_id) {after} (%(cursor_key)s, %(cursor_trace)s, %(cursor_span)s)"
            )
            # The same bound on the key alone, which the index range scan can use.
            conditions.append(f"AND r.{column} {after}= %(cursor_key)s")
            params.update(cursor_key=position.key, cursor_trace=position.trace_id, cursor_span=position.span_id)
        return _LIST_SQL.format(conditions="\n          ".join(conditions), order=order, matches=matches)

    def cursor_at(row: dict[str, Any], before: bool) -> Cursor:
        return Cursor(row[column], row["trace_id"], row["span_id"], before)

    rows: list[dict[str, Any]] = []
    position = search.cursor
    more = False
    searched_to: dict[str, Any] | None = None  # the last candidate read, when the search stopped early
    # One snapshot for the batches and the page's calls; and no JIT: the filters' probes make
    # the planner's estimate large enough for JIT, whose compilation of the probes' plans
    # costs far more than running them (0.7 s of a 0.73 s list at 10M spans).
    with snapshot(), connection.cursor() as cur:
        for batch in range(CANDIDATE_BATCHES):
            params["limit"] = PAGE_SIZE + 1 - len(rows)
            cur.execute(batch_sql(position), params)
            names = [c.name for c in cur.description]
            found = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            rows += [row for row in found if row["matches"]]
            if len(rows) > PAGE_SIZE:
                more = True
                break
            last = next((row for row in found if row["candidate_rank"] == params["batch"]), None)
            if last is None:
                break  # no candidate left in the range
            position = cursor_at(last, backwards)
            if batch == CANDIDATE_BATCHES - 1:
                searched_to = last
        rows = rows[:PAGE_SIZE]
        if backwards:
            rows.reverse()
        _add_calls(rows, scope, params)

    # Travel goes from the cursor in the list's order (or against it for a previous page);
    # the link onwards starts after the last row shown, or after the last candidate read when
    # the search stopped early; the link back starts before the first row shown.
    onwards = None
    if searched_to is not None:
        onwards = cursor_at(searched_to, backwards)
    elif more:
        onwards = cursor_at(rows[0] if backwards else rows[-1], backwards)
    back = None
    if search.cursor is not None:
        if rows:
            back = cursor_at(rows[-1] if backwards else rows[0], not backwards)
        elif searched_to is not None:
            back = cursor_at(searched_to, not backwards)
    if backwards:
        next_cursor, prev_cursor = back, onwards
    else:
        next_cursor, prev_cursor = onwards, back
    searched = None
    if searched_to is not None:
        searched = SearchedTo(searched_to["start_time"], CANDIDATE_BATCH * CANDIDATE_BATCHES)
    return TracePage(rows, next_cursor, prev_cursor, searched)


def _root_conditions(search: TraceSearch, params: dict[str, Any]) -> list[str]:
    """Filters on the root span's own columns: they narrow the candidates."""
    conditions: list[str] = []
    if search.status == "error":
        conditions.append("AND (r.status_code = 2 OR r.error_type IS NOT NULL)")
    elif search.status == "ok":
        conditions.append("AND r.status_code <> 2 AND r.error_type IS NULL")
    if search.min_duration_ms is not None:
        conditions.append("AND r.duration_ms >= %(min_duration)s")
        params["min_duration"] = search.min_duration_ms
    return conditions


def _trace_conditions(search: TraceSearch, scope: Scope, params: dict[str, Any]) -> list[str]:
    """Filters that may look inside a candidate's trace (each probe bounded by _PROBE)."""
    conditions: list[str] = []
    if scope.tenants is not None:
        conditions.append(f"{_ATTRIBUTED.format(column='tenant', probe=_PROBE)} = ANY(%(scope_tenants)s::text[])")
    if search.tenants:
        conditions.append(f"{_ATTRIBUTED.format(column='tenant', probe=_PROBE)} = ANY(%(tenants)s::text[])")
        params["tenants"] = list(search.tenants)
    if search.features:
        conditions.append(f"{_ATTRIBUTED.format(column='feature', probe=_PROBE)} = ANY(%(features)s::text[])")
        params["features"] = list(search.features)
    call_conditions = []
    if search.providers:
        call_conditions.append("p.provider = ANY(%(providers)s::text[])")
        params["providers"] = list(search.providers)
    if search.models:
        call_conditions.append(
            "(p.request_model = ANY(%(models)s::text[]) OR p.response_model = ANY(%(models)s::text[]))"
        )
        params["models"] = list(search.models)
    if call_conditions:
        # A call of the trace (an LLM span) that the viewer may see has them all: its own
        # tenant is theirs, or it has none and inherits the trace's (the root's, checked above).
        visible = (
            ""
            if scope.tenants is None
            else " AND (coalesce(p.tenant, '') = '' OR p.tenant = ANY(%(scope_tenants)s::text[]))"
        )
        conditions.append(
            f"EXISTS (SELECT 1 FROM {_PROBE} AS p WHERE p.is_llm AND {' AND '.join(call_conditions)}{visible})"
        )
    if search.services:
        # A trace through the service: its root or any span of it.
        params["services"] = list(search.services)
        conditions.append(
            "r.service_name = ANY(%(services)s::text[])"
            f" OR EXISTS (SELECT 1 FROM {_PROBE} AS p WHERE p.service_name = ANY(%(services)s::text[]))"
        )
    return conditions


def _add_calls(rows: list[dict[str, Any]], scope: Scope, params: dict[str, Any]) -> None:
    """Each row's trace's calls, cost, models and errors (what the viewer may see), worked
    out once per distinct trace."""
    for row in rows:
        row["trace_hex"] = row["trace_id"].hex
    if not rows:
        return
    # The page's traces' spans within ATTRIBUTION_WINDOW of their roots, as the list's probes
    # read them: a page of the time sorts covers minutes, so each trace's primary-key probe
    # reads the two or three partitions around it, not all of a 30-day range's.
    starts = [row["start_time"] for row in rows]
    window = {"window_start": min(starts) - ATTRIBUTION_WINDOW, "window_end": max(starts) + ATTRIBUTION_WINDOW}
    params = {**params, **window}
    sql = _TRACE_CALLS_SQL.format(
        visible=_visible(scope, "x.tenant"), spans=traced_spans_sql(_PAGE_TRACES, capped=True)
    )
    with connection.cursor() as cur:
        cur.execute(
            sql,
            {
                **params,
                "page_projects": [row["project_id"] for row in rows],
                "page_traces": [row["trace_id"] for row in rows],
            },
        )
        names = [c.name for c in cur.description]
        by_trace = {(r[0], r[1]): dict(zip(names, r, strict=True)) for r in cur.fetchall()}
    for row in rows:
        calls = by_trace.get((row["project_id"], row["trace_id"]), {})
        row["tenant"] = row["tenant"] or calls.get("trace_tenant") or ""
        row["feature"] = row["feature"] or calls.get("trace_feature") or ""
        row["n_calls"] = calls.get("n_calls", 0)
        row["cost_usd"] = calls.get("cost_usd")
        row["cost_unknown"] = calls.get("cost_unknown", 0)
        row["models"] = sorted(m for m in (calls.get("models") or []) if m)
        row["truncated"] = calls.get("spans_read", 0) >= SPANS_PER_TRACE
        row["is_error"] = row["status_code"] == 2 or row["error_type"] is not None or bool(calls.get("errors"))


# A trace's spans (the earliest SPANS_PER_TRACE): every partition's primary key, by its
# prefix trace_id.
_TRACE_SQL = """
SELECT project_id, trace_id, span_id, parent_span_id, start_time, end_time, duration_ms, name, kind, status_code,
       status_message, service_name, scope_name, is_llm, provider, operation, request_model, response_model,
       input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
       ttft_ms, queue_ms, prefill_ms, decode_ms, server_e2e_ms, finish_reasons, error_type, tenant, feature,
       retry_attempt, cost_usd, price_id, response_id, system_fingerprint
FROM telemetry_span
WHERE trace_id = %(trace_id)s
ORDER BY start_time, span_id
LIMIT %(spans_per_trace)s
"""
_SPAN_CALLS_SQL = """
SELECT x.span_id, x.tenant, x.is_call, x.same_call_as, x.cost_usd AS call_cost_usd, x.ttft_ms AS call_ttft_ms
FROM ({spans}) AS x
"""


@dataclass
class TraceView:
    spans: list[dict[str, Any]]  # what the viewer may see, each with its call's facts
    hidden: int  # spans of other tenants left out
    truncated: bool  # the trace has more than SPANS_PER_TRACE spans


def load_trace(trace_hex: str, scope: Scope) -> TraceView | None:
    """A trace's spans, or None when it does not exist or its root is not the viewer's."""
    try:
        trace_id = uuid.UUID(hex=trace_hex)
    except ValueError:
        return None
    if scope.tenants is not None and not scope.tenants:
        return None
    with connection.cursor() as cur:
        cur.execute(_TRACE_SQL, {"trace_id": trace_id, "spans_per_trace": SPANS_PER_TRACE})
        columns = [c.name for c in cur.description]
        spans = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    if not spans:
        return None
    project_id = spans[0]["project_id"]
    mine = [span for span in spans if span["project_id"] == project_id]
    params = {
        "page_projects": [project_id],
        "page_traces": [trace_id],
        "window_start": mine[0]["start_time"],
        "window_end": mine[-1]["start_time"] + timedelta(microseconds=1),
        "spans_per_trace": SPANS_PER_TRACE,
    }
    with connection.cursor() as cur:
        cur.execute(_SPAN_CALLS_SQL.format(spans=traced_spans_sql(_PAGE_TRACES, detail=True, capped=True)), params)
        calls = {row[0]: row for row in cur.fetchall()}
    for span in mine:
        _, tenant, is_call, same_call_as, call_cost, call_ttft = calls.get(
            span["span_id"], (None, "", False, None, None, None)
        )
        span.update(attributed_tenant=tenant, is_call=is_call, same_call_as=same_call_as, call_cost_usd=call_cost,
                    call_ttft_ms=call_ttft)  # fmt: skip
    # Shown when a root of it is the viewer's (as the list shows that root's row).
    roots = [span for span in mine if span["parent_span_id"] is None] or mine[:1]
    if scope.tenants is not None and not any(root["attributed_tenant"] in scope.tenants for root in roots):
        return None
    visible = [span for span in mine if scope.tenants is None or span["attributed_tenant"] in scope.tenants]
    return TraceView(visible, len(mine) - len(visible), len(spans) >= SPANS_PER_TRACE)


def span_hex(span_id: int | None) -> str:
    if span_id is None:
        return ""
    return (span_id & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big").hex()
