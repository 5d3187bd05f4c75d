"""The one metrics query layer: metric x time range x filters x group-by x granularity.

Every figure a person sees (page, JSON API, CSV, alert, email) comes from run_query, with
the definitions of docs/metrics.md (implemented in catalog.py). It reads the smallest
materialised grouping set that answers the question, rollup rows for closed hours and the
rollup's own SQL over raw spans for the rest (plan.py), and merges them in one statement
(sql.py): sums add, distributions add their counts per bucket, and percentiles are read
from the merged distribution, never averaged.

    result = run_query(Query(("cost_usd", "e2e_ms_p99"), start, end, granularity="day"), scope)
    result.rows  # [{"time": datetime, "cost_usd": Decimal, "e2e_ms_p99": 812.4, "e2e_ms_p99_samples": 1234}, ...]

Rows: one per (time bucket, group) that has data, sorted by time then group. Without a
group-by every time bucket of the range is there, empty ones included (sums 0, ratios and
percentiles None), and granularity None gives exactly one row, the totals. Buckets are UTC
hours, days, and ISO weeks (from Monday); the first and last may be partial.

Money is Decimal (exact sums; see catalog.py). Ratios are None where their denominator is
0; a percentile is None where it has no samples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from apps.metrics.catalog import METRICS, MetricSpec, metric_spec
from apps.metrics.plan import ReadPlan, choose_grouping, floor_hour, plan_reads
from apps.metrics.sql import TIME_BUCKETS, build_params, build_sql
from apps.rollups.models import DIMENSIONS, DISTRIBUTIONS
from apps.rollups.sketch import quantiles

if TYPE_CHECKING:
    import pandas

__all__ = [
    "DIMENSIONS",
    "DISTRIBUTIONS",
    "GRANULARITIES",
    "METRICS",
    "Filters",
    "MetricSpec",
    "Query",
    "QueryResult",
    "Scope",
    "dimension_values",
    "metric_spec",
    "run_query",
]

GRANULARITIES = ("hour", "day", "week")
# Filters field of each dimension.
FILTER_FIELDS = {"tenant": "tenants", "feature": "features", "provider": "providers", "model": "models",
                 "service": "services"}  # fmt: skip
UNATTRIBUTED = ""
WORK_MEM = "64MB"


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
class Scope:
    """Who is asking: applied on top of the filters, to every figure, totals included.

    None = every tenant, unattributed traffic included (staff). A tuple = only these tenants,
    and never the unattributed tenant '' even if listed; () = nothing at all.
    apps.accounts.access.scope_for makes one from a user.
    """

    tenants: tuple[str, ...] | None = None

    @classmethod
    def everything(cls) -> Scope:
        return cls(tenants=None)

    @property
    def limited(self) -> bool:
        return self.tenants is not None


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
        for name in self.query.metrics:
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


def _effective_tenants(filters: Filters, scope: Scope) -> tuple[str, ...] | None:
    """The tenant filter after the scope: None = no tenant filter, () = nothing visible."""
    if scope.tenants is None:
        return filters.tenants or None
    allowed = [tenant for tenant in scope.tenants if tenant != UNATTRIBUTED]
    if filters.tenants:
        allowed = [tenant for tenant in filters.tenants if tenant in allowed]
    return tuple(dict.fromkeys(allowed))


def _project_ids(filters: Filters) -> tuple[int, ...]:
    if filters.projects:
        return tuple(sorted(set(filters.projects)))
    from apps.accounts.models import Project

    return tuple(Project.objects.order_by("pk").values_list("pk", flat=True))


def _time_buckets(start: datetime, end: datetime, granularity: str | None) -> list[datetime | None]:
    if granularity is None:
        return [None]
    first = floor_hour(start)
    step = timedelta(hours=1)
    if granularity in ("day", "week"):
        first = first.replace(hour=0)
        step = timedelta(days=1)
    if granularity == "week":
        first -= timedelta(days=first.weekday())
        step = timedelta(days=7)
    buckets: list[datetime | None] = []
    moment = first
    while moment < end:
        buckets.append(moment)
        moment += step
    return buckets


class _Needs:
    """What the statement must read for a query's metrics."""

    def __init__(self, specs: Iterable[MetricSpec]) -> None:
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


def run_query(query: Query, scope: Scope) -> QueryResult:
    specs = [metric_spec(name) for name in query.metrics]
    needs = _Needs(specs)
    filters = query.filters.by_dimension()
    tenants = _effective_tenants(query.filters, scope)
    if tenants is not None:
        filters["tenant"] = tenants
    needed_dims = [*query.group_by, *filters]
    if scope.limited:
        needed_dims.append("tenant")
    grouping = choose_grouping(needed_dims)
    project_ids = _project_ids(query.filters)

    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    plan = None
    if tenants != () and project_ids:
        plan = plan_reads(grouping, project_ids, query.start, query.end, timezone.now())
        filtered = sorted(filters, key=DIMENSIONS.index)
        statement = build_sql(
            plan, query.granularity, query.group_by, filtered, needs.sums, needs.distributions, needs.breakdown
        )
        with transaction.atomic(), connection.cursor() as cur:
            # For this statement only (SET LOCAL, like the rollup runner): the raw pieces embed
            # the rollup's large query, whose JIT compilation costs more than it runs, and the
            # distribution merges hash a few hundred thousand (bucket, count) pairs.
            cur.execute("SELECT set_config('jit', 'off', true), set_config('work_mem', %s, true)", [WORK_MEM])
            cur.execute(statement, build_params(plan, filters))
            fetched = cur.fetchall()
        groups = _collect(fetched, len(query.group_by), needs)

    if not query.group_by:
        for bucket in _time_buckets(query.start, query.end, query.granularity):
            groups.setdefault((bucket,), {})
    rows = [_row(key, parts, query, specs, needs) for key, parts in sorted(groups.items(), key=_sort_key)]
    return QueryResult(query=query, rows=rows, plan=plan)


def _collect(fetched: list[tuple[Any, ...]], dims: int, needs: _Needs) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Fold the statement's long-format rows into one dict of parts per (time, *dims)."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    sums_at = 2 + dims
    for row in fetched:
        part, key = row[0], tuple(row[1:sums_at])
        if key[0] is not None:
            key = (key[0].astimezone(UTC), *key[1:])
        parts = groups.setdefault(key, {})
        if part == "sums":
            parts["sums"] = dict(zip(needs.sums, row[sums_at : sums_at + len(needs.sums)], strict=True))
        elif part == "errors_by_type":
            # Django's psycopg setup hands jsonb over as text (JSONField decodes it itself).
            breakdown = json.loads(row[-1]) if isinstance(row[-1], str) else row[-1]
            parts["errors_by_type"] = {str(k): int(v) for k, v in sorted(breakdown.items())}
        else:
            idx, cnt = row[-3], row[-2]
            parts[part] = (np.asarray(idx, dtype=np.int64), np.asarray(cnt, dtype=np.int64))
    return groups


def _sort_key(item: tuple[tuple[Any, ...], dict[str, Any]]) -> tuple[Any, ...]:
    return tuple((value is None, value if value is not None else "") for value in item[0])


_EMPTY_DISTRIBUTION = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))


def _zero(column: str) -> Any:
    return Decimal(0) if column in ("cost_usd", "cache_savings_usd") else 0.0 if column == "generation_ms" else 0


def _row(
    key: tuple[Any, ...], parts: dict[str, Any], query: Query, specs: list[MetricSpec], needs: _Needs
) -> dict[str, Any]:
    row: dict[str, Any] = {"time": key[0]}
    row.update(zip(query.group_by, key[1:], strict=True))
    sums = parts.get("sums") or {column: _zero(column) for column in needs.sums}
    quantiles_by_dist: dict[str, list[MetricSpec]] = {}
    for spec in specs:
        if spec.kind == "quantile" and spec.distribution:
            quantiles_by_dist.setdefault(spec.distribution, []).append(spec)
    values: dict[str, Any] = {}
    for dist, wanted in quantiles_by_dist.items():
        idx, cnt = parts.get(dist, _EMPTY_DISTRIBUTION)
        samples = int(cnt.sum())
        found = quantiles(idx, cnt, [spec.quantile or 0.0 for spec in wanted])
        for spec, value in zip(wanted, found, strict=True):
            values[spec.name] = value
            values[f"{spec.name}_samples"] = samples
    for spec in specs:
        if spec.kind == "quantile":
            row[spec.name] = values[spec.name]
            row[f"{spec.name}_samples"] = values[f"{spec.name}_samples"]
        elif spec.name == "errors_by_type":
            row[spec.name] = parts.get("errors_by_type", {})
        elif spec.distribution:  # <dist>_samples
            row[spec.name] = int(parts.get(spec.distribution, _EMPTY_DISTRIBUTION)[1].sum())
        else:
            assert spec.compute is not None
            value = spec.compute(sums)
            row[spec.name] = None if isinstance(value, float) and math.isnan(value) else value
    return row


def dimension_values(
    dimension: str, start: datetime, end: datetime, scope: Scope, filters: Filters = Filters()
) -> list[str]:
    """The values a dimension takes in [start, end) within the scope and filters, sorted.

    Read the same way as every figure (rollups plus the open edge), so a value offered in a
    picker is one that run_query has rows for.
    """
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}; known: {', '.join(DIMENSIONS)}")
    result = run_query(Query(("requests",), start, end, filters, group_by=(dimension,)), scope)
    return sorted({row[dimension] for row in result.rows if row[dimension] is not None})


assert set(TIME_BUCKETS) == {None, *GRANULARITIES}
