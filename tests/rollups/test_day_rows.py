"""Day rows (RollupDay): each closed day's hour rows added up exactly, rebuilt with the hours,
and never served stale while a write to its hours is not yet in them."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import time_machine
from django.db import connection

from apps.accounts.models import Project
from apps.metrics.days import CACHE, kept_days
from apps.metrics.plan import plan_reads
from apps.metrics.query import Query, Scope, run_query
from apps.rollups.day_rows import rebuild_stale_days, stale_days
from apps.rollups.models import DIMENSIONS, DISTRIBUTIONS, GROUPING_SETS, DayChange, RollupDay, RollupHour
from apps.rollups.runner import recompute_hours, rollup_range
from bench._spans import DEFAULT_START, load_spans
from tests.rollups.test_consistency import ADDITIVE, _sketch

DAY = DEFAULT_START
AFTER = DAY + timedelta(days=2, hours=3)  # "now": the generated day is closed


@pytest.fixture
def generated(project: Project, price_catalog: None) -> Project:
    """A day of generated traffic (bench/_spans.py), committed: load_spans writes with COPY."""
    connection.ensure_connection()
    load_spans(connection.connection, 4000, days=1, seed=11, project_ids=(project.pk,))
    return project


def _identity(row: Any) -> tuple[Any, ...]:
    return (row.grouping, *(getattr(row, name) for name in DIMENSIONS))


def _assert_days_add_up(project_id: int) -> int:
    """Every day row equals its hour rows added up; every hour row has its day row."""
    want: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: {"sketches": defaultdict(Counter), "errors_by_type": Counter(), "generation_ms": 0.0}
    )
    for row in RollupHour.objects.filter(project_id=project_id, bucket__gte=DAY, bucket__lt=DAY + timedelta(days=1)):
        target = want[_identity(row)]
        for name in ADDITIVE:
            target[name] = target.get(name, 0) + getattr(row, name)
        target["errors_by_type"].update(row.errors_by_type)
        target["generation_ms"] += row.generation_ms
        for name in DISTRIBUTIONS:
            target["sketches"][name].update(_sketch(row, name))
    days = {_identity(row): row for row in RollupDay.objects.filter(project_id=project_id, bucket=DAY)}
    assert set(days) == set(want)
    assert {key[0] for key in days} == set(GROUPING_SETS)
    for key, expected in want.items():
        row = days[key]
        for name in ADDITIVE:
            assert getattr(row, name) == expected[name], (key, name)
        assert row.errors_by_type == dict(expected["errors_by_type"]), key
        assert row.generation_ms == pytest.approx(expected["generation_ms"])
        for name in DISTRIBUTIONS:
            assert _sketch(row, name) == expected["sketches"][name], (key, name)
    return len(days)


@pytest.mark.django_db(transaction=True)
def test_day_rows_add_up_their_hours_after_a_range_and_after_noted_hours(generated: Project) -> None:
    with time_machine.travel(AFTER, tick=False):
        rollup_range(DAY, DAY + timedelta(days=1))
        assert not stale_days([generated.pk], DAY, DAY + timedelta(days=1))  # built in the range's transaction
        assert _assert_days_add_up(generated.pk) > 100

        # Hours recomputed (late data, re-pricing): the day is rebuilt after them.
        recompute_hours(generated.pk, [DAY + timedelta(hours=n) for n in (3, 4, 17)])
        assert not stale_days([generated.pk], DAY, DAY + timedelta(days=1))
        _assert_days_add_up(generated.pk)

        # The query layer reads the whole day from them, with the hours' numbers.
        metrics = ("requests", "cost_usd", "errors_by_type", "e2e_ms_p50", "e2e_ms_p99", "ttft_ms_p95")
        query = Query(metrics, DAY, DAY + timedelta(days=1), group_by=("feature",), granularity="day")
        assert kept_days(plan_reads(0, [generated.pk], query.start, query.end, AFTER)) == [(generated.pk, DAY)]
        from_days = run_query(query, Scope.everything())
        by_hour = run_query(Query(metrics, query.start, query.end, group_by=("feature",), granularity="hour"),
                            Scope.everything())  # fmt: skip
        assert sum(row["requests"] for row in from_days.rows) == sum(row["requests"] for row in by_hour.rows) > 1000
        RollupDay.objects.all().delete()  # not noted: the triggers are on the hour rows
        CACHE.clear()
        assert all(row["requests"] == 0 for row in run_query(query, Scope.everything()).rows)


@pytest.mark.django_db(transaction=True)
def test_an_open_day_is_built_by_the_sweep_once_it_closes(generated: Project) -> None:
    with time_machine.travel(DAY + timedelta(hours=23, minutes=30), tick=False):
        rollup_range(DAY, DAY + timedelta(hours=23))
        assert not RollupDay.objects.exists()
        assert stale_days([generated.pk], DAY, DAY + timedelta(days=1)) == {(generated.pk, DAY)}
    with time_machine.travel(DAY + timedelta(days=1, minutes=1), tick=False):
        rollup_range(DAY + timedelta(hours=23), DAY + timedelta(days=1))
        assert rebuild_stale_days() == [] and _assert_days_add_up(generated.pk)  # the range built it


@pytest.mark.django_db(transaction=True)
def test_a_write_committed_during_a_rebuild_keeps_the_day_stale(generated: Project) -> None:
    """A writer replaces an hour's rows and commits after the rebuild has read the day's notes:
    the rebuild did not see its rows, so its note survives and the day is read by the hour."""
    with time_machine.travel(AFTER, tick=False):
        rollup_range(DAY, DAY + timedelta(days=1))
    settings = connection.settings_dict
    writer = psycopg.connect(dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"],
                             port=settings["PORT"] or 5432, password=settings["PASSWORD"] or None)  # fmt: skip
    try:
        writer.execute(
            "UPDATE rollups_rolluphour SET requests = requests + 1000 WHERE project_id = %s AND grouping = 0"
            " AND bucket = %s",
            [generated.pk, DAY + timedelta(hours=6)],
        )
        # The rebuild runs while the write is uncommitted (it does not wait for it: no lock).
        rebuilt: list[Any] = []
        thread = threading.Thread(target=lambda: rebuilt.append(_rebuild_everything()))
        with connection.cursor() as cur:
            cur.execute("INSERT INTO rollups_daychange (project_id, day) VALUES (%s, %s)", [generated.pk, DAY])
        thread.start()
        thread.join(60)
        assert rebuilt == [[DAY]]
        writer.commit()
    finally:
        writer.close()
    assert stale_days([generated.pk], DAY, DAY + timedelta(days=1)) == {(generated.pk, DAY)}
    query = Query(("requests",), DAY, DAY + timedelta(days=1))
    with time_machine.travel(AFTER, tick=False):
        total = run_query(query, Scope.everything()).rows[0]["requests"]
        day_row = RollupDay.objects.get(project_id=generated.pk, grouping=0, bucket=DAY)
        assert total == day_row.requests + 1000  # read by the hour: the write counts
        assert rebuild_stale_days() == [DAY]
        assert run_query(query, Scope.everything()).rows[0]["requests"] == total
    _assert_days_add_up(generated.pk)
    assert not DayChange.objects.exists()


def _rebuild_everything() -> list[Any]:
    from django.db import connections

    try:
        return rebuild_stale_days(AFTER)
    finally:
        connections.close_all()
