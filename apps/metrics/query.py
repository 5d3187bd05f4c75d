"""The one metrics query layer: metric x time range x filters x group-by x granularity.

Every figure a person sees (page, JSON API, CSV, alert, email) comes from run_query, with
the definitions of docs/metrics.md (implemented in catalog.py). It reads the smallest
materialised grouping set that answers the question: rollup rows for closed hours, and the
rollup's own SQL over raw spans for the rest (plan.py), in one snapshot (reads.py, sql.py).
Sums add (in SQL for rollup rows), distributions add their counts per bucket index (numpy,
merge.py; whole closed days merged once and kept, days.py), and percentiles are read from
the merged distribution with sketch.quantiles, interpolated like percentile_cont: never
averaged.

    result = run_query(Query(("cost_usd", "e2e_ms_p99"), start, end, granularity="day"), scope)
    result.rows  # [{"time": datetime, "cost_usd": Decimal, "e2e_ms_p99": 812.4, "e2e_ms_p99_samples": 1234}, ...]

Rows: one per (time bucket, group) that has data, sorted by time then group. Without a
group-by every time bucket of the range is there, empty ones included (sums 0, ratios and
percentiles None), and granularity None gives exactly one row, the totals. Buckets are UTC
hours, days, and ISO weeks (from Monday); the first and last may be partial.

Money is Decimal on one scale (10 decimals, catalog.quantize_money), and None where calls
were made and none of them is priced: unknown is never shown as 0. A query that asks for
any money metric gets `cost_unknown_requests` in every row too (Query.reported), so a
partly priced figure always travels with the count of calls it leaves out. Ratios are None
where their denominator is 0; a percentile is None where it has no samples.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from apps.metrics import days, reads
from apps.metrics.catalog import COST_UNKNOWN, METRICS, MetricSpec, metric_spec, quantize_money
from apps.metrics.merge import Group
from apps.metrics.plan import ReadPlan, choose_grouping, floor_hour, plan_reads
from apps.metrics.reads import SharedReads
from apps.metrics.scope import UNATTRIBUTED, Scope
from apps.metrics.snapshot import remembered
from apps.metrics.sql import TIME_BUCKETS
from apps.rollups.models import DIMENSIONS, DISTRIBUTIONS
from apps.rollups.sketch import quantiles

if TYPE_CHECKING:
    import pandas

__all__ = [
    "DIMENSIONS",
    "DISTRIBUTIONS",
    "GRANULARITIES",
    "METRICS",
    "UNATTRIBUTED",
    "Filters",
    "MetricSpec",
    "Query",
    "QueryResult",
    "Scope",
    "SharedReads",
    "dimension_values",
    "grouping_for",
    "metric_spec",
    "run_query",
    "shared_reads_for",
]

GRANULARITIES = ("hour", "day", "week")
# Filters field of each dimension.
FILTER_FIELDS = {"tenant": "tenants", "feature": "features", "provider": "providers", "model": "models",
                 "service": "services"}  # fmt: skip


@dataclass(frozen=True)
class Filters:
    """What to look at; an empty tuple means no filter on that dimension."""

    projects: tuple[int, ...] = ()
    tenants: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    services: tuple[str, ...] = ()

    def by_dimension(self) -> dict[str, tuple[str, ...]]:
        """The filtered dimensions and their values."""
        return {dim: getattr(self, name) for dim, name in FILTER_FIELDS.items() if getattr(self, name)}


@dataclass(frozen=True)
class Query:
    metrics: tuple[str, ...]
    start: datetime  # aware; the range is [start, end)
    end: datetime
    filters: Filters = Filters()
    group_by: tuple[str, ...] = ()  # a subset of DIMENSIONS
    granularity: str | None = None  # None = the whole range, "hour", "day", "week"

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError("a query asks for at least one metric")
        for name in self.metrics:
            metric_spec(name)
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        for dim in self.group_by:
            if dim not in DIMENSIONS:
                raise ValueError(f"unknown dimension {dim!r} in group_by; known: {', '.join(DIMENSIONS)}")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by names a dimension twice")
        if self.granularity is not None and self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be None or one of {', '.join(GRANULARITIES)}")

    @property
    def reported(self) -> tuple[str, ...]:
        """The metrics each row carries: those asked for, and `cost_unknown_requests` with
        any money metric (a cost figure never travels without its count of unpriced calls)."""
        if COST_UNKNOWN not in self.metrics and any(metric_spec(name).is_money for name in self.metrics):
            return (*self.metrics, COST_UNKNOWN)
        return self.metrics


@dataclass
class QueryResult:
    query: Query
    rows: list[dict[str, Any]]
    # How the numbers were read (grouping set, rollup hours, raw pieces); None when the
    # scope allows nothing and nothing was read.
    plan: ReadPlan | None = field(default=None, repr=False)

    @property
    def columns(self) -> list[str]:
        names = ["time", *self.query.group_by]
        for name in self.query.reported:
            names.append(name)
            if metric_spec(name).kind == "quantile":
                names.append(f"{name}_samples")
        return names

    def to_frame(self) -> pandas.DataFrame:
        """The rows as a DataFrame: money as float64 (from the exact Decimal), time as UTC."""
        import pandas

        frame = pandas.DataFrame(self.rows, columns=self.columns)
        for name in self.query.metrics:
            if metric_spec(name).is_money:
                frame[name] = frame[name].map(lambda value: None if value is None else float(value)).astype("float64")
        frame["time"] = pandas.to_datetime(frame["time"], utc=True)
        return frame


def effective_tenants(filters: Filters, scope: Scope) -> tuple[str, ...] | None:
    """The tenant filter after the scope: None = no tenant filter, () = nothing visible."""
    return scope.visible_tenants(filters.tenants)


def filtered_project_ids(filters: Filters) -> tuple[int, ...]:
    if filters.projects:
        return tuple(sorted(set(filters.projects)))
    from apps.accounts.models import Project

    return remembered("project_ids", lambda: tuple(Project.objects.order_by("pk").values_list("pk", flat=True)))


def _time_buckets(start: datetime, end: datetime, granularity: str | None) -> list[datetime | None]:
    """Every output time bucket of [start, end)."""
    first = _time_bucket(floor_hour(start), granularity)
    if first is None:
        return [None]
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}[str(granularity)]
    buckets: list[datetime | None] = []
    while first < end:
        buckets.append(first)
        first += step
    return buckets


class _Needs:
    """What a query's metrics read."""

    def __init__(self, specs: Iterable[MetricSpec]) -> None:
        # requests always: a group is there when it has calls, whatever else is asked.
        self.sums: list[str] = ["requests"]
        self.distributions: list[str] = []
        self.breakdown = False
        for spec in specs:
            for column in spec.columns:
                if column not in self.sums:
                    self.sums.append(column)
            if spec.distribution and spec.distribution not in self.distributions:
                self.distributions.append(spec.distribution)
            if spec.name == "errors_by_type":
                self.breakdown = True


def _time_bucket(hour: datetime, granularity: str | None) -> datetime | None:
    """The output time bucket of an hour, as TIME_BUCKETS computes it in SQL."""
    if granularity is None:
        return None
    hour = hour.astimezone(UTC)
    if granularity == "hour":
        return hour
    day = hour.replace(hour=0)
    return day if granularity == "day" else day - timedelta(days=day.weekday())


def _filters(query: Query, scope: Scope) -> dict[str, tuple[str, ...]]:
    """The dimension filters a query reads with: its own, and the scope's tenants."""
    filters = query.filters.by_dimension()
    tenants = effective_tenants(query.filters, scope)
    if tenants is not None:
        filters["tenant"] = tenants
    return filters


def grouping_for(query: Query, scope: Scope) -> int:
    """The grouping set a query reads: the smallest covering its group-by, its filters, and
    the tenant whenever the scope limits tenants (DIM_BITS mask)."""
    needed = [*query.group_by, *_filters(query, scope)]
    if scope.limited:
        needed.append("tenant")
    return choose_grouping(needed)


def shared_reads_for(queries: Iterable[Query], scope: Scope) -> SharedReads:
    """A SharedReads that rolls up each raw piece once for all these queries' grouping sets."""
    return SharedReads(grouping_sets=tuple(sorted({grouping_for(query, scope) for query in queries})))


def run_query(query: Query, scope: Scope, *, shared: SharedReads | None = None) -> QueryResult:
    """Answer a query for someone: every figure limited to the scope, totals included.

    `shared` lets several queries of one page or email roll up their raw pieces once
    (reads.SharedReads).
    """
    specs = [metric_spec(name) for name in query.reported]
    needs = _Needs(specs)
    filters = _filters(query, scope)
    tenants = filters.get("tenant")
    grouping = grouping_for(query, scope)
    project_ids = filtered_project_ids(query.filters)

    groups: dict[tuple[Any, ...], Group] = {}
    plan = None
    if tenants != () and project_ids:
        with reads.snapshot():
            plan = plan_reads(grouping, project_ids, query.start, query.end, timezone.now())
            _read_rollups(plan, query, filters, needs, groups)
            for piece in plan.raw:
                rows = shared.rows(piece, grouping) if shared else reads.raw_rows(piece, (grouping,))
                _add_raw_rows(rows, query, filters, needs, groups)

    if not query.group_by:
        for bucket in _time_buckets(query.start, query.end, query.granularity):
            groups.setdefault((bucket,), Group())
    else:
        # A group is one with data for the question. Rollup rows of other things (semantic-cache
        # lookups and tasks have no provider or model) give a group nothing asked for here: no
        # row of 0 calls under a blank model; asked for the cache hit rate, that group stays.
        groups = {key: group for key, group in groups.items() if not group.empty}
    rows = [_row(key, group, query, specs) for key, group in sorted(groups.items(), key=_sort_key)]
    return QueryResult(query=query, rows=rows, plan=plan)


def _read_rollups(
    plan: ReadPlan,
    query: Query,
    filters: dict[str, tuple[str, ...]],
    needs: _Needs,
    groups: dict[tuple[Any, ...], Group],
) -> None:
    if plan.rollup_start is None:
        return
    # Whole closed days come from days.py (kept, or read and kept); the other rollup hours
    # from their rows. Hourly charts read every hour's rows.
    kept = days.kept_days(plan) if query.granularity != "hour" else []
    keys = 1 + len(query.group_by)
    stretches = days.residual_stretches(plan, kept)
    if stretches:
        # Each stretch aggregated on its own, in one statement: an output row may come twice.
        skip = days.skip_clause(kept, stretches)
        question = ("sums", query.granularity, query.group_by, tuple(needs.sums), needs.breakdown)
        sums = days.hour_rows(
            plan, stretches, filters, skip, question,
            lambda: reads.rollup_sums(plan, query.granularity, query.group_by, filters, needs.sums, needs.breakdown,
                                      days=skip, stretches=stretches),
        )  # fmt: skip
        for row in sums:
            group = groups.setdefault(_key(row[:keys]), Group())
            group.add_sums(needs.sums, row[keys : keys + len(needs.sums)])
            if needs.breakdown:
                group.add_errors(row[-1])
    if needs.distributions:
        for row in days.residual_distribution_rows(plan, kept, query.group_by, filters, needs.distributions):
            key = (_time_bucket(row[0], query.granularity), *row[1:keys])
            group = groups.setdefault(key, Group())
            for number, dist in enumerate(needs.distributions):
                group.add_distribution(dist, row[keys + 2 * number], row[keys + 2 * number + 1])
    found = days.read(
        plan, kept, query.group_by, filters, sums=True, breakdown=needs.breakdown, dists=needs.distributions
    )
    for (_, day), parts in found.items():
        bucket = _time_bucket(day, query.granularity)
        for values, (day_sums, errors) in parts[days.sums_part(needs.breakdown)].items():
            group = groups.setdefault((bucket, *values), Group())
            group.add_sums(needs.sums, days.sums_of(day_sums, needs.sums))
            if needs.breakdown:
                group.add_errors(errors)
        for dist in needs.distributions:
            for values, (indexes, counts) in parts[dist].items():
                groups.setdefault((bucket, *values), Group()).add_distribution(dist, indexes, counts)


def _add_raw_rows(
    rows: list[dict[str, Any]],
    query: Query,
    filters: dict[str, tuple[str, ...]],
    needs: _Needs,
    groups: dict[tuple[Any, ...], Group],
) -> None:
    for row in rows:
        if any(row[dim] not in values for dim, values in filters.items()):
            continue
        key = (_time_bucket(row["bucket"], query.granularity), *(row[dim] for dim in query.group_by))
        group = groups.setdefault(key, Group())
        group.add_sums(needs.sums, [row[column] for column in needs.sums])
        if needs.breakdown:
            group.add_errors(row["errors_by_type"])
        for dist in needs.distributions:
            group.add_distribution(dist, row[f"{dist}_idx"], row[f"{dist}_cnt"])


def _key(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return (values[0].astimezone(UTC) if values[0] is not None else None, *values[1:])


def _sort_key(item: tuple[tuple[Any, ...], Group]) -> tuple[Any, ...]:
    return tuple((value is None, value if value is not None else "") for value in item[0])


def _row(key: tuple[Any, ...], group: Group, query: Query, specs: list[MetricSpec]) -> dict[str, Any]:
    row: dict[str, Any] = {"time": key[0]}
    row.update(zip(query.group_by, key[1:], strict=True))
    quantiles_by_dist: dict[str, list[MetricSpec]] = {}
    for spec in specs:
        if spec.kind == "quantile" and spec.distribution:
            quantiles_by_dist.setdefault(spec.distribution, []).append(spec)
    found: dict[str, Any] = {}
    for dist, wanted in quantiles_by_dist.items():
        indexes, counts = group.distribution(dist)
        samples = int(counts.sum())
        for spec, value in zip(
            wanted, quantiles(indexes, counts, [spec.quantile or 0.0 for spec in wanted]), strict=True
        ):
            found[spec.name] = value
            found[f"{spec.name}_samples"] = samples
    for spec in specs:
        if spec.kind == "quantile":
            row[spec.name] = found[spec.name]
            row[f"{spec.name}_samples"] = found[f"{spec.name}_samples"]
        elif spec.name == "errors_by_type":
            row[spec.name] = dict(sorted(group.errors_by_type.items()))
        elif spec.distribution:  # <dist>_samples
            row[spec.name] = int(group.distribution(spec.distribution)[1].sum())
        else:
            assert spec.compute is not None
            value = spec.compute({column: group.sum(column) for column in spec.columns})
            row[spec.name] = quantize_money(value) if spec.is_money else value
    return row


def dimension_values(
    dimension: str, start: datetime, end: datetime, scope: Scope, filters: Filters = Filters(),
    shared: SharedReads | None = None,
) -> list[str]:  # fmt: skip
    """The values a dimension takes in [start, end) within the scope and filters, sorted.

    Read the same way as every figure (rollups plus the open edge), so a value offered in a
    picker is one that run_query has rows for.
    """
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}; known: {', '.join(DIMENSIONS)}")
    # Calls, semantic-cache lookups or tasks: a tenant whose traffic is all cache hits is offered.
    asked = ("requests", "semantic_cache_lookups", "tasks")
    result = run_query(Query(asked, start, end, filters, group_by=(dimension,)), scope, shared=shared)
    return sorted({row[dimension] for row in result.rows if row[dimension] is not None})


assert set(TIME_BUCKETS) == {None, *GRANULARITIES}
