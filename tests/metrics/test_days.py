"""Whole closed days merged once and kept (apps/metrics/days.py): the same numbers, and never
a stale one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine

from apps.accounts.models import Project
from apps.metrics.days import CACHE, whole_days
from apps.metrics.plan import plan_reads
from apps.metrics.query import Query, Scope, run_query
from apps.rollups.models import DirtyHour, RollupHour, mask
from tests.metrics.test_query import rollup
from tests.metrics.traffic import at

DAY = at("2026-02-02T00:00:00")
NOW = at("2026-02-20T10:30:00")
EVERYTHING = Scope.everything()
METRICS = ("requests", "e2e_ms_p50", "e2e_ms_p99")


@pytest.fixture
def project(db: None) -> Project:
    with time_machine.travel(NOW, tick=False):
        project = Project.objects.create(name="days")
        for hour in range(0, 72, 5):
            rollup(project, hour, 0, [100.0 + hour, 200.0, 300.0 * (1 + hour % 7)])
            rollup(project, hour, mask("tenant"), [100.0 + hour], tenant="acme")
            rollup(project, hour, mask("tenant"), [200.0, 300.0 * (1 + hour % 7)], tenant="globex")
    return project


@pytest.fixture
def now() -> Any:
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def test_only_whole_days_read_from_rollups_are_kept(project: Project, now: Any) -> None:
    plan = plan_reads(0, [project.pk], DAY + timedelta(hours=5), DAY + timedelta(days=3, hours=2), NOW)
    assert whole_days(plan) == {project.pk: [DAY + timedelta(days=1), DAY + timedelta(days=2)]}
    DirtyHour.objects.create(project=project, hour=DAY + timedelta(days=1, hours=7))
    plan = plan_reads(0, [project.pk], DAY, DAY + timedelta(days=3), NOW)
    assert whole_days(plan) == {project.pk: [DAY, DAY + timedelta(days=2)]}


@pytest.mark.parametrize(
    ("granularity", "group_by", "scope"),
    [("day", (), EVERYTHING), (None, ("tenant",), EVERYTHING), ("week", (), Scope(tenants=("globex",)))],
)
def test_a_kept_day_gives_the_numbers_the_hours_give(
    project: Project, now: Any, granularity: str | None, group_by: tuple[str, ...], scope: Scope
) -> None:
    query = Query(
        METRICS, DAY - timedelta(hours=3), DAY + timedelta(days=3), group_by=group_by, granularity=granularity
    )
    hourly = run_query(Query(METRICS, query.start, query.end, group_by=group_by, granularity="hour"), scope)
    first = run_query(query, scope)
    assert CACHE.hits == 0 and CACHE.misses > 0 and CACHE.entries
    second = run_query(query, scope)
    assert CACHE.hits > 0
    assert second.rows == first.rows
    CACHE.clear()
    assert run_query(query, scope).rows == first.rows
    assert sum(row["requests"] for row in first.rows) == sum(row["requests"] for row in hourly.rows) > 0


def test_a_kept_day_is_read_again_when_its_rows_change(project: Project, now: Any) -> None:
    query = Query(METRICS, DAY, DAY + timedelta(days=3), granularity="day")
    before = run_query(query, EVERYTHING)
    assert run_query(query, EVERYTHING).rows == before.rows and CACHE.hits

    # The runner replaces an hour: its rows are deleted and inserted (new ids).
    RollupHour.objects.filter(bucket=DAY + timedelta(hours=5), grouping=0).delete()
    rollup(project, 5, 0, [100_000.0] * 50)
    replaced = run_query(query, EVERYTHING)
    assert replaced.rows[0]["requests"] == before.rows[0]["requests"] - 3 + 50
    assert replaced.rows[0]["e2e_ms_p99"] > 90_000

    # An UPDATE in place (a new xmin) is seen too.
    RollupHour.objects.filter(bucket=DAY + timedelta(hours=10), grouping=0).update(
        e2e_ms_idx=[2000], e2e_ms_cnt=[500], requests=500
    )
    updated = run_query(query, EVERYTHING)
    assert updated.rows[0]["e2e_ms_p50_samples"] == replaced.rows[0]["e2e_ms_p50_samples"] - 3 + 500

    # A noted hour is read raw (no spans here: it counts nothing) and its day is not kept.
    DirtyHour.objects.create(project=project, hour=DAY + timedelta(hours=15))
    noted = run_query(query, EVERYTHING)
    assert noted.rows[0]["requests"] == updated.rows[0]["requests"] - 3
    assert noted.rows[1:] == updated.rows[1:]


def test_the_oldest_kept_days_go_first_past_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from apps.metrics import days

    monkeypatch.setattr(days, "MAX_PAIRS", 10)
    cache = days._Cache()
    four = {(): (np.arange(4), np.ones(4, dtype=np.int64))}
    shape = (0, (), ())
    for n in range(3):
        cache.put((1, DAY + timedelta(days=n), shape, "e2e_ms"), (n,), four)
    assert cache.pairs == 8 and cache.get((1, DAY, shape, "e2e_ms"), (0,)) is None
    assert cache.get((1, DAY + timedelta(days=1), shape, "e2e_ms"), (1,)) is not None
    assert cache.get((1, DAY + timedelta(days=1), shape, "e2e_ms"), (2,)) is None  # another version: not this entry


def test_every_write_to_a_days_rollup_rows_moves_its_version(project: Project, now: Any) -> None:
    """The triggers note each (project, UTC day) a statement touches, and compaction folds a
    day's notes into a fresh row: never back to a version seen before."""
    from apps.metrics.days import _versions
    from apps.rollups.models import DayChange
    from apps.rollups.runner import compact_day_changes

    days = [(project.pk, DAY + timedelta(days=n)) for n in range(3)]
    seen = [_versions(days)]
    assert set(seen[0]) == set(days)  # the fixture's inserts
    RollupHour.objects.filter(bucket=DAY + timedelta(days=1, hours=6), grouping=0).update(requests=7)
    seen.append(_versions(days))
    assert seen[1][days[1]] != seen[0][days[1]]
    assert seen[1][days[0]] == seen[0][days[0]] and seen[1][days[2]] == seen[0][days[2]]
    RollupHour.objects.filter(bucket=DAY + timedelta(days=2, hours=2)).delete()
    seen.append(_versions(days))
    assert seen[2][days[2]] != seen[1][days[2]]

    assert compact_day_changes() >= 2
    assert DayChange.objects.filter(project_id=project.pk).count() == 3
    seen.append(_versions(days))
    for pair in days:
        assert seen[3][pair] not in [earlier[pair] for earlier in seen[:3]]
    assert compact_day_changes() == 0 and _versions(days) == seen[3]


def test_partial_days_are_read_hour_by_hour_and_only_around_the_whole_days(project: Project, now: Any) -> None:
    from apps.metrics.days import kept_days, residual_plans

    plan = plan_reads(0, [project.pk], DAY + timedelta(hours=5), DAY + timedelta(days=3, hours=2), NOW)
    kept = kept_days(plan)
    assert kept == [(project.pk, DAY + timedelta(days=1)), (project.pk, DAY + timedelta(days=2))]
    stretches = [(piece.rollup_start, piece.rollup_end) for piece in residual_plans(plan, kept)]
    assert stretches == [
        (DAY + timedelta(hours=5), DAY + timedelta(days=1)),
        (DAY + timedelta(days=3), DAY + timedelta(days=3, hours=2)),
    ]
    assert residual_plans(plan, []) == [plan]
