"""Where a query's numbers are read from: which grouping set, which hours from rollups and
which pieces of the range from raw spans (ARCHITECTURE principle 1: "rollups for closed
buckets and raw spans only for the still-open edge").

A whole hour inside the range comes from RollupHour when it is closed (before the start of
the current UTC hour) and carries no DirtyHour note for its project. Everything else is
recomputed from raw spans by the rollup's own SQL (apps.rollups.compute), restricted to the
same grouping set: the partial hours at the range's edges, the current hour (and anything
after it), and noted hours, whose rollup rows are stale or missing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection

from apps.metrics.snapshot import remembered
from apps.rollups.models import DIM_BITS, DIMENSIONS, GROUPING_SETS

HOUR = timedelta(hours=1)
# More noted pieces than this (a rollup backlog with scattered noted hours) are coalesced
# into fewer, wider ones: each piece is one more rollup statement over raw spans, whose cost
# is mostly the trace attribution around it, so a few wide pieces beat many narrow ones.
MAX_RAW_PIECES = 6


def dims_of(grouping: int) -> tuple[str, ...]:
    return tuple(name for name in DIMENSIONS if grouping & DIM_BITS[name])


def choose_grouping(needed: Iterable[str]) -> int:
    """The smallest materialised grouping set whose dimensions cover `needed`.

    Fewer dimensions means fewer rows per hour; GROUPING_SETS lists sets of equal size
    smallest-first, so its order breaks ties. ALL_DIMS is always there and covers anything.
    """
    wanted = 0
    for name in needed:
        wanted |= DIM_BITS[name]
    candidates = [grouping for grouping in GROUPING_SETS if grouping & wanted == wanted]
    return min(candidates, key=lambda grouping: (grouping.bit_count(), GROUPING_SETS.index(grouping)))


def floor_hour(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floor = floor_hour(moment)
    return floor if floor == moment else floor + HOUR


@dataclass(frozen=True)
class RawPiece:
    """A stretch [start, end) of the listed projects' spans, rolled up on the fly."""

    project_ids: tuple[int, ...]
    start: datetime
    end: datetime
    reason: str  # "edge" (partial or open hours) or "noted" (DirtyHour)


@dataclass(frozen=True)
class ReadPlan:
    grouping: int
    project_ids: tuple[int, ...]
    # Rollup rows are read for bucket in [rollup_start, rollup_end), less the noted pieces.
    rollup_start: datetime | None
    rollup_end: datetime | None
    raw: tuple[RawPiece, ...]

    @property
    def dims(self) -> tuple[str, ...]:
        return dims_of(self.grouping)

    @property
    def noted(self) -> tuple[RawPiece, ...]:
        return tuple(piece for piece in self.raw if piece.reason == "noted")


def noted_hours(project_ids: Sequence[int], start: datetime, end: datetime) -> dict[int, list[datetime]]:
    """Hours in [start, end) with a DirtyHour note, by project (index dirty_hour_read); asked
    once per reads.session() (every grouping set of a range has the same notes)."""
    return remembered(("noted_hours", tuple(project_ids), start, end),
                            lambda: _noted_hours(project_ids, start, end))  # fmt: skip


def _noted_hours(project_ids: Sequence[int], start: datetime, end: datetime) -> dict[int, list[datetime]]:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT project_id, hour FROM rollups_dirtyhour "
            "WHERE hour >= %(start)s AND hour < %(end)s AND project_id = ANY(%(project_ids)s::bigint[]) "
            "ORDER BY project_id, hour",
            {"start": start, "end": end, "project_ids": list(project_ids)},
        )
        by_project: dict[int, list[datetime]] = defaultdict(list)
        for project_id, hour in cur.fetchall():
            by_project[int(project_id)].append(hour)
    return by_project


def _runs(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    runs: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if runs and runs[-1][1] == hour:
            runs[-1] = (runs[-1][0], hour + HOUR)
        else:
            runs.append((hour, hour + HOUR))
    return runs


def _noted_pieces(by_project: dict[int, list[datetime]]) -> list[RawPiece]:
    """Pieces covering every noted hour, at most MAX_RAW_PIECES of them.

    Coalescing widens pieces over hours that have no note: those are read raw as well
    (exact, only slower), and the rollup read skips every hour a piece covers.
    """

    def grouped(runs_by_project: dict[int, list[tuple[datetime, datetime]]]) -> list[RawPiece]:
        projects_by_run: dict[tuple[datetime, datetime], list[int]] = defaultdict(list)
        for project_id, runs in runs_by_project.items():
            for run in runs:
                projects_by_run[run].append(project_id)
        return [
            RawPiece(tuple(sorted(projects)), run[0], run[1], "noted")
            for run, projects in sorted(projects_by_run.items())
        ]

    runs = {project_id: _runs(hours) for project_id, hours in by_project.items() if hours}
    pieces = grouped(runs)
    if len(pieces) > MAX_RAW_PIECES:
        pieces = grouped({project_id: [(r[0][0], r[-1][1])] for project_id, r in runs.items()})
    if len(pieces) > MAX_RAW_PIECES:
        start, end = min(p.start for p in pieces), max(p.end for p in pieces)
        pieces = [RawPiece(tuple(sorted(runs)), start, end, "noted")]
    return pieces


def plan_reads(grouping: int, project_ids: Sequence[int], start: datetime, end: datetime, now: datetime) -> ReadPlan:
    projects = tuple(sorted(project_ids))
    current_hour = floor_hour(now)
    rollup_start = ceil_hour(start)
    rollup_end = max(rollup_start, min(floor_hour(end), current_hour))
    raw: list[RawPiece] = []
    if projects and start < rollup_start:
        raw.append(RawPiece(projects, start, min(rollup_start, end), "edge"))
    if projects and max(rollup_end, start) < end:
        raw.append(RawPiece(projects, max(rollup_end, start), end, "edge"))
    if not projects or rollup_start >= rollup_end:
        return ReadPlan(grouping, projects, None, None, tuple(raw))
    noted = _noted_pieces(noted_hours(projects, rollup_start, rollup_end))
    return ReadPlan(grouping, projects, rollup_start, rollup_end, (*raw, *noted))
