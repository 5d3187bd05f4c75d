"""Regressions: a slice got slower, failed more or cost more than in the same hours of
earlier weeks, and since when (docs/metrics.md, "Regressions").

One run, for one project at `now`:

- Slices: per feature, per (provider, model), per tenant (SLICINGS); slices with an empty
  name (unattributed traffic) are left out.
- Windows: current = the HOURS hour buckets up to `now` (the last one partial); baseline =
  the same moments 1..WEEKS weeks earlier, pooled, so daily and weekly cycles are compared
  like with like. A baseline week that begins before a user accepted the slice's shift as
  the new normal is left out (episodes.baseline_floor).
- Tests (one-sided, "worse"), each with a minimum effect a person would care about:
  p95/p99 of latency and TTFT: binomial test of the number of current calls above the
  baseline's percentile (counted exactly on the sketches: calls in buckets above the bucket
  holding the baseline quantile, against the baseline's own share there), plus a ratio and
  an absolute floor on current/baseline percentile. Error rate: two-proportion z test
  (Fisher's exact test for small counts), plus floors on the difference and the ratio. Cost
  per successful task and spend (tenant and feature slices): Welch's t test on the log of
  the hourly values, plus a floor on the ratio of the window totals.
- Every test of the run is one Benjamini-Hochberg family (episodes.record).
- When it began: on the slice's hourly series over the last SERIES_HOURS, calls above the
  baseline percentile and errors, each out of the hour's calls, are scanned against the
  baseline's own share (changepoint.rate_onset); the log hourly cost is segmented
  (changepoint.onset).

Reads: the query layer only: run_query (hourly sums) and the rollup's hourly distributions
through apps.metrics.reads, both in one snapshot: (1 + WEEKS) reads of each kind per slicing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
from django.conf import settings

from apps.insights import changepoint, episodes, stats
from apps.insights.episodes import Candidate
from apps.insights.models import Finding
from apps.metrics import reads
from apps.metrics.distributions import coarsen
from apps.metrics.merge import Distribution, merge_distributions
from apps.metrics.plan import ceil_hour, choose_grouping, floor_hour, plan_reads
from apps.metrics.query import Filters, Query, Scope, run_query
from apps.rollups.sketch import bucket_index, bucket_values, quantiles

HOUR = timedelta(hours=1)
WEEK = timedelta(days=7)
SLICINGS: tuple[tuple[str, ...], ...] = (("feature",), ("provider", "model"), ("tenant",))
# Cost per task and spend are judged per tenant and feature: a task can use several models.
COST_SLICINGS: tuple[tuple[str, ...], ...] = (("feature",), ("tenant",))
# metric -> (distribution, quantile, label)
PERCENTILES: dict[str, tuple[str, float, str]] = {
    "latency_p95": ("e2e_ms", 0.95, "p95 latency"),
    "latency_p99": ("e2e_ms", 0.99, "p99 latency"),
    "ttft_p95": ("ttft_ms", 0.95, "p95 time to first token"),
    "ttft_p99": ("ttft_ms", 0.99, "p99 time to first token"),
}
COST_METRICS = ("cost_per_successful_task", "spend")
METRICS = (*PERCENTILES, "error_rate", *COST_METRICS)
SUMS = ("requests", "errors", "cost_usd", "successful_tasks")
# An hour with fewer calls than this is a missing point of a change-point series.
MIN_HOURLY_CALLS = 5


def _setting(name: str, default: Any) -> Any:
    return type(default)(getattr(settings, name, default))


@dataclass(frozen=True)
class Settings:
    """The detector's knobs (Django settings INSIGHTS_REGRESSION_*, defaults here)."""

    hours: int = 6
    weeks: int = 4
    series_hours: int = 72
    min_calls: int = 150  # current calls per slice for a percentile (p99: 1.5 expected above)
    min_baseline_calls: int = 400
    min_rate_calls: int = 100  # current calls for the error rate
    latency_ratio: float = 1.25
    latency_min_ms: float = 100.0
    latency_critical_ratio: float = 2.0
    error_rate_min_increase: float = 0.02
    error_rate_ratio: float = 1.5
    error_rate_critical_increase: float = 0.10
    cost_ratio: float = 1.25
    cost_critical_ratio: float = 2.0
    spend_ratio: float = 1.5
    spend_critical_ratio: float = 3.0

    @classmethod
    def current(cls) -> Settings:
        defaults = cls()
        return cls(
            **{
                name: _setting(f"INSIGHTS_REGRESSION_{name.upper()}", getattr(defaults, name))
                for name in cls.__dataclass_fields__
            }
        )


@dataclass
class Hours:
    """One slice's hourly sums and distributions over one read range."""

    sums: dict[datetime, dict[str, Any]] = field(default_factory=dict)
    dists: dict[datetime, dict[str, list[Distribution]]] = field(default_factory=dict)

    def total(self, column: str, hours: Sequence[datetime] | None = None) -> float:
        chosen = self.sums if hours is None else {hour: self.sums[hour] for hour in hours if hour in self.sums}
        return float(sum(row[column] or 0 for row in chosen.values()))

    def distribution(self, dist: str, hours: Sequence[datetime] | None = None) -> Distribution:
        chosen = self.dists if hours is None else {hour: self.dists[hour] for hour in hours if hour in self.dists}
        return merge_distributions([part for parts in chosen.values() for part in parts.get(dist, [])])


def read_hours(
    project_id: int, start: datetime, end: datetime, group_by: tuple[str, ...]
) -> dict[tuple[str, ...], Hours]:
    """Per slice, hourly sums (run_query) and hourly distributions (the rollup rows and raw
    pieces run_query reads them from), in one snapshot."""
    found: dict[tuple[str, ...], Hours] = {}
    filters = Filters(projects=(project_id,))
    with reads.snapshot():
        result = run_query(Query(SUMS, start, end, filters, group_by, "hour"), Scope.everything())
        for row in result.rows:
            found.setdefault(tuple(row[dim] for dim in group_by), Hours()).sums[row["time"]] = row
        plan = plan_reads(choose_grouping(group_by), (project_id,), start, end, _wall_clock())
        dists = ("e2e_ms", "ttft_ms")
        width = 1 + len(group_by)
        if plan.rollup_start is not None:
            for rollup_row in reads.rollup_distributions(plan, group_by, {}, dists):
                hours = found.setdefault(tuple(rollup_row[1:width]), Hours())
                parts = hours.dists.setdefault(floor_hour(rollup_row[0]), {})
                for number, dist in enumerate(dists):
                    parts.setdefault(dist, []).append(
                        (rollup_row[width + 2 * number], rollup_row[width + 1 + 2 * number])
                    )
        for piece in plan.raw:
            for raw in reads.raw_rows(piece, (plan.grouping,)):
                hours = found.setdefault(tuple(raw[dim] for dim in group_by), Hours())
                parts = hours.dists.setdefault(floor_hour(raw["bucket"]), {})
                for dist in dists:
                    indexes = raw[f"{dist}_idx"]
                    if indexes is not None and len(indexes):
                        parts.setdefault(dist, []).append(
                            (np.asarray(indexes, np.int64), np.asarray(raw[f"{dist}_cnt"], np.int64))
                        )
    return found


def _wall_clock() -> datetime:
    from django.utils import timezone

    return timezone.now()


@dataclass
class _Run:
    project_id: int
    now: datetime
    knobs: Settings
    candidates: list[Candidate] = field(default_factory=list)
    judged: set[str] = field(default_factory=set)
    tested: int = 0

    @property
    def end_hour(self) -> datetime:
        return ceil_hour(self.now) if self.now != floor_hour(self.now) else self.now

    @property
    def current_hours(self) -> list[datetime]:
        return [self.end_hour - HOUR * (number + 1) for number in reversed(range(self.knobs.hours))]


def detect(project_id: int, now: datetime) -> list[Finding]:
    """Run this family's tests for one project at `now` and record the episodes."""
    run = evaluate(project_id, now)
    return episodes.record(
        project_id, Finding.Kind.REGRESSION, METRICS, run.candidates, tested=run.tested, judged=run.judged, now=now
    )


def evaluate(project_id: int, now: datetime) -> _Run:
    """Every test of one run, before false-discovery control: candidates, how many tests
    were made, and which signatures had enough data to be judged."""
    run = _Run(project_id, now, Settings.current())
    for group_by in SLICINGS:
        _detect_slicing(run, group_by)
    return run


def _detect_slicing(run: _Run, group_by: tuple[str, ...]) -> None:
    knobs = run.knobs
    series_start = run.end_hour - HOUR * knobs.series_hours
    recent = read_hours(run.project_id, series_start, run.now, group_by)
    weeks = [
        read_hours(run.project_id, run.end_hour - HOUR * knobs.hours - WEEK * k, run.now - WEEK * k, group_by)
        for k in range(1, knobs.weeks + 1)
    ]
    metrics = [*PERCENTILES, "error_rate"] + (
        ["cost_per_successful_task", "spend"] if group_by in COST_SLICINGS else []
    )
    for values, hours in recent.items():
        if any(not value for value in values):
            continue
        slice_ = dict(zip(group_by, values, strict=True))
        signatures = {metric: episodes.signature(Finding.Kind.REGRESSION, metric, slice_) for metric in metrics}
        floors = episodes.baseline_floor(run.project_id, signatures.values())
        for metric in metrics:
            floor = floors.get(signatures[metric])
            baseline = [
                week[values]
                for k, week in enumerate(weeks, start=1)
                if values in week and (floor is None or run.end_hour - HOUR * knobs.hours - WEEK * k >= floor)
            ]
            judge = _judge_percentile if metric in PERCENTILES else _JUDGES[metric]
            judge(run, metric, slice_, hours, baseline, series_start)


def _link(slice_: dict[str, str]) -> str:
    query = urlencode({"range": "7d"})
    if "feature" in slice_:
        return f"/features/{quote(slice_['feature'], safe='')}/?{query}"
    if "tenant" in slice_:
        return f"/tenants/{quote(slice_['tenant'], safe='')}/?{query}"
    return f"/models/{quote(slice_['provider'], safe='')}/{quote(slice_['model'], safe='')}/?{query}"


def _name(slice_: dict[str, str]) -> str:
    if "model" in slice_:
        return f"{slice_['model']} ({slice_['provider']})"
    return f"{'feature' if 'feature' in slice_ else 'tenant'} {next(iter(slice_.values()))}"


def _window(start: datetime, end: datetime, n: float, value: float | None, **extra: Any) -> dict[str, Any]:
    return {"start": start.isoformat(), "end": end.isoformat(), "n": int(n), "value": value, **extra}


def _histogram(distribution: Distribution) -> list[list[float]]:
    indexes, counts = distribution
    if not counts.size:
        return []
    values, wide = coarsen(bucket_values(indexes), counts)
    total = float(wide.sum())
    return [[round(float(x), 3), round(float(c) / total, 5)] for x, c in zip(values, wide, strict=True)]


def _onset(series: list[tuple[datetime, float | None]]) -> datetime | None:
    """The change point where the current level began, if it lies in the series."""
    point = changepoint.onset([value for _, value in series], direction=1)
    return None if point is None else series[point][0]


def _series_hours(run: _Run, series_start: datetime) -> list[datetime]:
    hours = []
    hour = series_start
    while hour < run.now:
        hours.append(hour)
        hour += HOUR
    return hours


def _candidate(
    run: _Run, metric: str, slice_: dict[str, str], *, severity: str, title: str, p_value: float,
    evidence: dict[str, Any], started_at: datetime | None,
) -> None:  # fmt: skip
    evidence = {
        **evidence,
        "first_seen_at": None,
        "change_point": started_at.isoformat() if started_at else None,
        "change_method": "binseg" if metric in COST_METRICS else "scan-binomial",
        "link": _link(slice_),
    }
    run.candidates.append(
        Candidate(Finding.Kind.REGRESSION, metric, slice_, severity, title, p_value, evidence, started_at)
    )


def _baseline_bounds(run: _Run, baseline: list[Hours]) -> tuple[datetime, datetime]:
    weeks = len(baseline)
    return run.end_hour - HOUR * run.knobs.hours - WEEK * weeks, run.now - WEEK


def _judge_percentile(
    run: _Run, metric: str, slice_: dict[str, str], hours: Hours, baseline: list[Hours], series_start: datetime
) -> None:
    dist, q, label = PERCENTILES[metric]
    knobs = run.knobs
    current = hours.distribution(dist, run.current_hours)
    pooled = merge_distributions([week.distribution(dist) for week in baseline])
    n_current, n_baseline = int(current[1].sum()), int(pooled[1].sum())
    if n_current < knobs.min_calls or n_baseline < knobs.min_baseline_calls:
        return
    run.judged.add(episodes.signature(Finding.Kind.REGRESSION, metric, slice_))
    run.tested += 1
    baseline_value, current_value = quantiles(pooled[0], pooled[1], [q])[0], quantiles(current[0], current[1], [q])[0]
    assert baseline_value is not None and current_value is not None
    threshold = bucket_index(baseline_value) if baseline_value > 0 else -(2**31)
    above = int(current[1][current[0] > threshold].sum())
    baseline_share = max(float(pooled[1][pooled[0] > threshold].sum()) / n_baseline, 1.0 / n_baseline)
    ratio = current_value / baseline_value if baseline_value > 0 else math.inf
    if ratio < knobs.latency_ratio or current_value - baseline_value < knobs.latency_min_ms:
        return
    p_value = stats.binomial_upper_tail(above, n_current, baseline_share)
    series: list[tuple[datetime, float | None]] = []
    above_by_hour: list[int] = []
    calls_by_hour: list[int] = []
    hour_list = _series_hours(run, series_start)
    for hour in hour_list:
        indexes, counts = hours.distribution(dist, [hour])
        calls = int(counts.sum())
        above_by_hour.append(int(counts[indexes > threshold].sum()))
        calls_by_hour.append(calls)
        series.append((hour, quantiles(indexes, counts, [q])[0] if calls >= MIN_HOURLY_CALLS else None))
    point = changepoint.rate_onset(above_by_hour, calls_by_hour, baseline_share)
    started_at = None if point is None else hour_list[point]
    baseline_start, baseline_end = _baseline_bounds(run, baseline)
    what = "latency" if dist == "e2e_ms" else "TTFT"
    _candidate(
        run, metric, slice_,
        severity=Finding.Severity.CRITICAL if ratio >= knobs.latency_critical_ratio else Finding.Severity.WARNING,
        title=f"{label} of {_name(slice_)} up {ratio:.1f}x: {current_value:,.0f} ms vs {baseline_value:,.0f} ms "
        f"in the same hours of the last {len(baseline)} week(s)",
        p_value=p_value,
        evidence={
            "unit": "ms",
            "label": label,
            "test": {"name": "binomial-quantile", "statistic": float(above), "p_value": p_value,
                     "expected_share": baseline_share, "observed_share": above / n_current},
            "effect": {"name": "ratio", "value": ratio, "floor": knobs.latency_ratio},
            "baseline": _window(baseline_start, baseline_end, n_baseline, baseline_value,
                                histogram=_histogram(pooled), weeks=len(baseline)),
            "current": _window(run.current_hours[0], run.now, n_current, current_value, histogram=_histogram(current)),
            "series": [[hour.isoformat(), value] for hour, value in series],
            "metric_of": what,
        },
        started_at=started_at,
    )  # fmt: skip


def _judge_error_rate(
    run: _Run, metric: str, slice_: dict[str, str], hours: Hours, baseline: list[Hours], series_start: datetime
) -> None:
    knobs = run.knobs
    calls, errors = hours.total("requests", run.current_hours), hours.total("errors", run.current_hours)
    base_calls = sum(week.total("requests") for week in baseline)
    base_errors = sum(week.total("errors") for week in baseline)
    if calls < knobs.min_rate_calls or base_calls < knobs.min_rate_calls:
        return
    run.judged.add(episodes.signature(Finding.Kind.REGRESSION, metric, slice_))
    run.tested += 1
    rate, base_rate = errors / calls, base_errors / base_calls
    ratio = rate / base_rate if base_rate else math.inf
    if rate - base_rate < knobs.error_rate_min_increase or ratio < knobs.error_rate_ratio:
        return
    outcome = stats.rate_increase(events=errors, calls=calls, baseline_events=base_errors, baseline_calls=base_calls)
    series: list[tuple[datetime, float | None]] = []
    errors_by_hour: list[int] = []
    calls_by_hour: list[int] = []
    hour_list = _series_hours(run, series_start)
    for hour in hour_list:
        row = hours.sums.get(hour)
        errors_by_hour.append(int(row["errors"]) if row else 0)
        calls_by_hour.append(int(row["requests"]) if row else 0)
        enough = row is not None and row["requests"] >= MIN_HOURLY_CALLS
        series.append((hour, row["errors"] / row["requests"] if row is not None and enough else None))
    point = changepoint.rate_onset(errors_by_hour, calls_by_hour, max(base_rate, 1.0 / base_calls))
    baseline_start, baseline_end = _baseline_bounds(run, baseline)
    critical = rate - base_rate >= knobs.error_rate_critical_increase
    _candidate(
        run, metric, slice_,
        severity=Finding.Severity.CRITICAL if critical else Finding.Severity.WARNING,
        title=f"Error rate of {_name(slice_)} up: {rate:.1%} vs {base_rate:.1%} "
        f"in the same hours of the last {len(baseline)} week(s)",
        p_value=outcome.p_value,
        evidence={
            "unit": "share",
            "label": "error rate",
            "test": {"name": outcome.name, "statistic": outcome.statistic, "p_value": outcome.p_value},
            "effect": {"name": "ratio", "value": ratio if math.isfinite(ratio) else None,
                       "floor": knobs.error_rate_ratio, "difference": rate - base_rate,
                       "difference_floor": knobs.error_rate_min_increase},
            "baseline": _window(baseline_start, baseline_end, base_calls, base_rate, errors=int(base_errors)),
            "current": _window(run.current_hours[0], run.now, calls, rate, errors=int(errors)),
            "series": [[hour.isoformat(), value] for hour, value in series],
        },
        started_at=None if point is None else hour_list[point],
    )  # fmt: skip


def _hourly_cost(hours: Hours, hour: datetime, metric: str) -> float | None:
    row = hours.sums.get(hour)
    if row is None or row["cost_usd"] is None or row["cost_usd"] <= 0:
        return None
    if metric == "spend":
        return float(row["cost_usd"])
    return float(row["cost_usd"]) / row["successful_tasks"] if row["successful_tasks"] else None


def _week_value(week: Hours, hour: datetime, metric: str, weeks: int) -> float | None:
    """The value of `hour`'s counterpart in an earlier week's read (whichever week it is)."""
    for k in range(1, weeks + 5):
        if hour - WEEK * k in week.sums:
            return _hourly_cost(week, hour - WEEK * k, metric)
    return None


def _priced_calls(hours: Hours, chosen: Sequence[datetime] | None = None) -> int:
    rows = hours.sums.values() if chosen is None else [hours.sums[hour] for hour in chosen if hour in hours.sums]
    return int(sum((row["requests"] or 0) - (row.get("cost_unknown_requests") or 0) for row in rows))


def _judge_cost(
    run: _Run, metric: str, slice_: dict[str, str], hours: Hours, baseline: list[Hours], series_start: datetime
) -> None:
    knobs = run.knobs
    current = [v for hour in run.current_hours if (v := _hourly_cost(hours, hour, metric)) is not None]
    earlier = [
        v for week in baseline for hour in sorted(week.sums) if (v := _hourly_cost(week, hour, metric)) is not None
    ]
    if len(current) < 3 or len(earlier) < 6:
        return
    # A cost rests on its priced calls: a slice of mostly self-hosted or unpriced calls has a
    # few cents an hour from a handful of calls, whose log hourly values swing by 2x on
    # stable traffic (search-rerank, 3,000 requests a day: a false 1.9x spend regression).
    priced_now, priced_before = _priced_calls(hours, run.current_hours), sum(_priced_calls(w) for w in baseline)
    if min(priced_now, priced_before) < knobs.min_rate_calls:
        return
    run.judged.add(episodes.signature(Finding.Kind.REGRESSION, metric, slice_))
    run.tested += 1
    cost = hours.total("cost_usd", run.current_hours)
    base_cost = sum(week.total("cost_usd") for week in baseline)
    if metric == "spend":
        value, base_value = cost, base_cost / len(baseline)  # per window: the mean of the baseline weeks
        floor, critical = knobs.spend_ratio, knobs.spend_critical_ratio
    else:
        tasks = hours.total("successful_tasks", run.current_hours)
        base_tasks = sum(week.total("successful_tasks") for week in baseline)
        if not tasks or not base_tasks:
            return
        value, base_value = cost / tasks, base_cost / base_tasks
        floor, critical = knobs.cost_ratio, knobs.cost_critical_ratio
    ratio = value / base_value if base_value else math.inf
    if ratio < floor:
        return
    # Each hour against the same hour of the earlier weeks: the daily cycle inside the window
    # is then not noise (Welch over the window's hours counted it as such and missed a 5x
    # spike on four of six hours).
    paired = [[_week_value(week, hour, metric, len(baseline)) for hour in run.current_hours] for week in baseline]
    try:
        outcome = stats.paired_log_rise([_hourly_cost(hours, hour, metric) for hour in run.current_hours], paired)
    except ValueError:
        outcome = stats.welch_greater([math.log(v) for v in current], [math.log(v) for v in earlier])
    series = [(hour, _hourly_cost(hours, hour, metric)) for hour in _series_hours(run, series_start)]
    log_series = [(hour, math.log(v) if v else None) for hour, v in series]
    baseline_start, baseline_end = _baseline_bounds(run, baseline)
    label = "spend" if metric == "spend" else "cost per successful task"
    unit = "USD" if metric == "spend" else "USD per task"
    _candidate(
        run, metric, slice_,
        severity=Finding.Severity.CRITICAL if ratio >= critical else Finding.Severity.WARNING,
        title=f"{label.capitalize()} of {_name(slice_)} up {ratio:.1f}x: {_money(value)} vs {_money(base_value)} "
        f"in the same hours of the last {len(baseline)} week(s)",
        p_value=outcome.p_value,
        evidence={
            "unit": "usd",
            "label": f"{label} ({unit}, {'per window' if metric == 'spend' else 'window total'})",
            "test": {"name": outcome.name, "statistic": outcome.statistic, "p_value": outcome.p_value,
                     "on": "log of hourly values, each hour against the same hour of earlier weeks"
                     if outcome.name == "paired-log-t" else "log of hourly values",
                     "hours": [len(current), len(earlier)]},
            "effect": {"name": "ratio", "value": ratio if math.isfinite(ratio) else None, "floor": floor},
            "baseline": _window(baseline_start, baseline_end, len(earlier), base_value),
            "current": _window(run.current_hours[0], run.now, len(current), value),
            "series": [[hour.isoformat(), v] for hour, v in series],
        },
        started_at=_onset(log_series),
    )  # fmt: skip


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


_JUDGES = {
    "error_rate": _judge_error_rate,
    "cost_per_successful_task": _judge_cost,
    "spend": _judge_cost,
}
