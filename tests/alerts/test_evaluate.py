"""Rule evaluation on stored spans: levels, minimum samples, groups, budgets (unknown cost is
never 0), cache drops, findings, and one query per shape whatever the number of rules."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from apps.accounts.models import Project
from apps.alerts import evaluate as evaluate_module
from apps.alerts.evaluate import budget_forecast, judge, shape_of
from apps.alerts.models import AlertRule, AlertState, Notification
from apps.alerts.services import claim_due_rules, evaluate_rules
from apps.insights.models import Finding
from apps.metrics import query as query_module
from tests.alerts.conftest import NOW, store_calls

pytestmark = pytest.mark.django_db


def latency_rule(**fields: Any) -> AlertRule:
    defaults: dict[str, Any] = {
        "name": "checkout p99",
        "kind": AlertRule.Kind.LATENCY,
        "features": ["checkout"],
        "percentile": "99",
        "window_minutes": 15,
        "warning_threshold": 5000,
        "critical_threshold": 8000,
        "min_samples": 20,
    }
    return AlertRule.objects.create(**{**defaults, **fields})


@time_machine.travel(NOW, tick=False)
def test_p99_above_the_critical_level_fires_critical(project: Project) -> None:
    store_calls(project, [1000.0] * 90 + [9500.0] * 10)
    rule = latency_rule()
    cycle, notifications = evaluate_rules([rule], NOW)
    [verdict] = cycle.verdicts[rule.pk]
    assert verdict.level == "critical" and verdict.samples == 100
    assert verdict.value == pytest.approx(9500, rel=0.01)
    [notification] = notifications
    assert notification.event == "fired" and notification.level == "critical"
    assert notification.details["samples"] == 100
    state = AlertState.objects.get(rule=rule)
    assert state.level == "critical" and state.episode == 1


@time_machine.travel(NOW, tick=False)
def test_a_window_with_few_calls_cannot_page_anyone(project: Project) -> None:
    store_calls(project, [30_000.0] * 3)  # three very slow calls
    rule = latency_rule()
    cycle, notifications = evaluate_rules([rule], NOW)
    [verdict] = cycle.verdicts[rule.pk]
    assert verdict.level is None and "too few samples" in verdict.summary
    assert notifications == [] and not AlertState.objects.exists()
    # The same calls with a minimum of 3 do fire: the minimum is what held it back.
    rule.min_samples = 3
    rule.save()
    assert evaluate_rules([rule], NOW)[1][0].level == "critical"


@time_machine.travel(NOW, tick=False)
def test_calls_outside_the_window_or_the_slice_do_not_count(project: Project) -> None:
    store_calls(project, [9000.0] * 30, end=NOW - timedelta(minutes=20))  # before the 15-min window
    store_calls(project, [9000.0] * 30, feature="search")  # another feature
    store_calls(project, [100.0] * 30)
    rule = latency_rule()
    [verdict] = judge([rule], NOW).verdicts[rule.pk]
    assert verdict.level == "ok" and verdict.samples == 30


@time_machine.travel(NOW, tick=False)
def test_error_rate_per_tenant_fires_only_for_the_failing_tenant(project: Project) -> None:
    store_calls(project, [200.0] * 40, tenant="acme", errors=10)  # 25%
    store_calls(project, [200.0] * 40, tenant="globex", errors=1)  # 2.5%
    rule = AlertRule.objects.create(
        name="errors per tenant",
        kind=AlertRule.Kind.ERROR_RATE,
        group_by=["tenant"],
        warning_threshold=0.05,
        critical_threshold=0.2,
        min_samples=20,
    )
    cycle, notifications = evaluate_rules([rule], NOW)
    levels = {verdict.group["tenant"]: verdict.level for verdict in cycle.verdicts[rule.pk]}
    assert levels == {"acme": "critical", "globex": "ok"}
    [notification] = notifications
    assert notification.tenant == "acme" and "tenant acme" in notification.title


@time_machine.travel(NOW, tick=False)
def test_ttft_and_queue_rules_read_their_own_distribution(project: Project) -> None:
    store_calls(project, [500.0] * 30)
    rule = latency_rule(distribution="ttft_ms", min_samples=1)
    [verdict] = judge([rule], NOW).verdicts[rule.pk]
    assert verdict.samples == 0 and verdict.level is None  # the calls report no TTFT


def test_two_hundred_rules_of_one_shape_cost_one_query(
    project: Project, monkeypatch: pytest.MonkeyPatch, django_assert_max_num_queries: Any
) -> None:
    with time_machine.travel(NOW, tick=False):
        store_calls(project, [1000.0] * 50, feature="checkout")
        store_calls(project, [9000.0] * 50, feature="search")
        rules = [
            latency_rule(
                name=f"rule {index}",
                features=["checkout" if index % 2 else "search"],
                percentile=("99", "95", "50")[index % 3],
                critical_threshold=8000 + index,
            )
            for index in range(200)
        ]
        assert len({shape_of(rule) for rule in rules}) == 1
        calls: list[Any] = []
        real = query_module.run_query

        def counting(query: Any, scope: Any, **kwargs: Any) -> Any:
            calls.append(query)
            return real(query, scope, **kwargs)

        monkeypatch.setattr(evaluate_module, "run_query", counting)
        with django_assert_max_num_queries(12):
            cycle = judge(rules, NOW)
        assert len(calls) == 1 and cycle.queries == 1 and cycle.shapes == 1
        assert calls[0].group_by == ("feature",) and set(calls[0].filters.features) == {"checkout", "search"}
        levels = {rule.pk: cycle.verdicts[rule.pk][0].level for rule in rules}
        # search's calls are all 9000 ms: its p50/p95/p99 rules fire; checkout's never do.
        assert all(levels[rule.pk] == ("ok" if rule.features == ["checkout"] else "critical") for rule in rules)
        # A second shape (another window) is one more query, not one per rule.
        rules.append(latency_rule(name="longer", window_minutes=60))
        calls.clear()
        judge(rules, NOW)
        assert len(calls) == 2


@time_machine.travel(NOW, tick=False)
def test_a_rule_filtering_two_values_is_judged_on_their_merged_slice(project: Project) -> None:
    store_calls(project, [1000.0] * 50, feature="checkout")
    store_calls(project, [9000.0] * 50, feature="search")
    rule = latency_rule(features=["checkout", "search"], percentile="50", critical_threshold=4000)
    [verdict] = judge([rule], NOW).verdicts[rule.pk]
    assert verdict.samples == 100
    assert 1000 <= verdict.value <= 9000  # the median of both features' calls, not either one's


def test_budget_with_unknown_cost_never_fires_as_zero(project: Project) -> None:
    with time_machine.travel(NOW, tick=False):
        store_calls(project, [300.0] * 30, cost_usd=None)  # no price: unknown cost
        rule = AlertRule.objects.create(
            name="acme budget",
            kind=AlertRule.Kind.BUDGET,
            tenants=["acme"],
            critical_threshold=0.0,
            budget_period="month",
            min_samples=1,
        )
        cycle, notifications = evaluate_rules([rule], NOW)
    [verdict] = cycle.verdicts[rule.pk]
    assert verdict.level is None and verdict.value is None
    assert "unknown (30 unpriced calls)" in verdict.summary
    assert notifications == []


def test_budget_forecast_names_the_day_the_budget_is_gone(project: Project) -> None:
    # 19 days and 10.5 hours into November, $80 spent of $100: at this pace it is gone on the 25th.
    now = NOW  # 2026-11-20 10:30
    with time_machine.travel(now, tick=False):
        store_calls(project, [300.0] * 40, cost_usd=Decimal("2"))  # $80
        store_calls(project, [300.0] * 10, cost_usd=None)  # unpriced calls travel with it
        rule = AlertRule.objects.create(
            name="acme October",
            kind=AlertRule.Kind.BUDGET,
            tenants=["acme"],
            critical_threshold=100.0,
            budget_period="month",
            min_samples=10,
        )
        cycle, notifications = evaluate_rules([rule], now)
    [verdict] = cycle.verdicts[rule.pk]
    start = now.replace(day=1, hour=0, minute=0)
    elapsed = (now - start).total_seconds()
    gone = start + timedelta(seconds=100 / 80 * elapsed)
    assert verdict.level == "warning"  # $80 spent, forecast past $100
    assert f"gone on {gone:%b %d}" in verdict.summary and "+ 10 unpriced calls" in verdict.summary
    [notification] = notifications
    assert notification.details["cost_unknown_requests"] == 10
    assert notification.details["spent_usd"] == "80.0000000000"


def test_budget_forecast_is_linear_over_the_elapsed_part() -> None:
    start = NOW.replace(day=1, hour=0, minute=0)
    end = start.replace(month=12)
    now = start + timedelta(days=10)
    pace = budget_forecast(Decimal(100), start, end, now, Decimal(200))
    assert pace["forecast"] == Decimal(300)
    assert pace["exhausted_at"] == start + timedelta(days=20)
    assert budget_forecast(Decimal(10), start, end, now, Decimal(200))["exhausted_at"] is None
    # A tiny spend against a huge budget: the moment would lie past year 9999 (it raised
    # OverflowError, which stopped the whole evaluation cycle).
    tiny = budget_forecast(Decimal("0.0000000001"), start, end, now, Decimal(10**9))
    assert tiny["exhausted_at"] is None and tiny["forecast"] > 0


def test_cache_hit_rate_drop_against_the_same_window_a_week_earlier(project: Project) -> None:
    with time_machine.travel(NOW, tick=False):
        store_calls(project, [300.0] * 30, cache_read_tokens=800, end=NOW - timedelta(days=7))  # 80%
        store_calls(project, [300.0] * 30, cache_read_tokens=200)  # 20%
        rule = AlertRule.objects.create(
            name="cache",
            kind=AlertRule.Kind.CACHE_DROP,
            features=["checkout"],
            warning_threshold=10,
            critical_threshold=40,
            min_samples=20,
        )
        [verdict] = judge([rule], NOW).verdicts[rule.pk]
    assert verdict.value == pytest.approx(60.0)
    assert verdict.level == "critical" and "a week earlier" in verdict.summary


def test_open_drift_finding_fires_and_resolves_when_it_closes(project: Project) -> None:
    finding = Finding.objects.create(
        project=project,
        kind="drift",
        metric="output_tokens",
        slice={"feature": "checkout", "model": "gpt-4o"},
        tenant="acme",
        signature="drift:output_tokens:checkout",
        severity="critical",
        title="Output length drifted",
    )
    Finding.objects.create(
        project=project,
        kind="drift",
        metric="x",
        slice={"feature": "search"},
        tenant="acme",
        signature="drift:x:search",
        severity="critical",
        title="Not in the slice",
    )
    rule = AlertRule.objects.create(
        name="drift", kind=AlertRule.Kind.DRIFT, features=["checkout"], min_severity="warning"
    )
    _, notifications = evaluate_rules([rule], NOW)
    [fired] = notifications
    assert fired.level == "critical" and "Output length drifted" in fired.title and fired.tenant == "acme"
    finding.status = Finding.Status.RESOLVED
    finding.save()
    _, notifications = evaluate_rules([rule], NOW + timedelta(minutes=1))
    assert [n.event for n in notifications] == ["resolved"]


def test_due_rules_are_claimed_once(project: Project) -> None:
    rules = [latency_rule(name=f"r{index}", next_evaluation_at=NOW - timedelta(seconds=1)) for index in range(3)]
    latency_rule(name="later", next_evaluation_at=NOW + timedelta(minutes=5))
    AlertRule.objects.create(
        name="off", kind="latency", critical_threshold=1, enabled=False, next_evaluation_at=NOW - timedelta(hours=1)
    )
    assert claim_due_rules(NOW) == [rule.pk for rule in rules]
    assert claim_due_rules(NOW) == []  # moved one interval on
    assert claim_due_rules(NOW + timedelta(seconds=28)) == [rule.pk for rule in rules]  # 30 s less 2
    assert Notification.objects.count() == 0


@time_machine.travel(NOW, tick=False)
def test_a_rule_that_cannot_be_judged_does_not_stop_the_others(
    project: Project, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A defect in one rule's verdict (injected here: the budget verdict raises) is logged
    and leaves that rule as it was; every other rule of the cycle is judged and notified."""
    store_calls(project, [1000.0] * 90 + [9500.0] * 10)
    budget = AlertRule.objects.create(
        name="broken budget", kind=AlertRule.Kind.BUDGET, critical_threshold=100.0, budget_period="month"
    )
    latency = latency_rule()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(evaluate_module, "_budget_verdict", broken)
    cycle, notifications = evaluate_rules([budget, latency], NOW)
    assert budget.pk not in cycle.verdicts
    assert [n.rule_id for n in notifications] == [latency.pk]
    assert not AlertState.objects.filter(rule=budget).exclude(level="ok").exists()
    assert any("could not be judged" in r.getMessage() and r.exc_info for r in caplog.records)
