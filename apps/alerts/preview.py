"""How often a rule would have fired over the last 30 days, on stored data.

One query through the metrics layer with granularity "hour" (its shape's grouping, the rule's
filters), judged hour by hour with the rule's own levels and minimum sample count: an hourly
bucket stands in for the rule's window (a 15-minute window is judged on whole hours here, so
the preview is a guide to how noisy a level is, not a replay). A firing is a bucket at warning
or above after one that was not (or that had too few samples). Cache drops compare each hour with the same hour a week
earlier; budgets add up cost per day (day budgets) or through each month (month budgets) and
fire on the day the budget is passed; finding rules count the findings opened in their slice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from apps.alerts.evaluate import WEEK, _finding_matches, _level, _matches, period_bounds, shape_of
from apps.alerts.models import AlertRule
from apps.metrics.query import Query, Scope, run_query

PREVIEW_DAYS = 30
Kind = AlertRule.Kind


@dataclass
class Firing:
    at: datetime
    group: str
    level: str
    value: str


@dataclass
class Preview:
    start: datetime
    end: datetime
    buckets: str
    firings: list[Firing] = field(default_factory=list)
    judged: int = 0  # buckets with enough samples for a verdict

    @property
    def count(self) -> int:
        return len(self.firings)


def _group_label(rule: AlertRule, row: dict[str, Any]) -> str:
    return ", ".join(f"{dim} {row.get(dim) or '(none)'}" for dim in rule.group_by) or "whole slice"


def preview_rule(rule: AlertRule, now: datetime) -> Preview:
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=PREVIEW_DAYS)
    if rule.is_finding_rule:
        return _preview_findings(rule, start, now)
    shape = shape_of(rule)
    assert shape is not None
    filters = rule.filters()
    if rule.kind == Kind.BUDGET:
        return _preview_budget(rule, start, end, shape.grouped)
    metrics: tuple[str, ...] = ("requests", "error_rate")
    if rule.kind == Kind.LATENCY:
        metrics = ("requests", rule.metric())
    elif rule.kind == Kind.CACHE_DROP:
        metrics = ("requests", "prompt_cache_hit_rate")
    query_start = start - WEEK if rule.kind == Kind.CACHE_DROP else start
    rows = run_query(Query(metrics, query_start, end, filters, shape.grouped, "hour"), Scope.everything()).rows
    by_group: dict[str, dict[datetime, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        if _matches(rule, row, shape.grouped):
            by_group[_group_label(rule, row)][row["time"]] = row
    preview = Preview(start, end, "hour")
    for label, hours in sorted(by_group.items()):
        firing = False
        hour = start
        while hour < end:
            hour_row = hours.get(hour)
            level, shown = _judge_hour(rule, hour_row, hours.get(hour - WEEK))
            if level is not None:
                preview.judged += 1
                if level != "ok" and not firing:
                    preview.firings.append(Firing(hour, label, level, shown))
            # An hour without a verdict ends a firing here (live, the alert would stay open
            # until a window with enough samples clears it; a preview counts episodes of data).
            firing = level not in (None, "ok")
            hour += timedelta(hours=1)
    preview.firings.sort(key=lambda firing: firing.at)
    return preview


def _judge_hour(
    rule: AlertRule, row: dict[str, Any] | None, week_before: dict[str, Any] | None
) -> tuple[str | None, str]:
    if row is None:
        return None, ""
    if rule.kind == Kind.LATENCY:
        value, samples = row.get(rule.metric()), row.get(f"{rule.metric()}_samples") or 0
        shown = "" if value is None else f"{value:.0f} ms"
    elif rule.kind == Kind.ERROR_RATE:
        value, samples = row.get("error_rate"), row.get("requests") or 0
        shown = "" if value is None else f"{value:.1%}"
    else:
        if week_before is None or row.get("prompt_cache_hit_rate") is None:
            return None, ""
        baseline = week_before.get("prompt_cache_hit_rate")
        if baseline is None:
            return None, ""
        value = (baseline - row["prompt_cache_hit_rate"]) * 100
        samples = min(row.get("requests") or 0, week_before.get("requests") or 0)
        shown = f"-{value:.1f} points"
    if value is None or samples < rule.min_samples:
        return None, ""
    return _level(float(value), rule.warning_threshold, rule.critical_threshold), shown


def _preview_budget(rule: AlertRule, start: datetime, end: datetime, grouped: tuple[str, ...]) -> Preview:
    # Whole periods: a month budget needs the month's first days even when they are older.
    first, _ = period_bounds(rule.budget_period, start)
    rows = run_query(
        Query(("cost_usd", "requests"), first, end, rule.filters(), grouped, "day"), Scope.everything()
    ).rows
    budget = Decimal(str(rule.critical_threshold or 0))
    preview = Preview(start, end, "day")
    spent: dict[tuple[str, datetime], Decimal] = defaultdict(Decimal)
    fired: set[tuple[str, datetime]] = set()
    for row in sorted((row for row in rows if _matches(rule, row, grouped)), key=lambda row: row["time"]):
        if row.get("cost_usd") is None:
            continue  # unknown cost never counts as 0 toward a budget (nor as spend)
        label = _group_label(rule, row)
        period, _ = period_bounds(rule.budget_period, row["time"])
        spent[(label, period)] += row["cost_usd"]
        preview.judged += 1
        if spent[(label, period)] >= budget and (label, period) not in fired and row["time"] >= start:
            fired.add((label, period))
            preview.firings.append(Firing(row["time"], label, "critical", f"${spent[(label, period)]:.2f}"))
    return preview


def _preview_findings(rule: AlertRule, start: datetime, now: datetime) -> Preview:
    from apps.insights.models import Finding

    preview = Preview(start, now, "finding")
    for finding in Finding.objects.filter(kind=rule.kind, first_seen_at__gte=start).order_by("first_seen_at"):
        if _finding_matches(rule, finding):
            level = "critical" if finding.severity == "critical" else "warning"
            preview.firings.append(Firing(finding.first_seen_at, finding.title, level, finding.severity))
    preview.judged = preview.count
    return preview
