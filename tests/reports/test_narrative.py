"""The "what changed" rules and the number formats, on figures made by hand (no database)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from apps.metrics.query import Scope
from apps.reports.figures import Line, WeekFigures
from apps.reports.formatting import duration_ms, money, signed_percent
from apps.reports.narrative import what_changed
from apps.reports.weeks import ReviewWeek

WEEK = ReviewWeek.parse("2026-W47")
QUIET = {"requests": 100, "cost_usd": Decimal("100"), "cost_per_1k_requests": Decimal("1000"), "e2e_ms_p95": 800.0,
         "ttft_ms_p95": 200.0, "error_rate": 0.01, "cost_unknown_requests": 0, "cache_savings_usd": Decimal(0),
         "prompt_cache_hit_rate": None}  # fmt: skip


def figures(totals: dict[str, Any], previous: dict[str, Any], features: list[Line] | None = None) -> WeekFigures:
    return WeekFigures(WEEK, Scope.everything(), {**QUIET, **totals}, {**QUIET, **previous}, features or [], [], [],
                       [], [])  # fmt: skip


def line(name: str, cost: str, before: str) -> Line:
    return Line((name,), name, Decimal(cost), Decimal(before), 10, 10, 0, "/")


def test_a_quiet_week_says_only_that_cost_held_steady() -> None:
    assert what_changed(figures({}, {})) == ["Cost held steady at $100 (0%)."]


def test_a_fall_names_the_feature_that_explains_it() -> None:
    lines = [line("search", "20", "55"), line("chat", "40", "45")]
    said = what_changed(figures({"cost_usd": Decimal("60")}, {}, lines))
    assert said[0] == "Cost fell 40% ($40.00) to $60.00, 88% of it from search."


def test_no_driver_is_named_when_the_change_is_spread_thin() -> None:
    lines = [line(f"f{n}", "12", "10") for n in range(10)]
    assert what_changed(figures({"cost_usd": Decimal("120")}, {}, lines))[0] == "Cost rose 20% ($20.00) to $120."


def test_unknown_cost_latency_and_errors_are_said_plainly() -> None:
    said = what_changed(
        figures({"cost_usd": None, "e2e_ms_p95": 1200.0, "error_rate": 0.05, "cost_unknown_requests": 100}, {})
    )
    assert said[0] == "No call this week had a price, so its cost is unknown."
    assert "P95 latency rose 50% to 1.20 s." in said
    assert "The error rate rose from 1.0% to 5.0%." in said
    assert any(sentence.startswith("100 calls (100.0%) had no known price and are not in") for sentence in said)


def test_formats() -> None:
    assert money(None) == "unknown" and money(Decimal("1210.4")) == "$1,210" and money(Decimal("0.0123")) == "$0.0123"
    assert money(Decimal("12.345")) == "$12.35" and money(Decimal(0)) == "$0.00"
    assert signed_percent(0.341) == "+34%" and signed_percent(-0.004) == "-0.4%" and signed_percent(None) == "new"
    assert duration_ms(812.4) == "812 ms" and duration_ms(2300) == "2.30 s" and duration_ms(None) == "unknown"
