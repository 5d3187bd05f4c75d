"""Distributions of whole closed days, merged once and kept in this process.

A 30-day chart by day merges 720 hourly rows per distribution: at 10M spans a month that is
~300k (index, count) pairs each, ~35 ms to send and merge, and a dashboard asks the same
question again and again. The hours of a closed day change only when the rollup runner
replaces them, so the merge of a whole day's rows is kept, per query shape (grouping set,
filters, group-by) and distribution, under a version of the rows it was made from: their
count and the sums of their ids, xmins and tuple positions (ctid). The runner deletes and
inserts rows (new ids), and an UPDATE writes a new tuple version (a new ctid, and a new xmin
in any later transaction), so a change to a day's rows moves its version; a VACUUM FULL
moves it too, which only costs a fresh merge. The versions are read with every query, in
its snapshot (an index scan of the rows without their arrays: ~1 ms for 30 days of a small
grouping set). A stale entry is never used: it is replaced by a fresh merge.

Only days whose 24 hours all come from rollups are kept: hours read raw (edges, noted
hours) are never part of an entry. Hourly charts read hourly rows as before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection

from apps.metrics import reads, sql
from apps.metrics.merge import Distribution, merge_distributions
from apps.metrics.plan import ReadPlan

DAY = timedelta(days=1)
# The most (index, count) pairs kept (16 bytes each): ~32 MB a process. A 30-day overview
# keeps ~40k.
MAX_PAIRS = 2_000_000

Shape = tuple[int, tuple[tuple[str, tuple[str, ...]], ...], tuple[str, ...], str]
Version = tuple[int, ...]


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (project, day, shape) -> (version, {group-by values: merged distribution})
        self.entries: OrderedDict[tuple[int, datetime, Shape], tuple[Version, dict[tuple[Any, ...], Distribution]]]
        self.entries = OrderedDict()
        self.pairs = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[int, datetime, Shape], version: Version) -> dict[tuple[Any, ...], Distribution] | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None or entry[0] != version:
                self.misses += 1
                return None
            self.entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(
        self, key: tuple[int, datetime, Shape], version: Version, groups: dict[tuple[Any, ...], Distribution]
    ) -> None:
        size = sum(len(indexes) for indexes, _ in groups.values())
        with self.lock:
            old = self.entries.pop(key, None)
            if old is not None:
                self.pairs -= sum(len(indexes) for indexes, _ in old[1].values())
            self.entries[key] = (version, groups)
            self.pairs += size
            while self.pairs > MAX_PAIRS and self.entries:
                _, (_, evicted) = self.entries.popitem(last=False)
                self.pairs -= sum(len(indexes) for indexes, _ in evicted.values())

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.pairs = self.hits = self.misses = 0


CACHE = _Cache()


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


def _versions(plan: ReadPlan, filters: Mapping[str, Sequence[str]]) -> dict[tuple[int, datetime], Version]:
    filtered = sorted(filters, key=sql.DIMENSIONS.index)
    with connection.cursor() as cur:
        cur.execute(sql.day_versions_sql(plan, filtered), sql.rollup_params(plan, filters))
        return {(int(row[0]), row[1]): tuple(int(value) for value in row[2:]) for row in cur.fetchall()}


def distribution_rows(
    plan: ReadPlan,
    granularity: str | None,
    group_by: Sequence[str],
    filters: Mapping[str, Sequence[str]],
    dists: Sequence[str],
) -> list[tuple[Any, ...]]:
    """Rows shaped like reads.rollup_distributions with granularity "hour" (bucket, *dims,
    idx, cnt, ...), where a whole day may stand as one row at its midnight, merged."""
    days = whole_days(plan)
    if not any(days.values()):
        return reads.rollup_distributions(plan, group_by, filters, dists)
    versions = _versions(plan, filters)
    shape_base = (
        plan.grouping,
        tuple(sorted((dim, tuple(values)) for dim, values in filters.items())),
        tuple(group_by),
    )
    merged: dict[tuple[int, datetime], dict[tuple[Any, ...], list[Distribution]]] = {}
    cached_rows: list[tuple[Any, ...]] = []
    skip: list[tuple[int, datetime]] = []
    stale: dict[tuple[int, datetime], Version] = {}
    for project_id, project_days in days.items():
        for day in project_days:
            version = versions.get((project_id, day), ())
            found = [CACHE.get((project_id, day, (*shape_base, dist)), version) for dist in dists]
            if all(entry is not None for entry in found):
                skip.append((project_id, day))
                cached_rows.extend(_as_rows(day, found, group_by))  # type: ignore[arg-type]
            else:
                stale[(project_id, day)] = version
                merged[(project_id, day)] = {}
    rows = reads.rollup_distributions(plan, group_by, filters, dists, skip_days=skip, with_project=True)
    out: list[tuple[Any, ...]] = []
    width = 1 + len(group_by)
    per_day: dict[tuple[int, datetime], dict[tuple[Any, ...], list[tuple[Any, ...]]]] = {}
    for row in rows:
        project_id, bucket = row[0], row[1]
        day = bucket.astimezone(UTC).replace(hour=0)
        if (project_id, day) in stale:
            per_day.setdefault((project_id, day), {}).setdefault(tuple(row[2 : 1 + width]), []).append(row[1 + width :])
        else:
            out.append(row[1:])
    for (project_id, day), version in stale.items():
        groups = per_day.get((project_id, day), {})
        entries = []
        for number, dist in enumerate(dists):
            entry = {
                values: merge_distributions([(parts[2 * number], parts[2 * number + 1]) for parts in arrays])
                for values, arrays in groups.items()
            }
            CACHE.put((project_id, day, (*shape_base, dist)), version, entry)
            entries.append(entry)
        out.extend(_as_rows(day, entries, group_by))
    return out + cached_rows


def _as_rows(
    day: datetime, entries: Sequence[dict[tuple[Any, ...], Distribution]], group_by: Sequence[str]
) -> list[tuple[Any, ...]]:
    """One row per group-by values of a day: (day, *values, idx, cnt, ...) over the dists."""
    values = sorted({key for entry in entries for key in entry}, key=lambda key: tuple(str(v) for v in key))
    empty = merge_distributions([])
    rows = []
    for key in values:
        arrays: list[Any] = []
        for entry in entries:
            arrays.extend(entry.get(key, empty))
        rows.append((day, *key, *arrays))
    return rows
