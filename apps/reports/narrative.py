"""The "what changed" paragraph: sentences chosen by rules from the week's figures.

No model writes it: each rule looks at one kind of change (total cost and what drove it,
volume against unit cost, latency, errors, unpriced calls, caching) and says something only
when the change is large enough to matter. Every number in it is one shown elsewhere in the
review.
"""

from __future__ import annotations

from decimal import Decimal

from apps.reports.figures import UNKNOWN_MODEL, Line, WeekFigures, ratio_change
from apps.reports.formatting import duration_ms, money, percent, plural, signed_percent, size
from apps.reports.weeks import zone

# Below these a change is "steady": week-to-week noise is not news.
STEADY_COST = 0.02
LATENCY_NEWS = 0.15
ERROR_RATE_NEWS = 0.01  # one percentage point
# A driver is named when it explains at least this share of the total change.
DRIVER_SHARE = 0.3


def what_changed(figures: WeekFigures) -> list[str]:
    if not figures.has_data:
        return ["No LLM calls were recorded this week or the week before."]
    sentences = [_cost_sentence(figures), _finding_sentence(figures)]
    rules = (_self_hosted_sentence, _volume_sentence, _latency_sentence, _error_sentence, _unpriced_sentence,
             _cache_sentence)  # fmt: skip
    for rule in rules:
        sentence = rule(figures)
        if sentence:
            sentences.append(sentence)
    return [sentence for sentence in sentences if sentence]


def _cost_sentence(figures: WeekFigures) -> str:
    cost, before = figures.totals["cost_usd"], figures.previous["cost_usd"]
    if cost is None:
        return "No call this week had a price, so its cost is unknown."
    if not before:
        return f"Cost was {money(cost)}; the week before had no priced calls to compare with."
    change = ratio_change(cost, before)
    assert change is not None
    delta = cost - before
    if abs(change) < STEADY_COST:
        return f"Cost held steady at {money(cost)} ({signed_percent(change)})."
    verb = "rose" if delta > 0 else "fell"
    sentence = f"Cost {verb} {abs(change) * 100:.0f}% ({money(abs(delta))}) to {money(cost)}"
    driver = _driver(figures, delta)
    return f"{sentence}, {driver}." if driver else f"{sentence}."


def _driver(figures: WeekFigures, delta: Decimal) -> str:
    """ "80% of it from support-chat moving to claude-sonnet-4-5 on Tue" when one feature
    explains most of the change."""
    same_way = [line for line in figures.features if (line.cost_change or 0) * delta > 0]
    if not same_way:
        return ""
    top = max(same_way, key=lambda line: abs(line.cost_change or Decimal(0)))
    share = float((top.cost_change or 0) / delta)
    if share < DRIVER_SHARE:
        return ""
    lead = f"{min(share, 1.0) * 100:.0f}% of it from {top.label}"
    pairs = [line for line in figures.pairs if line.key[0] == top.key[0]]
    if delta > 0:
        new = [line for line in pairs if line.is_new and (line.cost_change or 0) > 0]
        if new:
            model = max(new, key=lambda line: line.cost_change or 0)
            day = figures.first_seen.get(model.key)
            when = f" on {day:%a}" if day else ""
            return f"{lead} moving to {model.key[2] or UNKNOWN_MODEL}{when}"
    model_line = _largest(pairs, delta)
    if model_line is not None and model_line.key[2]:
        return f"{lead}, mostly on {model_line.key[2]}"
    return lead


def _largest(lines: list[Line], delta: Decimal) -> Line | None:
    same_way = [line for line in lines if (line.cost_change or 0) * delta > 0]
    return max(same_way, key=lambda line: abs(line.cost_change or Decimal(0))) if same_way else None


def _finding_sentence(figures: WeekFigures) -> str:
    """The most severe finding of the week (regressions before drift at equal severity), with
    how many others there were: the findings section lists them all."""
    findings = figures.events.findings
    if not findings:
        return ""
    top = findings[0]
    what = "regression" if top.kind == "regression" else "drift finding"
    tz = zone(figures.week.timezone)
    if top.new_this_week:
        when = f"first seen {top.first_seen_at.astimezone(tz):%a}"
    else:
        when = f"open since {top.first_seen_at.astimezone(tz):%a %d %b}"
    if top.ended_at is not None:
        when += f", {top.status} {top.ended_at.astimezone(tz):%a}"
    title = top.title.rstrip(".")
    others = len(findings) - 1
    tail = f" ({plural(others, 'other finding')} below)" if others else ""
    return f"The most severe {what} of the week ({top.severity}, {when}): {title}{tail}."


def _self_hosted_sentence(figures: WeekFigures) -> str:
    split = figures.split
    change = ratio_change(split.self_hosted, split.previous_self_hosted)
    if split.self_hosted is None or change is None or abs(change) < STEADY_COST:
        return ""
    return f"Self-hosted (GPU) cost {_moved(change)} {size(change)} to {money(split.self_hosted)}."


def _volume_sentence(figures: WeekFigures) -> str:
    requests, before = figures.totals["requests"], figures.previous["requests"]
    volume = ratio_change(requests, before)
    unit = ratio_change(figures.totals["cost_per_1k_requests"], figures.previous["cost_per_1k_requests"])
    if volume is None or unit is None or (abs(volume) < STEADY_COST and abs(unit) < STEADY_COST):
        return ""
    return (
        f"Requests {_moved(volume)} {size(volume)} to {requests:,}, and cost per 1,000 requests "
        f"{_moved(unit)} {size(unit)} to {money(figures.totals['cost_per_1k_requests'])}."
    )


def _moved(change: float) -> str:
    return "rose" if change > 0 else "fell" if change < 0 else "held at"


def _latency_sentence(figures: WeekFigures) -> str:
    parts = []
    for metric, name in (("e2e_ms_p95", "p95 latency"), ("ttft_ms_p95", "p95 time to first token")):
        change = ratio_change(figures.totals[metric], figures.previous[metric])
        if change is not None and abs(change) >= LATENCY_NEWS:
            parts.append(f"{name} {_moved(change)} {size(change)} to {duration_ms(figures.totals[metric])}")
    if not parts:
        return ""
    text = "; ".join(parts) + "."
    return text[0].upper() + text[1:]


def _error_sentence(figures: WeekFigures) -> str:
    rate, before = figures.totals["error_rate"], figures.previous["error_rate"]
    if rate is None or before is None or abs(rate - before) < ERROR_RATE_NEWS:
        return ""
    return f"The error rate {_moved(rate - before)} from {percent(before, 1)} to {percent(rate, 1)}."


def _unpriced_sentence(figures: WeekFigures) -> str:
    unpriced, requests = figures.totals["cost_unknown_requests"] or 0, figures.totals["requests"]
    if not unpriced:
        return ""
    verb = "is" if unpriced == 1 else "are"
    return (
        f"{plural(unpriced, 'call')} ({percent(unpriced / requests, 1)}) had no known price and {verb} not in "
        "the cost figures: add their models on the Prices page."
    )


def _cache_sentence(figures: WeekFigures) -> str:
    saved = figures.totals["cache_savings_usd"]
    if not saved:
        return ""
    return (
        f"Prompt caching saved {money(saved)} "
        f"({percent(figures.totals['prompt_cache_hit_rate'])} of input tokens read from cache)."
    )
