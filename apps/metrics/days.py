"""Whole closed days read from their day rows (RollupDay), the rest of the rollup hours by the hour.

A 30-day page asks a dozen questions of the same 720 hours: read hour by hour, each one adds
up thousands of rollup rows, and the distributions alone are ~300k (index, count) pairs per
question at 10M spans a month. A closed day's hour rows are added up once into its day rows
(apps/rollups/day_rows.py), so a whole day costs a row per group, in any process: a fresh
web or Celery worker needs nothing kept to be fast.

A day is read from its day rows ("kept", below) when all its 24 hours are closed rollup hours
of the plan (no noted hour: those are read raw) and its day rows are current: no DayChange
note, read in the query's snapshot (an Index Only Scan of a few rows). A day whose hour rows
changed since its day rows were built is read by the hour, exactly as before: a stale day
row is never served. Hourly charts read hourly rows.

A second level, in the process: each question's answer for a day read from day rows (per
query shape: grouping set, filters, group-by; every SUM_NAMES sum per group, and each merged
distribution) is kept under the day's build (models.DayBuild: a fresh id with every rebuild,
read with the question in its snapshot), so a warm process reads a few build ids instead of
the day rows. A rebuilt day has a new build and is read again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db import connection

from apps.metrics import reads, sql
from apps.metrics.catalog import SUM_COLUMNS
from apps.metrics.merge import merge_distributions
from apps.metrics.plan import ReadPlan
from apps.metrics.snapshot import remembered
from apps.rollups.models import DISTRIBUTIONS

DAY = timedelta(days=1)
# What the kept days may hold, in (index, count) pairs (16 bytes each; a group's sums count
# as SUMS_WEIGHT): ~32 MB a process. A 30-day overview keeps ~40k pairs.
MAX_PAIRS = 2_000_000
SUM_NAMES = tuple(SUM_COLUMNS)
SUMS_WEIGHT = len(SUM_NAMES)

DayKey = tuple[int, datetime]  # (project, UTC midnight)
Shape = tuple[int, tuple[tuple[str, tuple[str, ...]], ...], tuple[str, ...]]
Version = tuple[int, ...]
# Per group-by values: (sums in SUM_NAMES order, errors_by_type or None), or a distribution.
Part = dict[tuple[Any, ...], Any]


class _Versioned:
    """Values kept in the process under a version: a value is served only while the version
    asked for equals the one it was kept under. Least recently used first out, bounded by
    MAX_PAIRS array pairs (what `size` says each value weighs)."""

    def __init__(self, size: Callable[[Hashable, Any], int]) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.entries: OrderedDict[Hashable, tuple[Hashable, Any, int]] = OrderedDict()
        self.pairs = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, version: Hashable) -> Any:
        """The value kept under `version`; None when there is none."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is None or entry[0] != version:
                self.misses += 1
                return None
            self.entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: Hashable, version: Hashable, value: Any) -> None:
        size = self.size(key, value)
        with self.lock:
            old = self.entries.pop(key, None)
            if old is not None:
                self.pairs -= old[2]
            self.entries[key] = (version, value, size)
            self.pairs += size
            while self.pairs > MAX_PAIRS and self.entries:
                _, (_, _, evicted) = self.entries.popitem(last=False)
                self.pairs -= evicted

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.pairs = self.hits = self.misses = 0


def _part_size(key: Hashable, part: Part) -> int:
    assert isinstance(key, tuple)
    return sum(len(value[0]) if key[3] in DISTRIBUTIONS else SUMS_WEIGHT for value in part.values())


def _rows_size(key: Hashable, rows: list[tuple[Any, ...]]) -> int:
    return sum(max(SUMS_WEIGHT, sum(len(value) for value in row if isinstance(value, np.ndarray))) for row in rows)


# The second level: per (project, day, shape, part), a kept day's part under its version.
CACHE = _Versioned(_part_size)
# The third level: what a statement read from hour rows of days that are not kept (the
# partial days at a range's ends, today's closed hours, a stale day), under those days'
# versions (hour_versions), so a warm page does not read the same closed hours again.
HOURS = _Versioned(_rows_size)


# Per (project, day): the build of its day rows, and its change notes (the highest id, how
# many, their sum). Every write of a day's hour rows adds a note in its own transaction
# (rollups.DayChange, insert-only), and a rebuild deletes the notes it read and makes a new
# build in one: so two snapshots that see the same version of a day see the same hour rows.
# (The highest note id alone would not do: ids are handed out before commit, so a note with
# a lower id can become visible later; it changes the count.)
_HOUR_VERSIONS_SQL = """
SELECT d.project_id, d.day, b.id, c.last, c.notes, c.total
FROM unnest(%(day_projects)s::bigint[], %(day_starts)s::timestamptz[]) AS d(project_id, day)
LEFT JOIN rollups_daybuild AS b ON b.project_id = d.project_id AND b.day = d.day
CROSS JOIN LATERAL (SELECT max(n.id) AS last, count(*) AS notes, sum(n.id) AS total
                    FROM rollups_daychange AS n WHERE n.project_id = d.project_id AND n.day = d.day) AS c
"""


def hour_versions(plan: ReadPlan, stretches: Sequence[tuple[datetime, datetime]]) -> tuple[Any, ...]:
    """The version of every (project, day) the stretches' hour rows lie in, read in the
    query's snapshot; asked once per reads.session()."""
    pairs: list[DayKey] = []
    for start, end in stretches:
        day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        while day < end:
            pairs.extend((project_id, day) for project_id in plan.project_ids)
            day += DAY
    pairs = sorted(set(pairs))

    def ask() -> tuple[Any, ...]:
        with connection.cursor() as cur:
            cur.execute(_HOUR_VERSIONS_SQL, sql.day_params(pairs))
            return tuple(sorted((int(row[0]), row[1], *row[2:]) for row in cur.fetchall()))

    return remembered(("hour_versions", tuple(pairs)), ask)


def hour_rows(
    plan: ReadPlan, stretches: Sequence[tuple[datetime, datetime]], filters: Mapping[str, Sequence[str]],
    skip: tuple[str, list[DayKey]] | None, question: Hashable, read: Callable[[], list[tuple[Any, ...]]],
) -> list[tuple[Any, ...]]:  # fmt: skip
    """read()'s rows (a read of the plan's hour rows in `stretches`, with `filters`, skipping
    `skip`'s days, asking `question`: the statement's other parameters), kept in the process
    under the versions of the days they lie in. The rows are shared: callers must not change them."""
    shape = (tuple(sorted((dim, tuple(values)) for dim, values in filters.items())), skip and tuple(skip[1]))
    key = (question, shape, plan.grouping, plan.project_ids, plan.noted, tuple(stretches))
    version = hour_versions(plan, stretches)
    rows: list[tuple[Any, ...]] | None = HOURS.get(key, version)
    if rows is None:
        rows = read()
        HOURS.put(key, version, rows)
    return rows


def whole_days(plan: ReadPlan) -> dict[int, list[datetime]]:
    """Per project, the UTC days whose 24 hours all come from rollup rows."""
    if plan.rollup_start is None or plan.rollup_end is None:
        return {}
    first = plan.rollup_start.replace(hour=0)
    if first < plan.rollup_start:
        first += DAY
    days = []
    while first + DAY <= plan.rollup_end:
        days.append(first)
        first += DAY
    result = {}
    for project_id in plan.project_ids:
        noted = [piece for piece in plan.noted if project_id in piece.project_ids]
        result[project_id] = [
            day for day in days if not any(piece.start < day + DAY and day < piece.end for piece in noted)
        ]
    return result


class KeptDays(list[DayKey]):
    """kept_days' answer: the (project, day) pairs, in order, and the build of each one's day
    rows as read in the same statement (read() keeps parts under it)."""

    def __init__(self, pairs: Sequence[DayKey] = (), versions: Mapping[DayKey, Version] | None = None) -> None:
        super().__init__(pairs)
        self.versions: dict[DayKey, Version] = dict(versions or {})


# Each whole day's build and whether it has a change note, in one statement: Index Only Scans
# of day_build_identity and day_change_read per day.
_KEPT_SQL = """
SELECT d.project_id, d.day, b.id,
       EXISTS (SELECT FROM rollups_daychange AS c WHERE c.project_id = d.project_id AND c.day = d.day) AS stale
FROM unnest(%(day_projects)s::bigint[], %(day_starts)s::timestamptz[]) AS d(project_id, day)
LEFT JOIN rollups_daybuild AS b ON b.project_id = d.project_id AND b.day = d.day
"""


def kept_days(plan: ReadPlan) -> KeptDays:
    """The (project, day) pairs of whole_days whose day rows are current (no DayChange note),
    in order: the days read from RollupDay (or kept in the process). Run in the query's
    snapshot."""
    pairs = [(project_id, day) for project_id, days in sorted(whole_days(plan).items()) for day in days]
    if not pairs:
        return KeptDays()
    # Every query of a page asks this of the same days: once per reads.session().
    return remembered(("kept_days", tuple(pairs)), lambda: _kept(pairs))


def _kept(pairs: list[DayKey]) -> KeptDays:
    with connection.cursor() as cur:
        cur.execute(_KEPT_SQL, sql.day_params(pairs))
        found = {(int(row[0]), row[1].astimezone(UTC)): (row[2], row[3]) for row in cur.fetchall()}
    kept = [pair for pair in pairs if not found[pair][1]]
    return KeptDays(kept, {pair: (int(found[pair][0]),) for pair in kept if found[pair][0] is not None})


def residual_plans(plan: ReadPlan, kept: Sequence[DayKey]) -> list[ReadPlan]:
    """The plan narrowed to each stretch of its rollup hours that holds hours outside `kept`
    (usually the partial first and last days): those hours are read row by row, and a read
    over the whole range would walk every kept day's rows only to skip them. A stretch may
    still hold another project's kept days: the "skip" clause leaves those out."""
    if plan.rollup_start is None or plan.rollup_end is None:
        return []
    if not kept:
        return [plan]
    kept_set = set(kept)
    everywhere = {day for _, day in kept if all((project_id, day) in kept_set for project_id in plan.project_ids)}
    stretches: list[tuple[datetime, datetime]] = []
    moment = plan.rollup_start
    for day in sorted(everywhere):
        if moment < day:
            stretches.append((moment, day))
        moment = max(moment, day + DAY)
    if moment < plan.rollup_end:
        stretches.append((moment, plan.rollup_end))
    return [replace(plan, rollup_start=start, rollup_end=end) for start, end in stretches]


def residual_stretches(plan: ReadPlan, kept: Sequence[DayKey]) -> list[tuple[datetime, datetime]]:
    """The ranges of residual_plans, for one statement that reads them all (reads.rollup_sums'
    and reads.rollup_distributions' `stretches`)."""
    return [(stretch.rollup_start, stretch.rollup_end) for stretch in residual_plans(plan, kept)]  # type: ignore[misc]


def residual_distribution_rows(
    plan: ReadPlan, kept: Sequence[DayKey], group_by: Sequence[str], filters: Mapping[str, Sequence[str]],
    dists: Sequence[str],
) -> list[tuple[Any, ...]]:  # fmt: skip
    """reads.rollup_distributions rows (bucket, *dims, idx, cnt, ...) of the plan's rollup
    hours outside the kept days: each stretch (residual_plans) read on its own, in one
    statement."""
    stretches = residual_stretches(plan, kept)
    if not stretches:
        return []
    skip = skip_clause(kept, stretches)
    return hour_rows(
        plan, stretches, filters, skip, ("distributions", tuple(group_by), tuple(dists)),
        lambda: reads.rollup_distributions(plan, group_by, filters, dists, days=skip, stretches=stretches),
    )  # fmt: skip


def skip_clause(
    kept: Sequence[DayKey], stretches: Sequence[tuple[datetime, datetime]]
) -> tuple[str, list[DayKey]] | None:
    """The "skip" days clause of a read of `stretches`: only the kept days inside them (another
    project's kept day in a stretch that is partial for this one). Usually none: the clause,
    an anti-join of every hour row against every kept day, is then left out."""
    inside = [pair for pair in kept if any(start <= pair[1] < end for start, end in stretches)]
    return ("skip", inside) if inside else None


def _versions(pairs: Sequence[DayKey]) -> dict[DayKey, Version]:
    """The build of each day's rows (models.DayBuild; an Index Only Scan of day_build_identity)."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT project_id, day, id FROM rollups_daybuild"
            " WHERE project_id = ANY(%(project_ids)s::bigint[]) AND day >= %(first_day)s AND day < %(end_day)s",
            {
                "project_ids": sorted({project_id for project_id, _ in pairs}),
                "first_day": min(day for _, day in pairs),
                "end_day": max(day for _, day in pairs) + DAY,
            },
        )
        return {(int(row[0]), row[1].astimezone(UTC)): (int(row[2]),) for row in cur.fetchall()}


def read(
    plan: ReadPlan,
    pairs: Sequence[DayKey],
    group_by: Sequence[str],
    filters: Mapping[str, Sequence[str]],
    *,
    sums: bool,
    breakdown: bool,
    dists: Sequence[str],
) -> dict[DayKey, dict[str, Part]]:
    """For each whole day in `pairs` (kept_days of the plan): its parts, kept in the process
    or read from its day rows. Parts: sums_part(breakdown) when `sums` (every SUM_NAMES sum),
    and each of `dists`; within a part, one value per group-by values with rows."""
    if not pairs:
        return {}
    versions = pairs.versions if isinstance(pairs, KeptDays) else _versions(pairs)
    shape: Shape = (
        plan.grouping,
        tuple(sorted((dim, tuple(values)) for dim, values in filters.items())),
        tuple(group_by),
    )
    parts = ([sums_part(breakdown)] if sums else []) + list(dists)
    found: dict[DayKey, dict[str, Part]] = {}
    missing: dict[str, list[DayKey]] = {part: [] for part in parts}
    for pair in pairs:
        found[pair] = {}
        for part in parts:
            entry = CACHE.get((*pair, shape, part), versions.get(pair, ()))
            if entry is None:
                missing[part].append(pair)
            else:
                found[pair][part] = entry
    width = 2 + len(group_by)

    if sums and missing[sums_part(breakdown)]:
        wanted = missing[sums_part(breakdown)]
        read_sums: dict[DayKey, Part] = {pair: {} for pair in wanted}
        rows = reads.rollup_sums(
            _around(plan, wanted), "day", group_by, filters, SUM_NAMES, breakdown, days=("only", wanted),
            with_project=True, table=sql.DAY_TABLE,
        )  # fmt: skip
        for row in rows:
            pair = (int(row[0]), row[1].astimezone(UTC))
            read_sums[pair][tuple(row[2:width])] = (tuple(row[width : width + len(SUM_NAMES)]),
                                                    row[-1] if breakdown else None)  # fmt: skip
        for pair, sums_read in read_sums.items():
            CACHE.put((*pair, shape, sums_part(breakdown)), versions.get(pair, ()), sums_read)
            found[pair][sums_part(breakdown)] = sums_read

    wanted = sorted({pair for dist in dists for pair in missing[dist]})
    if wanted:
        arrays: dict[DayKey, dict[tuple[Any, ...], list[tuple[Any, ...]]]] = {pair: {} for pair in wanted}
        rows = reads.rollup_distributions(
            _around(plan, wanted), group_by, filters, dists, days=("only", wanted), with_project=True,
            table=sql.DAY_TABLE,
        )  # fmt: skip
        for row in rows:
            pair = (int(row[0]), row[1].astimezone(UTC))
            arrays[pair].setdefault(tuple(row[2:width]), []).append(row[width:])
        for pair, groups in arrays.items():
            for number, dist in enumerate(dists):
                merged = {}
                for values, group_rows in groups.items():
                    day_parts = [(each[2 * number], each[2 * number + 1]) for each in group_rows]
                    # A day row is one group's whole day when the query groups by every
                    # dimension of its grouping set (most of them): nothing to merge.
                    indexes, counts = day_parts[0] if len(day_parts) == 1 else merge_distributions(day_parts)
                    if len(indexes):
                        merged[values] = (indexes, counts)
                CACHE.put((*pair, shape, dist), versions.get(pair, ()), merged)
                found[pair][dist] = merged
    return found


def _around(plan: ReadPlan, pairs: Sequence[DayKey]) -> ReadPlan:
    """The plan's rollup range narrowed to the days of `pairs`."""
    return replace(plan, rollup_start=min(day for _, day in pairs), rollup_end=max(day for _, day in pairs) + DAY)


def sums_part(breakdown: bool) -> str:
    return "sums+errors" if breakdown else "sums"


def sums_of(values: tuple[Any, ...], columns: Sequence[str]) -> list[Any]:
    """The `columns` of a sums tuple (SUM_NAMES order)."""
    return [values[_SUM_INDEX[column]] for column in columns]


_SUM_INDEX = {column: number for number, column in enumerate(SUM_NAMES)}
