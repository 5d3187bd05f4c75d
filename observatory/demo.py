"""The demo's Django-side steps: its alerting, and settling a freshly loaded history.

`manage.py demo_setup` calls `seed_demo_alerting` (an email channel to the demo user, whose
mail the launcher's SMTP sink keeps, and rules the demo's incidents trip:
collectors/simulator/demo.py has the schedule). After the backfill, `manage.py demo_settle`
runs `settle()`: wait for the rollups, let the GPU cost attribution catch up, run the
detectors and the alert rules once, and send the demo user the last week's review. Every
step logs its outcome and a failing step never stops the others: the demo starts regardless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

DEMO_EMAIL = "demo@localhost"
CHANNEL_NAME = "Demo mailbox"


def seed_demo_alerting(project: Any, user: Any) -> list[Any]:
    """The demo's email channel and rules; idempotent by name, so every start may call it.

    Thresholds are set against the simulated traffic at the demo's volume (3,000 requests a
    day) and checked by tests/insights/test_acceptance.py: on stable traffic search-rerank's
    p99 over six hours reaches ~6.4 s in the afternoon (a p99 of ~200 calls is nearly their
    maximum) and more at night on fewer calls, so the rule needs 150 calls and warns at 7.5 s;
    the regression lifts it past 8 s. globex spends ~$20 on a weekday (forecast at most ~$24
    during the day), and the cost spike of its code-review adds ~$20 in four hours: a $30
    daily budget stays quiet on ordinary days and trips on the spike's day (a monthly budget
    either fired at the ordinary pace or missed a four-hour spike).
    """
    from apps.alerts.models import AlertRule, Channel

    if not user.email:
        user.email = DEMO_EMAIL
        user.save(update_fields=["email"])
    channel, _ = Channel.objects.get_or_create(
        name=CHANNEL_NAME, defaults={"kind": Channel.Kind.EMAIL, "config": {"to": [user.email]}, "owner": user}
    )
    Kind = AlertRule.Kind
    wanted: list[dict[str, Any]] = [
        {"name": "search-rerank p99 latency", "kind": Kind.LATENCY, "features": ["search-rerank"],
         "percentile": "99", "window_minutes": 360, "warning_threshold": 7500.0, "critical_threshold": 15000.0,
         "min_samples": 150},
        {"name": "Drift at warning or above", "kind": Kind.DRIFT, "min_severity": "warning"},
        {"name": "Regressions", "kind": Kind.REGRESSION, "min_severity": "warning"},
        {"name": "globex daily budget", "kind": Kind.BUDGET, "tenants": ["globex"],
         "budget_period": AlertRule.Period.DAY, "critical_threshold": 30.0},
        {"name": "acme prompt-cache hit rate", "kind": Kind.CACHE_DROP, "tenants": ["acme"], "window_minutes": 360,
         "warning_threshold": 5.0, "critical_threshold": 10.0, "min_samples": 50},
    ]  # fmt: skip
    rules = []
    with transaction.atomic():
        for fields in wanted:
            rule = AlertRule.objects.filter(name=fields["name"], project=project).first()
            if rule is None:
                rule = AlertRule(project=project, created_by=user, **fields)
                rule.full_clean()
                rule.save()
                rule.channels.add(channel)
            rules.append(rule)
    return rules


def wait_for_rollups(timeout_s: float = 300, poll_s: float = 2.0) -> int:
    """Roll up noted hours (beside the Celery worker: hours are locked, never done twice) until
    none is left or `timeout_s` passes; returns the notes left."""
    from apps.rollups.models import DirtyHour
    from apps.rollups.runner import rollup_pending

    deadline = time.monotonic() + timeout_s
    while True:
        left = DirtyHour.objects.count()
        if not left or time.monotonic() >= deadline:
            return left
        if not rollup_pending(limit=20):
            time.sleep(poll_s)  # the worker holds what is left


def attribute_gpu_costs(budget_s: float = 90, poll_s: float = 2.0, restart: bool = False) -> str:
    """Drive the gpu.attribute_costs sweep until every project's attribution is within one
    sweep of now or `budget_s` passes (beat's sweep carries on from there).

    `restart` (right after a backfill): beat's sweep ran during the backfill and passed
    intervals whose spans had not arrived yet, and late spans older than
    GPU_LATE_LOOKBACK_HOURS are not looked for; dropping the cursors makes the sweep start
    again at each project's first GPU sample and attribute the whole history."""
    from apps.gpu.models import AttributionCursor
    from apps.gpu.sweep import sweep

    if restart:
        AttributionCursor.objects.all().delete()
    deadline = time.monotonic() + budget_s
    behind = timedelta(seconds=settings.GPU_COST_GRACE_SECONDS + 2 * settings.GPU_COST_INTERVAL_SECONDS)
    intervals = 0
    while True:
        results = sweep()
        intervals += sum(result.due + result.late for result in results)
        cursors = list(AttributionCursor.objects.all())
        oldest = min((cursor.computed_until for cursor in cursors), default=None)
        caught_up = oldest is not None and oldest >= datetime.now(UTC) - behind
        if caught_up or time.monotonic() >= deadline:
            where = "no GPU samples" if oldest is None else f"attributed up to {oldest:%Y-%m-%d %H:%M} UTC"
            rest = "" if caught_up or oldest is None else "; beat's gpu.attribute_costs sweep does the rest"
            return f"{intervals} intervals, {where}{rest}"
        if all(result.skipped for result in results):
            time.sleep(poll_s)  # the worker's sweep holds the lease


def detect_insights() -> str:
    from apps.insights.tasks import detect_all

    return ", ".join(f"{family}: {count}" for family, count in detect_all().items()) + " open findings"


def evaluate_alerts() -> str:
    from apps.alerts.models import AlertRule, AlertState
    from apps.alerts.services import evaluate_rules

    rules = list(AlertRule.objects.filter(enabled=True))
    _, notifications = evaluate_rules(rules, datetime.now(UTC))
    firing = AlertState.objects.exclude(level="ok").count()
    return f"{len(rules)} rules, {len(notifications)} notifications, {firing} alerts open"


def send_review() -> str:
    from apps.reports.demo import send_demo_review

    return send_demo_review()


def settle(
    rollup_timeout_s: float = 300,
    gpu_budget_s: float = 90,
    say: Callable[[str], None] = print,
    after_backfill: bool = False,
) -> dict[str, bool]:
    """Every post-backfill step in order; returns which succeeded. A failure is logged and said,
    and the next step runs anyway."""
    steps: list[tuple[str, Callable[[], str]]] = [
        ("rollups", lambda: f"{wait_for_rollups(rollup_timeout_s)} hours still noted"),
        ("GPU cost attribution", lambda: attribute_gpu_costs(gpu_budget_s, restart=after_backfill)),
        # Attribution notes the hours whose spans it priced: roll them up before anything reads.
        ("rollups of attributed costs", lambda: f"{wait_for_rollups(rollup_timeout_s)} hours still noted"),
        ("insights", detect_insights),
        ("alert rules", evaluate_alerts),
        ("weekly review", send_review),
    ]
    done: dict[str, bool] = {}
    for name, step in steps:
        started = time.monotonic()
        try:
            outcome = step()
        except Exception as exc:
            log.exception("demo step %s failed", name)
            say(f"{name}: failed ({type(exc).__name__}: {exc}); the demo starts anyway")
            done[name] = False
            continue
        say(f"{name}: {outcome} ({time.monotonic() - started:.1f} s)")
        done[name] = True
    return done
