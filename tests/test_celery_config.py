"""The Celery wiring: every periodic task names a task a worker knows, goes to a queue that a
worker consumes, and expires before its triggers can pile up. A typo in a task name or a
route otherwise shows up only as a queue that silently never drains."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery.schedules import crontab, schedule
from django.conf import settings

from observatory.celery import app

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


@pytest.fixture(scope="module", autouse=True)
def _tasks_discovered() -> None:
    # What a worker does at start-up: import every app's tasks.py (and run Django's checks).
    app.loader.import_default_modules()


def _our_tasks() -> list[str]:
    return sorted(name for name in app.tasks if not name.startswith("celery."))


def _declared_queues() -> set[str]:
    return set(app.amqp.queues)


def _explicit_route(task_name: str) -> str | None:
    """The queue a CELERY_TASK_ROUTES entry sends this task to; None when it has no route."""
    for router in app.amqp.routes:
        route = router(task_name)
        if route:
            return str(route["queue"])
    return None


def _period(entry_schedule: Any) -> timedelta:
    """The shortest time between two runs of a beat schedule."""
    if isinstance(entry_schedule, timedelta):
        return entry_schedule
    if isinstance(entry_schedule, crontab):
        runs, moment = [], datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, for weekly entries
        for _ in range(10):
            last, delta, _now = entry_schedule.remaining_delta(moment)
            moment = last + delta
            runs.append(moment)
        return min(later - earlier for earlier, later in pairwise(runs))
    if isinstance(entry_schedule, schedule):
        return entry_schedule.run_every
    raise AssertionError(f"unexpected schedule type {type(entry_schedule).__name__}")


BEAT = sorted(app.conf.beat_schedule.items())


def test_the_schedule_has_the_partition_maintenance_and_the_rollup_sweep() -> None:
    tasks = {entry["task"] for _, entry in BEAT}
    assert {"telemetry.maintain_partitions", "rollups.rollup_pending"} <= tasks
    rollup = next(entry for _, entry in BEAT if entry["task"] == "rollups.rollup_pending")
    assert _period(rollup["schedule"]) == timedelta(seconds=15)


@pytest.mark.parametrize(("name", "entry"), BEAT, ids=[name for name, _ in BEAT])
def test_periodic_task_is_known_routed_and_expires(name: str, entry: dict[str, Any]) -> None:
    assert entry["task"] in app.tasks, f"{name}: no registered task {entry['task']!r} (a tasks.py not discovered?)"
    queue = _explicit_route(entry["task"])
    assert queue is not None, f"{name}: {entry['task']} has no route in CELERY_TASK_ROUTES"
    assert queue in _declared_queues()
    expires = entry.get("options", {}).get("expires")
    assert isinstance(expires, int | float) and expires > 0, f"{name}: no `expires` (seconds) in its options"
    # A trigger older than a few periods is superseded by the newer ones behind it.
    assert expires <= 4 * _period(entry["schedule"]).total_seconds(), f"{name}: expires after {expires}s"
    assert name != entry["task"], "the entry name should say what it does and how often"


def test_hourly_and_daily_entries_start_at_different_minutes() -> None:
    minutes = [tuple(sorted(entry["schedule"].minute)) for _, entry in BEAT if isinstance(entry["schedule"], crontab)]
    assert len(minutes) == len(set(minutes)), f"crontab entries share a minute: {minutes}"


def test_every_task_has_a_route_to_a_declared_queue() -> None:
    # Nothing of ours relies on the default queue: each kind of work scales on its own.
    assert _our_tasks(), "no tasks discovered"
    for task_name in _our_tasks():
        queue = _explicit_route(task_name)
        assert queue in _declared_queues(), f"{task_name} is routed to {queue!r}"


@pytest.mark.parametrize(
    ("task_name", "queue"),
    [
        ("telemetry.maintain_partitions", "ingest"),
        ("rollups.rollup_pending", "rollups"),
        ("alerts.evaluate_rules", "alerts"),
        ("reports.send_weekly_review", "email"),
    ],
)
def test_routes_by_task_name_prefix(task_name: str, queue: str) -> None:
    assert app.amqp.router.route({}, task_name)["queue"].name == queue


def test_a_route_to_an_undeclared_queue_fails_when_sent() -> None:
    from celery.exceptions import QueueNotFound

    assert settings.CELERY_TASK_CREATE_MISSING_QUEUES is False
    with pytest.raises(QueueNotFound):
        app.amqp.router.route({"queue": "rollup"}, "rollups.rollup_pending")


def test_rollups_acknowledge_late_one_message_at_a_time() -> None:
    assert app.tasks["rollups.rollup_pending"].acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_connection_retry_on_startup is True


def test_time_limits() -> None:
    soft, hard = app.conf.task_soft_time_limit, app.conf.task_time_limit
    assert soft and hard and soft < hard, "the soft limit must leave the task time to clean up"


def test_the_compose_worker_consumes_every_queue() -> None:
    command = yaml.safe_load(COMPOSE.read_text())["services"]["worker"]["command"]
    queues = command[command.index("-Q") + 1].split(",")
    assert set(queues) == _declared_queues(), f"docker-compose worker consumes {queues}"
