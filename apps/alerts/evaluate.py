"""Evaluating alert rules: figures from the one metrics query layer, findings from insights.

Rules of the same shape are evaluated together. A shape is (figure family, window, project,
grouped dimensions, multi-valued filters): the grouped dimensions are the rule's group-by plus
every dimension it filters to exactly one value, so one query grouped by them holds each
rule's slice as whole rows, and a percentile is read from its own merged distribution, never
from a merge of other rows' percentiles. A rule that filters a dimension to several values
without grouping by it aggregates over them, so those filters are part of its shape. The
query of a shape filters a grouped dimension by the union of the rules' values when every
rule of the shape filters it. So a cycle costs one query per shape (two for cache drops: now
and a week earlier), whatever the number of rules, and every raw piece of the open hour is
rolled up once for all of them (SharedReads).

System evaluation reads with Scope.everything(): the rule's own filters do the scoping.
"""

from __future__ import annotations

import calendar
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from apps.alerts.models import FILTER_FIELD, LEVEL_RANK, RULE_DIMENSIONS, AlertRule
from apps.metrics.query import Filters, Query, Scope, run_query, shared_reads_for

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)
# The Filters field of each dimension a rule filters.
QUERY_FILTER = {"tenant": "tenants", "feature": "features", "provider": "providers", "model": "models"}
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
Kind = AlertRule.Kind


@dataclass
class Verdict:
    """One rule's judgement of one group. level None = no verdict (too few samples, or a cost
    that is unknown): the alert keeps its level."""

    group: dict[str, str]
    level: str | None
    value: float | None
    samples: int
    summary: str
    tenant: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def group_key(self) -> str:
        return json.dumps(self.group, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Shape:
    family: str  # "traffic", "cache", "budget:day", "budget:month"
    window_minutes: int
    project_id: int | None
    grouped: tuple[str, ...]
    aggregated: tuple[tuple[str, tuple[str, ...]], ...]


def shape_of(rule: AlertRule) -> Shape | None:
    if rule.is_finding_rule:
        return None
    filters = rule.filter_values()
    grouped = sorted(set(rule.group_by) | {dim for dim, values in filters.items() if len(values) == 1})
    aggregated = tuple(sorted((dim, tuple(sorted(values))) for dim, values in filters.items() if dim not in grouped))
    if rule.kind in (Kind.LATENCY, Kind.ERROR_RATE):
        family = "traffic"
    elif rule.kind == Kind.CACHE_DROP:
        family = "cache"
    else:
        family = f"budget:{rule.budget_period}"
    window = 0 if family.startswith("budget") else rule.window_minutes
    return Shape(family, window, rule.project_id, tuple(grouped), aggregated)


def _metrics_for(rules: Sequence[AlertRule], family: str) -> tuple[str, ...]:
    if family == "traffic":
        names = ["requests", "error_rate"]
        names += sorted({rule.metric() for rule in rules if rule.kind == Kind.LATENCY})
        return tuple(names)
    if family == "cache":
        return ("requests", "prompt_cache_hit_rate")
    return ("requests", "cost_usd")


def _query_filters(shape: Shape, rules: Sequence[AlertRule]) -> Filters:
    values: dict[str, tuple[str, ...]] = dict(shape.aggregated)
    for dim in shape.grouped:
        if all(getattr(rule, FILTER_FIELD[dim]) for rule in rules):
            values[dim] = tuple(sorted({value for rule in rules for value in getattr(rule, FILTER_FIELD[dim])}))
    return Filters(
        projects=(shape.project_id,) if shape.project_id else (),
        **{QUERY_FILTER[dim]: found for dim, found in values.items()},
    )


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    first = day.replace(day=1)
    days_in_month = calendar.monthrange(first.year, first.month)[1]
    return first, first + timedelta(days=days_in_month)


def _queries(shape: Shape, rules: Sequence[AlertRule], now: datetime) -> list[Query]:
    metrics = _metrics_for(rules, shape.family)
    filters = _query_filters(shape, rules)
    if shape.family.startswith("budget"):
        start, _ = period_bounds(shape.family.split(":")[1], now)
        if start >= now:
            start = now - timedelta(seconds=1)
        return [Query(metrics, start, now, filters, group_by=shape.grouped)]
    start = now - timedelta(minutes=shape.window_minutes)
    queries = [Query(metrics, start, now, filters, group_by=shape.grouped)]
    if shape.family == "cache":
        queries.append(Query(metrics, start - WEEK, now - WEEK, filters, group_by=shape.grouped))
    return queries


def _matches(rule: AlertRule, row: dict[str, Any], grouped: Iterable[str]) -> bool:
    for dim in grouped:
        values = getattr(rule, FILTER_FIELD[dim])
        if values and row.get(dim) not in values:
            return False
    return True


def _tenant_of(rule: AlertRule, group: dict[str, str]) -> str:
    if "tenant" in group:
        return group["tenant"] or ""
    return rule.tenants[0] if len(rule.tenants) == 1 else ""


def _level(value: float | None, warning: float | None, critical: float | None) -> str:
    if value is None:
        return "ok"
    if critical is not None and value >= critical:
        return "critical"
    if warning is not None and value >= warning:
        return "warning"
    return "ok"


def _fmt_ms(value: float) -> str:
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _traffic_verdict(rule: AlertRule, row: dict[str, Any], group: dict[str, str]) -> Verdict:
    tenant = _tenant_of(rule, group)
    if rule.kind == Kind.LATENCY:
        metric = rule.metric()
        value, samples = row.get(metric), int(row.get(f"{metric}_samples") or 0)
        label = f"p{rule.percentile} {rule.get_distribution_display().lower()}"
        shown = "no samples" if value is None else _fmt_ms(value)
        thresholds = (
            f"warning {_fmt_ms(rule.warning_threshold) if rule.warning_threshold is not None else '-'}, "
            f"critical {_fmt_ms(rule.critical_threshold or 0)}"
        )
    else:
        value, samples = row.get("error_rate"), int(row.get("requests") or 0)
        label = "error rate"
        shown = "no calls" if value is None else f"{value:.1%}"
        warn = f"{rule.warning_threshold:.1%}" if rule.warning_threshold is not None else "-"
        thresholds = f"warning {warn}, critical {(rule.critical_threshold or 0):.1%}"
    details = {"metric": label, "samples": samples, "window_minutes": rule.window_minutes, "thresholds": thresholds}
    summary = f"{label} {shown} over {rule.window_minutes} min ({samples} samples; {thresholds})"
    if samples < rule.min_samples or value is None:
        return Verdict(
            group, None, value, samples, f"{summary}: too few samples (minimum {rule.min_samples})", tenant, details
        )
    level = _level(float(value), rule.warning_threshold, rule.critical_threshold)
    return Verdict(group, level, float(value), samples, summary, tenant, details)


def _cache_verdict(
    rule: AlertRule, now_row: dict[str, Any], before: dict[str, Any] | None, group: dict[str, str]
) -> Verdict:
    tenant = _tenant_of(rule, group)
    current, baseline = now_row.get("prompt_cache_hit_rate"), (before or {}).get("prompt_cache_hit_rate")
    samples = min(int(now_row.get("requests") or 0), int((before or {}).get("requests") or 0))
    details = {"current_hit_rate": current, "week_earlier_hit_rate": baseline, "samples": samples}
    if current is None or baseline is None:
        return Verdict(
            group, None, None, samples, "prompt-cache hit rate: no input tokens now or a week earlier", tenant, details
        )
    drop = (baseline - current) * 100
    summary = (
        f"prompt-cache hit rate {current:.1%} over {rule.window_minutes} min, {baseline:.1%} a week earlier "
        f"(drop {drop:.1f} points; {samples} calls)"
    )
    if samples < rule.min_samples:
        return Verdict(
            group, None, drop, samples, f"{summary}: too few calls (minimum {rule.min_samples})", tenant, details
        )
    return Verdict(
        group, _level(drop, rule.warning_threshold, rule.critical_threshold), drop, samples, summary, tenant, details
    )


def budget_forecast(spent: Decimal, start: datetime, end: datetime, now: datetime, budget: Decimal) -> dict[str, Any]:
    """Linear pace over the elapsed part of the period: the forecast spend at its end, and the
    moment the budget is gone at this pace (None if not within the period)."""
    elapsed = (now - start).total_seconds()
    length = (end - start).total_seconds()
    if elapsed <= 0 or spent <= 0:
        return {"forecast": spent, "exhausted_at": None}
    forecast = spent * Decimal(length) / Decimal(elapsed)
    seconds_to_budget = float(budget / spent) * elapsed
    if seconds_to_budget >= length:
        # Not within the period; and a tiny spend against a big budget would put the moment
        # past the last date Python can hold (an OverflowError that stopped the whole cycle).
        return {"forecast": forecast, "exhausted_at": None}
    return {"forecast": forecast, "exhausted_at": start + timedelta(seconds=seconds_to_budget)}


def _budget_verdict(rule: AlertRule, row: dict[str, Any], group: dict[str, str], now: datetime) -> Verdict:
    tenant = _tenant_of(rule, group)
    start, end = period_bounds(rule.budget_period, now)
    spent, unknown, requests = (
        row.get("cost_usd"),
        int(row.get("cost_unknown_requests") or 0),
        int(row.get("requests") or 0),
    )
    budget = Decimal(str(rule.critical_threshold or 0))
    period = f"{start:%B %Y}" if rule.budget_period == "month" else f"{start:%Y-%m-%d}"
    details: dict[str, Any] = {
        "budget_usd": str(budget),
        "period": period,
        "cost_unknown_requests": unknown,
        "requests": requests,
    }
    if spent is None:
        details["spent_usd"] = None
        return Verdict(
            group,
            None,
            None,
            requests,
            f"cost so far in {period} unknown ({unknown} unpriced calls): a budget is not judged on it",
            tenant,
            details,
        )
    pace = budget_forecast(spent, start, end, now, budget)
    details.update(spent_usd=str(spent), forecast_usd=str(round(pace["forecast"], 2)))
    unpriced = f" + {unknown} unpriced calls" if unknown else ""
    summary = (
        f"${spent:.2f}{unpriced} spent of ${budget:.2f} in {period}; forecast ${pace['forecast']:.2f} at this pace"
    )
    if pace["exhausted_at"] is not None:
        details["exhausted_at"] = pace["exhausted_at"].isoformat()
        summary += f"; at this pace the budget is gone on {pace['exhausted_at']:%b %d}"
        if spent < budget:
            summary += f" ({pace['exhausted_at']:%Y-%m-%d %H:%M} UTC)"
    if spent >= budget:
        level = "critical"
    elif pace["forecast"] >= budget and requests >= rule.min_samples:
        level = "warning"
    else:
        level = "ok"
    return Verdict(group, level, float(spent), requests, summary, tenant, details)


def _finding_matches(rule: AlertRule, finding: Any) -> bool:
    if rule.project_id and finding.project_id != rule.project_id:
        return False
    if rule.kind != finding.kind or SEVERITY_RANK.get(finding.severity, 0) < SEVERITY_RANK[rule.min_severity]:
        return False
    # A finding is in a rule's slice when it names one of the rule's values for every
    # dimension the rule filters (a finding over all features is not one feature's).
    for dim, values in rule.filter_values().items():
        found = finding.tenant if dim == "tenant" else (finding.slice or {}).get(dim)
        if found not in values:
            return False
    return True


def _finding_verdicts(rules: Sequence[AlertRule], states: dict[tuple[int, str], Any]) -> dict[int, list[Verdict]]:
    from apps.insights.models import Finding

    open_findings = list(
        Finding.objects.filter(status=Finding.Status.OPEN, kind__in={rule.kind for rule in rules})
    )  # one query for every finding rule
    found: dict[int, list[Verdict]] = defaultdict(list)
    for rule in rules:
        seen: set[str] = set()
        for finding in open_findings:
            if not _finding_matches(rule, finding):
                continue
            group = {"finding": f"{finding.project_id}:{finding.signature}"}
            verdict = Verdict(
                group,
                "critical" if finding.severity == "critical" else "warning",
                None,
                0,
                f"{finding.get_kind_display()} ({finding.severity}): {finding.title}",
                finding.tenant,
                {"finding_id": finding.pk, "title": finding.title, "evidence": finding.evidence},
            )
            seen.add(verdict.group_key)
            found[rule.pk].append(verdict)
        # An alert whose finding is no longer open resolves.
        for (rule_id, key), state in states.items():
            if rule_id == rule.pk and key not in seen and state.level != "ok":
                found[rule.pk].append(
                    Verdict(dict(state.group), "ok", None, 0, "the finding is no longer open", state.tenant)
                )
    return found


@dataclass
class Cycle:
    """What one evaluation computed: verdicts per rule, and how many queries it ran."""

    verdicts: dict[int, list[Verdict]]
    queries: int
    shapes: int


def judge(rules: Sequence[AlertRule], now: datetime, states: dict[tuple[int, str], Any] | None = None) -> Cycle:
    """Every rule's verdicts at `now`, without writing anything."""
    verdicts: dict[int, list[Verdict]] = defaultdict(list)
    by_shape: dict[Shape, list[AlertRule]] = defaultdict(list)
    finding_rules = []
    for rule in rules:
        shape = shape_of(rule)
        if shape is None:
            finding_rules.append(rule)
        else:
            by_shape[shape].append(rule)
    planned = [(shape, members, _queries(shape, members, now)) for shape, members in by_shape.items()]
    scope = Scope.everything()
    shared = shared_reads_for([query for _, _, queries in planned for query in queries], scope)
    count = 0
    for shape, members, queries in planned:
        results = [run_query(query, scope, shared=shared).rows for query in queries]
        count += len(results)
        for rule in members:
            try:
                judged = _rule_verdicts(rule, shape, results, now)
            except Exception:
                # One rule that cannot be judged (a defect, an absurd value) leaves its state
                # as it was; the other rules of the cycle are still judged and notified.
                log.exception("alert rule %s (%s) could not be judged; left as it was", rule.pk, rule.name)
                continue
            verdicts[rule.pk].extend(judged)
    if finding_rules:
        for rule_id, found in _finding_verdicts(finding_rules, states or {}).items():
            verdicts[rule_id].extend(found)
        count += 1
    return Cycle(dict(verdicts), count, len(by_shape))


def _rule_verdicts(rule: AlertRule, shape: Shape, results: list[list[dict[str, Any]]], now: datetime) -> list[Verdict]:
    found: list[Verdict] = []
    rule_group = tuple(rule.group_by)
    rows = [row for row in results[0] if _matches(rule, row, shape.grouped)]
    earlier: dict[tuple[Any, ...], dict[str, Any]] = {}
    if shape.family == "cache":
        for row in results[1]:
            if _matches(rule, row, shape.grouped):
                earlier[tuple(row[dim] for dim in shape.grouped)] = row
    if not rows and not rule_group:
        rows = [{}]  # no calls in the slice: a verdict of "too few samples"
    for row in rows:
        group = {dim: row.get(dim) or "" for dim in rule_group}
        if shape.family == "traffic":
            verdict = _traffic_verdict(rule, row, group)
        elif shape.family == "cache":
            verdict = _cache_verdict(rule, row, earlier.get(tuple(row.get(d) for d in shape.grouped)), group)
        else:
            verdict = _budget_verdict(rule, row, group, now)
        found.append(verdict)
    return found


def worst(verdicts: Iterable[Verdict]) -> str:
    levels = [verdict.level for verdict in verdicts if verdict.level]
    return max(levels, key=LEVEL_RANK.__getitem__) if levels else "ok"


__all__ = ["RULE_DIMENSIONS", "Cycle", "Shape", "Verdict", "budget_forecast", "judge", "period_bounds", "shape_of"]
