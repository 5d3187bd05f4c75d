"""Whole closed days read from their day rows (apps/metrics/days.py, apps/rollups/day_rows.py):
the same numbers as their hours, and never a stale one."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from apps.accounts.models import Project
from apps.metrics.days import CACHE, kept_days, whole_days
from apps.metrics.plan import plan_reads
from apps.metrics.query import Query, Scope, run_query
from apps.rollups.day_rows import rebuild_stale_days
from apps.rollups.models import DayChange, DirtyHour, RollupDay, RollupHour, mask
from tests.metrics.test_query import rollup
from tests.metrics.traffic import at

DAY = at("2026-02-02T00:00:00")
ONE_DAY = timedelta(days=1)
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
def test_day_rows_give_the_numbers_the_hours_give(
    project: Project, now: Any, granularity: str | None, group_by: tuple[str, ...], scope: Scope
) -> None:
    query = Query(
        METRICS, DAY - timedelta(hours=3), DAY + timedelta(days=3), group_by=group_by, granularity=granularity
    )
    plan = plan_reads(0, [project.pk], query.start, query.end, NOW)
    hourly = run_query(Query(METRICS, query.start, query.end, group_by=group_by, granularity="hour"), scope)
    # The fixture wrote hour rows: their days are noted, so read by the hour.
    assert kept_days(plan) == [] and not RollupDay.objects.exists()
    by_the_hour = run_query(query, scope)

    assert rebuild_stale_days(NOW) == [DAY + timedelta(days=n) for n in range(3)]
    assert kept_days(plan) == [(project.pk, DAY + timedelta(days=n)) for n in range(3)]
    assert RollupDay.objects.filter(project=project, grouping=0).count() == 3
    from_days = run_query(query, scope)
    assert from_days.rows == by_the_hour.rows
    # Kept in the process under the days' builds: the same numbers without reading day rows.
    assert CACHE.hits == 0 and CACHE.misses > 0 and CACHE.entries
    assert run_query(query, scope).rows == from_days.rows and CACHE.hits > 0
    assert sum(row["requests"] for row in from_days.rows) == sum(row["requests"] for row in hourly.rows) > 0


def test_a_day_is_read_by_the_hour_while_its_day_rows_are_stale(project: Project, now: Any) -> None:
    query = Query(METRICS, DAY, DAY + timedelta(days=3), granularity="day")
    rebuild_stale_days(NOW)
    before = run_query(query, EVERYTHING)
    plan = plan_reads(0, [project.pk], query.start, query.end, NOW)
    assert len(kept_days(plan)) == 3

    # Hour rows replaced (deleted and inserted) by any writer: the day is stale at once.
    RollupHour.objects.filter(bucket=DAY + timedelta(hours=5), grouping=0).delete()
    rollup(project, 5, 0, [100_000.0] * 50)
    assert kept_days(plan) == [(project.pk, DAY + timedelta(days=n)) for n in (1, 2)]
    replaced = run_query(query, EVERYTHING)
    assert replaced.rows[0]["requests"] == before.rows[0]["requests"] - 3 + 50
    assert replaced.rows[0]["e2e_ms_p99"] > 90_000

    # An UPDATE in place is seen too.
    RollupHour.objects.filter(bucket=DAY + timedelta(hours=10), grouping=0).update(
        e2e_ms_idx=[2000], e2e_ms_cnt=[500], requests=500
    )
    updated = run_query(query, EVERYTHING)
    assert updated.rows[0]["e2e_ms_p50_samples"] == replaced.rows[0]["e2e_ms_p50_samples"] - 3 + 500

    # Rebuilt: read from day rows again (a new build, so not the kept first day), with the
    # same numbers.
    assert rebuild_stale_days(NOW) == [DAY]
    assert len(kept_days(plan)) == 3
    misses = CACHE.misses
    assert run_query(query, EVERYTHING).rows == updated.rows
    assert CACHE.misses > misses

    # A noted hour is read raw (no spans here: it counts nothing) and its day by the hour.
    DirtyHour.objects.create(project=project, hour=DAY + timedelta(hours=15))
    noted = run_query(query, EVERYTHING)
    assert noted.rows[0]["requests"] == updated.rows[0]["requests"] - 3
    assert noted.rows[1:] == updated.rows[1:]


def test_a_day_row_is_the_sum_of_its_hours(project: Project, now: Any) -> None:
    """Sums added, errors_by_type merged key by key, distributions merged by index."""
    RollupHour.objects.filter(bucket=DAY + timedelta(hours=5), grouping=0).update(
        errors=3, errors_by_type={"timeout": 2, "rate_limit": 1}, cost_usd=Decimal("0.1250000001")
    )
    RollupHour.objects.filter(bucket=DAY + timedelta(hours=10), grouping=0).update(
        errors=2, errors_by_type={"timeout": 2}, cost_usd=Decimal("2")
    )
    rebuild_stale_days(NOW)
    hours = list(RollupHour.objects.filter(project=project, grouping=0, bucket__gte=DAY, bucket__lt=DAY + ONE_DAY))
    day = RollupDay.objects.get(project=project, grouping=0, bucket=DAY)
    assert day.requests == sum(row.requests for row in hours) == 15
    assert day.errors == 5 and day.errors_by_type == {"timeout": 4, "rate_limit": 1}
    assert day.cost_usd == Decimal("2.1250000001")
    merged: Counter[int] = Counter()
    for row in hours:
        merged.update(dict(zip(row.e2e_ms_idx, row.e2e_ms_cnt, strict=True)))
    assert list(day.e2e_ms_idx) == sorted(merged) and list(day.e2e_ms_cnt) == [merged[i] for i in sorted(merged)]
    assert day.ttft_ms_idx == [] and day.ttft_ms_cnt == []
    globex = RollupDay.objects.get(project=project, grouping=mask("tenant"), tenant="globex", bucket=DAY)
    assert globex.requests == 10


def test_the_oldest_kept_days_go_first_past_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from apps.metrics import days

    monkeypatch.setattr(days, "MAX_PAIRS", 10)
    cache = days._Versioned(days._part_size)
    four = {(): (np.arange(4), np.ones(4, dtype=np.int64))}
    shape = (0, (), ())
    for n in range(3):
        cache.put((1, DAY + timedelta(days=n), shape, "e2e_ms"), (n,), four)
    assert cache.pairs == 8 and cache.get((1, DAY, shape, "e2e_ms"), (0,)) is None
    assert cache.get((1, DAY + timedelta(days=1), shape, "e2e_ms"), (1,)) is not None
    assert cache.get((1, DAY + timedelta(days=1), shape, "e2e_ms"), (2,)) is None  # another build: not this entry


def test_every_rebuild_gives_a_day_a_new_build(project: Project, now: Any) -> None:
    from apps.metrics.days import _versions

    pairs = [(project.pk, DAY + timedelta(days=n)) for n in range(3)]
    assert _versions(pairs) == {}
    rebuild_stale_days(NOW)
    first = _versions(pairs)
    assert set(first) == set(pairs)
    RollupHour.objects.filter(bucket=DAY + timedelta(days=1, hours=1), grouping=0).update(requests=7)
    rebuild_stale_days(NOW)
    second = _versions(pairs)
    assert second[pairs[1]] > first[pairs[1]] and all(second[pairs[n]] == first[pairs[n]] for n in (0, 2))


def test_an_open_day_gets_no_day_rows(project: Project) -> None:
    # At 01:30 on the fixture's third day that day is open: only the first two are built.
    assert rebuild_stale_days(DAY + timedelta(days=2, hours=1, minutes=30)) == [DAY, DAY + ONE_DAY]
    assert not RollupDay.objects.filter(bucket=DAY + timedelta(days=2)).exists()
    assert DayChange.objects.filter(day=DAY + timedelta(days=2)).exists()


def test_partial_days_are_read_hour_by_hour_and_only_around_the_whole_days(project: Project, now: Any) -> None:
    from apps.metrics.days import residual_plans

    rebuild_stale_days(NOW)
    plan = plan_reads(0, [project.pk], DAY + timedelta(hours=5), DAY + timedelta(days=3, hours=2), NOW)
    kept = kept_days(plan)
    assert kept == [(project.pk, DAY + timedelta(days=1)), (project.pk, DAY + timedelta(days=2))]
    stretches = [(piece.rollup_start, piece.rollup_end) for piece in residual_plans(plan, kept)]
    assert stretches == [
        (DAY + timedelta(hours=5), DAY + timedelta(days=1)),
        (DAY + timedelta(days=3), DAY + timedelta(days=3, hours=2)),
    ]
    assert residual_plans(plan, []) == [plan]


def test_a_day_kept_for_one_project_is_not_read_again_by_the_hour_for_it(project: Project, now: Any) -> None:
    """Two projects; one day stale for the first only: that day is read by the hour for the
    first, and from its day rows for the second, never both (counted twice)."""
    other = Project.objects.create(name="days-2")
    for hour in range(0, 72, 5):
        rollup(other, hour, 0, [150.0 + hour, 250.0])
    rebuild_stale_days(NOW)
    RollupHour.objects.filter(project=project, bucket=DAY + timedelta(days=1, hours=6), grouping=0).update(requests=9)
    query = Query(METRICS, DAY - timedelta(hours=2), DAY + timedelta(days=3, hours=1), granularity="day")
    plan = plan_reads(0, [project.pk, other.pk], query.start, query.end, NOW)
    kept = kept_days(plan)
    assert (other.pk, DAY + ONE_DAY) in kept, kept
    assert (project.pk, DAY + ONE_DAY) not in kept, kept
    by_day = run_query(query, EVERYTHING).rows
    by_hour = run_query(Query(METRICS, query.start, query.end, granularity="hour"), EVERYTHING).rows
    assert [row["requests"] for row in by_day] == [
        sum(row["requests"] for row in by_hour if row["time"].date() == day["time"].date()) for day in by_day
    ]
    # The third day: the first project's five hours (one of them changed), the second's five.
    assert by_day[2]["requests"] == 3 * 5 - 3 + 9 + 2 * 5


def test_hours_read_by_the_hour_are_kept_until_a_row_of_their_day_changes(project: Project, now: Any) -> None:
    """The partial days at a range's ends are read from hour rows and kept in the process
    under their days' versions: read again only once any hour row of the day is updated,
    inserted or deleted, whoever writes it."""
    from apps.metrics.days import HOURS
    from apps.rollups.runner import compact_day_changes

    rebuild_stale_days(NOW)
    query = Query(METRICS, DAY + timedelta(hours=5), DAY + timedelta(days=2, hours=12))

    def requests() -> int:
        return int(run_query(query, EVERYTHING).rows[0]["requests"])

    assert requests() == 11 * 3  # hours 5, 10, ..., 55
    hits = HOURS.hits
    assert requests() == 11 * 3 and HOURS.hits == hits + 2  # sums and distributions, not read again
    RollupHour.objects.filter(bucket=DAY + timedelta(days=2, hours=2), grouping=0).update(requests=100)
    assert requests() == 11 * 3 - 3 + 100
    rollup(project, 51, 0, [1.0, 2.0])
    assert requests() == 11 * 3 - 3 + 100 + 2
    RollupHour.objects.filter(bucket=DAY + timedelta(hours=5), grouping=0).delete()  # the first day, built
    assert requests() == 11 * 3 - 3 + 100 + 2 - 3
    compact_day_changes()  # the notes folded: a new version, the same rows
    assert requests() == 11 * 3 - 3 + 100 + 2 - 3
    rebuild_stale_days(NOW)  # notes consumed, new builds
    assert requests() == 11 * 3 - 3 + 100 + 2 - 3
    assert run_query(query, Scope(tenants=("acme",))).rows[0]["requests"] == 11  # another question, read by itself
