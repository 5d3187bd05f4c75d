"""The figures of one weekly review, read only through the metrics query layer.

Everything depends on the reader's Scope and week, never on the reader: reviews of readers
who see the same tenants share one WeekFigures (FiguresCache, per sweep), and a tenant-
limited reader's figures are computed with their scope, so no other tenant's name or money
can reach their email. The same numbers come out of /api/v1/metrics for the same start,
end and scope (tests/reports/test_figures.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse

from apps.metrics.query import Filters, Query, Scope, run_query, shared_reads_for
from apps.pricing.providers import is_self_hosted
from apps.reports.events import WeekEvents, week_events
from apps.reports.weeks import ReviewWeek, zone

# The headline figures, this week and the week before.
TOTAL_METRICS = (
    "cost_usd",
    "cost_unknown_requests",
    "requests",
    "errors",
    "error_rate",
    "retries",
    "retry_rate",
    "tasks",
    "successful_tasks",
    "cost_per_successful_task",
    "cost_per_1k_requests",
    "cache_savings_usd",
    "prompt_cache_hit_rate",
    "e2e_ms_p95",
    "e2e_ms_p99",
    "ttft_ms_p95",
    "ttft_ms_p99",
)
# Per feature x model and per tenant: additive, so features and models are sums of the
# feature x model rows (one query instead of three).
BREAKDOWN_METRICS = ("cost_usd", "cost_unknown_requests", "requests")
UNATTRIBUTED_LABEL = "(unattributed)"
UNKNOWN_MODEL = "(unknown model)"


def add_money(values: Iterable[Decimal | None]) -> Decimal | None:
    """A sum of costs that stays None ("unknown") only when every part is unknown."""
    known = [value for value in values if value is not None]
    return sum(known, Decimal(0)) if known else None


def change_of(current: Any, previous: Any) -> Any:
    if current is None or previous is None:
        return None
    return current - previous


def ratio_change(current: Any, previous: Any) -> float | None:
    """Relative change (0.34 = +34%); None without a base to compare against."""
    if current is None or previous is None or not previous:
        return None
    return float(current - previous) / float(previous)


@dataclass
class Line:
    """One feature, tenant, model or feature x model: this week against the week before."""

    key: tuple[str, ...]
    label: str
    cost: Decimal | None
    previous_cost: Decimal | None
    requests: int
    previous_requests: int
    unpriced: int
    link: str  # a dashboard path with its query string (compose makes it absolute)

    @property
    def cost_change(self) -> Decimal | None:
        return change_of(self.cost or Decimal(0), self.previous_cost or Decimal(0))

    @property
    def cost_change_ratio(self) -> float | None:
        return ratio_change(self.cost or Decimal(0), self.previous_cost)

    @property
    def is_new(self) -> bool:
        return not self.previous_requests and bool(self.requests)


@dataclass
class Day:
    day: date
    cost: Decimal | None
    previous_cost: Decimal | None  # the same weekday of the week before


@dataclass
class CostSplit:
    """Self-hosted (GPU cost attributed to vLLM calls, apps.gpu.attribution) against API cost
    (catalog-priced calls to hosted providers), this week and the week before.

    A call is self-hosted when its provider is a self-hosted tier (apps.pricing.providers:
    vllm), as on the GPU pages: /api/v1/metrics?provider=vllm gives the same figure. Both are
    part of the total cost. Idle GPU cost (capacity no request used) is not: it is no tenant's,
    so it is read only for readers who see every tenant (None for the others).
    """

    self_hosted: Decimal | None = None
    previous_self_hosted: Decimal | None = None
    api: Decimal | None = None
    previous_api: Decimal | None = None
    self_hosted_requests: int = 0
    previous_self_hosted_requests: int = 0
    api_requests: int = 0
    previous_api_requests: int = 0
    idle: Decimal | None = None
    previous_idle: Decimal | None = None

    @property
    def has_self_hosted(self) -> bool:
        return bool(self.self_hosted_requests or self.previous_self_hosted_requests or self.idle or self.previous_idle)


@dataclass
class WeekFigures:
    week: ReviewWeek
    scope: Scope
    totals: dict[str, Any]
    previous: dict[str, Any]
    features: list[Line]
    tenants: list[Line]
    models: list[Line]
    # Feature x model lines, sorted by cost change: the movers and the "what changed" rules.
    pairs: list[Line]
    days: list[Day]
    split: CostSplit = field(default_factory=CostSplit)
    # The week's findings and alert episodes (apps.reports.events), scoped like the figures.
    events: WeekEvents = field(default_factory=WeekEvents)
    # (feature, provider, model) -> the local day its first call of the week started on, for
    # pairs that had no calls the week before (filled by first_seen_days).
    first_seen: dict[tuple[str, ...], date] = field(default_factory=dict)

    @property
    def has_data(self) -> bool:
        return bool(self.totals["requests"] or self.previous["requests"])

    def movers(self, count: int) -> tuple[list[Line], list[Line]]:
        up = [line for line in self.pairs if (line.cost_change or 0) > 0][:count]
        down = [line for line in reversed(self.pairs) if (line.cost_change or 0) < 0][:count]
        return up, down


class FiguresCache:
    """WeekFigures per (scope, week) for one sweep: readers with the same scope share them."""

    def __init__(self) -> None:
        self._figures: dict[tuple[Scope, ReviewWeek], WeekFigures] = {}

    def get(self, scope: Scope, week: ReviewWeek) -> WeekFigures:
        key = (scope, week)
        if key not in self._figures:
            self._figures[key] = week_figures(scope, week)
        return self._figures[key]

    def __len__(self) -> int:
        return len(self._figures)


def dashboard_link(url_name: str, week: ReviewWeek, *args: str, **params: str) -> str:
    query = {"start": week.start.isoformat(), "end": week.end.isoformat(), **params}
    return f"{reverse(url_name, args=args)}?{urlencode(query)}"


def week_figures(scope: Scope, week: ReviewWeek) -> WeekFigures:
    previous = week.previous
    queries = {
        "totals": Query(TOTAL_METRICS, week.start, week.end),
        "previous_totals": Query(TOTAL_METRICS, previous.start, previous.end),
        "pairs": Query(BREAKDOWN_METRICS, week.start, week.end, group_by=("feature", "provider", "model")),
        "previous_pairs": Query(
            BREAKDOWN_METRICS, previous.start, previous.end, group_by=("feature", "provider", "model")
        ),
        "tenants": Query(BREAKDOWN_METRICS, week.start, week.end, group_by=("tenant",)),
        "previous_tenants": Query(BREAKDOWN_METRICS, previous.start, previous.end, group_by=("tenant",)),
    }
    daily_granularity = "day" if _utc_midnight(week.start) and _utc_midnight(week.end) else "hour"
    queries["days"] = Query(("cost_usd",), previous.start, week.end, granularity=daily_granularity)
    shared = shared_reads_for(queries.values(), scope)
    results = {name: run_query(query, scope, shared=shared).rows for name, query in queries.items()}

    pairs = _lines(
        results["pairs"],
        results["previous_pairs"],
        ("feature", "provider", "model"),
        lambda key: f"{key[0] or UNATTRIBUTED_LABEL} on {key[2] or UNKNOWN_MODEL}",
        lambda key: (
            dashboard_link("feature-detail", week, key[0], **({"model": key[2]} if key[2] else {}))
            if key[0]
            else dashboard_link("features", week)
        ),
    )
    features = _lines(
        _summed(results["pairs"], ("feature",)),
        _summed(results["previous_pairs"], ("feature",)),
        ("feature",),
        lambda key: key[0] or UNATTRIBUTED_LABEL,
        lambda key: dashboard_link("feature-detail", week, key[0]) if key[0] else dashboard_link("features", week),
    )
    models = _lines(
        _summed(results["pairs"], ("provider", "model")),
        _summed(results["previous_pairs"], ("provider", "model")),
        ("provider", "model"),
        lambda key: f"{key[1] or UNKNOWN_MODEL} ({key[0] or 'unknown provider'})",
        lambda key: dashboard_link("model-detail", week, *key) if all(key) else dashboard_link("models", week),
    )
    tenants = _lines(
        results["tenants"],
        results["previous_tenants"],
        ("tenant",),
        lambda key: key[0] or UNATTRIBUTED_LABEL,
        lambda key: dashboard_link("tenant-detail", week, key[0]) if key[0] else dashboard_link("tenants", week),
    )
    for lines in (features, models, tenants):
        lines.sort(key=lambda line: (-(line.cost or 0), -line.requests, line.label))
    pairs.sort(key=lambda line: (-(line.cost_change or 0), line.label))
    figures = WeekFigures(
        week=week,
        scope=scope,
        totals=results["totals"][0],
        previous=results["previous_totals"][0],
        features=features,
        tenants=tenants,
        models=models,
        pairs=pairs,
        days=_days(results["days"], week),
        split=cost_split(pairs, scope, week),
        events=week_events(scope, week),
    )
    first_seen_days(figures)
    return figures


def cost_split(pairs: list[Line], scope: Scope, week: ReviewWeek) -> CostSplit:
    """From the feature x provider x model lines already read: no extra query for the split."""
    hosted = [line for line in pairs if is_self_hosted(line.key[1])]
    api = [line for line in pairs if not is_self_hosted(line.key[1])]
    split = CostSplit(
        self_hosted=add_money(line.cost for line in hosted if line.requests),
        previous_self_hosted=add_money(line.previous_cost for line in hosted if line.previous_requests),
        api=add_money(line.cost for line in api if line.requests),
        previous_api=add_money(line.previous_cost for line in api if line.previous_requests),
        self_hosted_requests=sum(line.requests for line in hosted),
        previous_self_hosted_requests=sum(line.previous_requests for line in hosted),
        api_requests=sum(line.requests for line in api),
        previous_api_requests=sum(line.previous_requests for line in api),
    )
    if not scope.limited:
        split.idle, split.previous_idle = idle_gpu_cost(week), idle_gpu_cost(week.previous)
    return split


def idle_gpu_cost(week: ReviewWeek) -> Decimal:
    """The GPU tier's idle cost over the week, as the GPU tier page's cost card reads it."""
    from apps.gpu import panels

    return panels.cost_summary(panels.window_for(week.start, week.end, week.describe())).idle


def _utc_midnight(moment: datetime) -> bool:
    return moment.astimezone(UTC).time() == time(0)


def _summed(rows: list[dict[str, Any]], dims: tuple[str, ...]) -> list[dict[str, Any]]:
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(row[dim] for dim in dims)
        into = out.setdefault(key, {**dict(zip(dims, key, strict=True)), "cost_usd": None, "requests": 0,
                                     "cost_unknown_requests": 0})  # fmt: skip
        into["cost_usd"] = add_money([into["cost_usd"], row["cost_usd"]])
        into["requests"] += row["requests"]
        into["cost_unknown_requests"] += row["cost_unknown_requests"] or 0
    return list(out.values())


def _lines(
    current: list[dict[str, Any]],
    previous: list[dict[str, Any]],
    dims: tuple[str, ...],
    label: Any,
    link: Any,
) -> list[Line]:
    before = {tuple(row[dim] for dim in dims): row for row in previous}
    now = {tuple(row[dim] for dim in dims): row for row in current}
    lines = []
    for key in sorted(set(now) | set(before)):
        this, last = now.get(key, {}), before.get(key, {})
        lines.append(
            Line(
                key=key,
                label=label(key),
                cost=this.get("cost_usd"),
                previous_cost=last.get("cost_usd"),
                requests=this.get("requests", 0),
                previous_requests=last.get("requests", 0),
                unpriced=this.get("cost_unknown_requests") or 0,
                link=link(key),
            )
        )
    return lines


def _days(rows: list[dict[str, Any]], week: ReviewWeek) -> list[Day]:
    tz = zone(week.timezone)
    by_day: dict[date, list[Decimal | None]] = {}
    for row in rows:
        by_day.setdefault(row["time"].astimezone(tz).date(), []).append(row["cost_usd"])
    days = []
    for day in week.days():
        last_week = day.toordinal() - 7
        days.append(Day(day, add_money(by_day.get(day, [])), add_money(by_day.get(date.fromordinal(last_week), []))))
    return days


def first_seen_days(figures: WeekFigures, limit: int = 2) -> None:
    """The local day each of the biggest new feature x model pairs started: "moving to X on Tue".

    One small hourly query per pair, filtered to it, for the `limit` largest new pairs only.
    """
    week = figures.week
    tz = zone(week.timezone)
    new_pairs = [line for line in figures.pairs if line.is_new and (line.cost_change or 0) > 0 and all(line.key)]
    new_pairs = new_pairs[:limit]
    for line in new_pairs:
        feature, provider, model = line.key
        query = Query(
            ("requests",),
            week.start,
            week.end,
            filters=Filters(features=(feature,), providers=(provider,), models=(model,)),
            granularity="hour",
        )
        for row in run_query(query, figures.scope).rows:
            if row["requests"]:
                figures.first_seen[line.key] = row["time"].astimezone(tz).date()
                break
