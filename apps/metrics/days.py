"""Whole closed days read from their day rows (RollupDay), the rest of the rollup hours by the hour.

A 30-day page asks a dozen questions of the same 720 hours: read hour by hour, each one adds
up thousands of rollup rows, and the distributions alone are ~300k (index, count) pairs per
question at 10M spans a month. A closed day's hour rows are added up once into its day rows
(apps/rollups/day_rows.py), so a whole day costs a row per group, in any process: a fresh
web or Celery worker is as fast as one that has served before (nothing is kept here).

A day is read from its day rows ("kept", below) when all its 24 hours are closed rollup hours
of the plan (no noted hour: those are read raw) and its day rows are current: no DayChange
note, read in the query's snapshot (an Index Only Scan of a few rows). A day whose hour rows
changed since its day rows were built is read by the hour, exactly as before: a stale day
row is never served. Hourly charts read hourly rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from apps.metrics import reads, sql
from apps.metrics.catalog import SUM_COLUMNS
from apps.metrics.merge import merge_distributions
from apps.metrics.plan import ReadPlan
from apps.rollups.day_rows import stale_days

DAY = timedelta(days=1)
SUM_NAMES = tuple(SUM_COLUMNS)

DayKey = tuple[int, datetime]  # (project, UTC midnight)
# Per group-by values: (sums in SUM_NAMES order, errors_by_type or None), or a distribution.
Part = dict[tuple[Any, ...], Any]


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


def kept_days(plan: ReadPlan) -> list[DayKey]:
    """The (project, day) pairs of whole_days whose day rows are current, in order: the days
    read from RollupDay. Run in the query's snapshot."""
    pairs = [(project_id, day) for project_id, days in sorted(whole_days(plan).items()) for day in days]
    if not pairs:
        return []
    stale = stale_days(
        sorted({project_id for project_id, _ in pairs}),
        min(day for _, day in pairs),
        max(day for _, day in pairs) + DAY,
    )
    return [pair for pair in pairs if pair not in stale]


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


def residual_distribution_rows(
    plan: ReadPlan, kept: Sequence[DayKey], group_by: Sequence[str], filters: Mapping[str, Sequence[str]],
    dists: Sequence[str],
) -> list[tuple[Any, ...]]:  # fmt: skip
    """reads.rollup_distributions rows (bucket, *dims, idx, cnt, ...) of the plan's rollup
    hours outside the kept days, read stretch by stretch (residual_plans)."""
    day_clause = ("skip", kept) if kept else None
    rows: list[tuple[Any, ...]] = []
    for stretch in residual_plans(plan, kept):
        rows.extend(reads.rollup_distributions(stretch, group_by, filters, dists, days=day_clause))
    return rows


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
    """For each whole day in `pairs` (kept_days of the plan): its parts, from its day rows.
    Parts: sums_part(breakdown) when `sums` (every SUM_NAMES sum), and each of `dists`; within
    a part, one value per group-by values with rows."""
    if not pairs:
        return {}
    around = _around(plan, pairs)
    days = ("only", pairs)
    found: dict[DayKey, dict[str, Part]] = {pair: {} for pair in pairs}
    width = 2 + len(group_by)
    if sums:
        part = sums_part(breakdown)
        for pair in pairs:
            found[pair][part] = {}
        rows = reads.rollup_sums(
            around, "day", group_by, filters, SUM_NAMES, breakdown, days=days, with_project=True, table=sql.DAY_TABLE
        )
        for row in rows:
            pair = (int(row[0]), row[1].astimezone(UTC))
            found[pair][part][tuple(row[2:width])] = (tuple(row[width : width + len(SUM_NAMES)]),
                                                      row[-1] if breakdown else None)  # fmt: skip

    if dists:
        arrays: dict[DayKey, dict[tuple[Any, ...], list[tuple[Any, ...]]]] = {pair: {} for pair in pairs}
        rows = reads.rollup_distributions(
            around, group_by, filters, dists, days=days, with_project=True, table=sql.DAY_TABLE
        )
        for row in rows:
            pair = (int(row[0]), row[1].astimezone(UTC))
            arrays[pair].setdefault(tuple(row[2:width]), []).append(row[width:])
        for pair, groups in arrays.items():
            for number, dist in enumerate(dists):
                merged = {}
                for values, group_rows in groups.items():
                    parts = [(each[2 * number], each[2 * number + 1]) for each in group_rows]
                    # A day row is one group's whole day when the query groups by every
                    # dimension of its grouping set (most of them): nothing to merge.
                    indexes, counts = parts[0] if len(parts) == 1 else merge_distributions(parts)
                    if len(indexes):
                        merged[values] = (indexes, counts)
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
