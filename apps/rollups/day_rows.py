"""RollupDay rows: each closed UTC day's RollupHour rows added up, rebuilt when they change.

A 30-day page asks its questions of 720 hours; read hour by hour that is thousands of rows
and ~300k (index, count) pairs a question at 10M spans a month, which a process could only
afford by keeping merged days in memory (and every fresh worker paid for). Day rows make
closed days cheap to read from PostgreSQL itself, in any process.

Exactness. A day row is rebuilt from the day's hour rows, never from spans, so it is exactly
their sum. Every write to hour rows leaves a DayChange note for its (project, day) in the
writer's transaction (triggers, migration 0003); rebuild_days reads a day's notes, then
replaces its day rows from the hour rows (a later statement, so under READ COMMITTED it sees
every hour write those notes announced), then deletes exactly the notes it read. A note that
commits meanwhile survives, and the query layer reads any day with a note by the hour
(apps/metrics/days.py): a stale day row is never served.

Who rebuilds:
- rollup_range, in each chunk's transaction, for the closed days the chunk touched;
- the sweep (rebuild_stale_days), after noted hours are recomputed (the rollups task, and
  rollup_pending / recompute_hours), for every closed day with a note: the hour recomputes
  stay one hour's work, and a day with many late hours is rebuilt once.
An open day (today) is never rebuilt: no query reads it whole. Its notes wait (folded by
compact_day_changes) until it closes, and the next sweep builds it.

Locks: a day's rebuild holds the day's advisory lock exclusively (one lock a day whatever
the number of projects), so two rebuilds of one day run one after the other and the second
sees the first's hour rows. A range rebuild takes its hours' locks, then its days' locks, in
order; a sweep takes one day's lock and no hour lock: no cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.rollups.compute import COUNT_KEY_CHARS, ROLLUP_COLUMNS, capped_counts_sql
from apps.rollups.models import COUNT_COLUMNS, DIMENSIONS, DISTRIBUTIONS, RollupDay

log = logging.getLogger(__name__)

DAY = timedelta(days=1)
# Days a sweep rebuilds at most per call (oldest first): after a migration or a long outage
# the backlog is worked off over a few sweeps, each staying short.
SWEEP_DAYS = 10

_DAY_LOCK = "hashtextextended('rollups.day:' || {day}, 0)"
_DELETE_DAYS = """
DELETE FROM rollups_rollupday
WHERE project_id = ANY(%(project_ids)s::bigint[]) AND bucket >= %(first_day)s AND bucket < %(end_day)s
"""
_DELETE_BUILDS = """
DELETE FROM rollups_daybuild
WHERE project_id = ANY(%(project_ids)s::bigint[]) AND day >= %(first_day)s AND day < %(end_day)s
"""
_INSERT_BUILDS = """
INSERT INTO rollups_daybuild (project_id, day)
SELECT p.project_id, d.day
FROM unnest(%(project_ids)s::bigint[]) AS p(project_id)
CROSS JOIN generate_series(%(first_day)s::timestamptz, %(end_day)s::timestamptz - interval '24 hours',
                           interval '24 hours') AS d(day)
"""
_DIMENSION_COLUMNS = ("project_id", "bucket", "grouping", *DIMENSIONS)
_DISTRIBUTION_COLUMNS = tuple(f"{name}_{part}" for name in DISTRIBUTIONS for part in ("idx", "cnt"))


def floor_day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def closed_days_end(now: datetime) -> datetime:
    """Days before this one are closed: their last hour is before the current hour."""
    return floor_day(now)


def _day_key(day: datetime) -> str:
    return floor_day(day).strftime("%Y-%m-%d")


@cache
def _rebuild_sql() -> str:
    """INSERT ... SELECT of the day rows of %(project_ids)s for the days in
    [%(first_day)s, %(end_day)s) from their hour rows.

    Plan: an Index Scan of rollup_hour_read per project (the days' hour rows, ~20-35k a day at
    2-10M spans a month), one HashAggregate by (project, day, grouping, dimensions) that adds
    the sums and concatenates each distribution's arrays (rollups_concat), then per output row
    and distribution a subquery adding counts per index. An array from one hour alone is
    already sorted and summed and skips it."""
    sums = [column for column in ROLLUP_COLUMNS if column not in {*_DIMENSION_COLUMNS, "errors_by_type",
                                                                  *COUNT_COLUMNS, *_DISTRIBUTION_COLUMNS}]  # fmt: skip
    sum_types = {column: RollupDay._meta.get_field(column).db_type(connection) for column in sums}
    first_level = [
        "h.project_id",
        "date_trunc('day', h.bucket, 'UTC') AS bucket",
        "h.grouping",
        *(f"h.{dim}" for dim in DIMENSIONS),
        *(f"sum(h.{column}) AS {column}" for column in sums),
        "array_agg(h.errors_by_type) FILTER (WHERE h.errors_by_type <> '{}'::jsonb) AS error_docs",
        *(
            f"array_agg(h.{column}) FILTER (WHERE h.{column} <> '{{}}'::jsonb) AS {column}_docs"
            for column in COUNT_COLUMNS
        ),
    ]
    for name in DISTRIBUTIONS:
        first_level += [
            f"rollups_concat(h.{name}_idx) AS {name}_idx",
            f"rollups_concat(h.{name}_cnt) AS {name}_cnt",
            f"count(*) FILTER (WHERE cardinality(h.{name}_idx) > 0) AS {name}_parts",
        ]
    pairs = [
        f"""CASE WHEN g.{name}_parts > 1 THEN (
            SELECT array_agg(p.i ORDER BY p.i) || array_agg(p.n ORDER BY p.i)
            FROM (SELECT u.i, sum(u.c)::int AS n FROM unnest(g.{name}_idx, g.{name}_cnt) AS u(i, c) GROUP BY u.i) AS p
        ) END AS {name}_pair"""
        for name in DISTRIBUTIONS
    ]
    outputs: list[str] = []
    for column in ROLLUP_COLUMNS:
        if column in _DIMENSION_COLUMNS:
            outputs.append(f"g.{column}")
        elif column == "errors_by_type":
            outputs.append(
                "CASE WHEN g.error_docs IS NULL THEN '{}'::jsonb ELSE (SELECT jsonb_object_agg(e.key, e.n)"
                " FROM (SELECT kv.key, sum(kv.value::bigint) AS n FROM unnest(g.error_docs) AS d(doc),"
                " jsonb_each_text(d.doc) AS kv GROUP BY kv.key) AS e) END"
            )
        elif column in COUNT_COLUMNS:
            # Merged key by key and capped again: 24 capped hours can hold more keys than one.
            merged = (
                f"SELECT left(kv.key, {COUNT_KEY_CHARS}) AS k, sum(kv.value::bigint) AS n"
                f" FROM unnest(g.{column}_docs) AS d(doc), jsonb_each_text(d.doc) AS kv GROUP BY 1"
            )
            outputs.append(f"CASE WHEN g.{column}_docs IS NULL THEN '{{}}'::jsonb ELSE {capped_counts_sql(merged)} END")
        elif column in _DISTRIBUTION_COLUMNS:
            name, part = column.rsplit("_", 1)
            half = f"cardinality(g.{name}_pair) / 2"
            pick = f"g.{name}_pair[1:{half}]" if part == "idx" else f"g.{name}_pair[{half} + 1:]"
            outputs.append(f"CASE WHEN g.{name}_parts > 1 THEN {pick} ELSE g.{column} END")
        else:
            outputs.append(f"coalesce(g.{column}, 0)::{sum_types[column]}")
    return f"""
INSERT INTO rollups_rollupday ({", ".join(ROLLUP_COLUMNS)})
SELECT {", ".join(outputs)}
FROM (
    -- OFFSET 0: each pair is read twice above and must be computed once.
    SELECT g.*, {", ".join(pairs)}
    FROM (
        SELECT {", ".join(first_level)}
        FROM rollups_rolluphour AS h
        WHERE h.project_id = ANY(%(project_ids)s::bigint[])
          AND h.bucket >= %(first_day)s AND h.bucket < %(end_day)s
        GROUP BY h.project_id, 2, h.grouping, {", ".join(f"h.{dim}" for dim in DIMENSIONS)}
    ) AS g
    OFFSET 0
) AS g
"""


def lock_days(cur, days: Sequence[datetime], *, wait: bool = True) -> bool:  # type: ignore[no-untyped-def]
    """Take the days' locks exclusively, in day order (so two callers never deadlock), for the
    rest of the transaction; with wait=False only try, and say whether all were taken."""
    keys = sorted({_day_key(day) for day in days})
    if wait:
        cur.execute(
            f"SELECT pg_advisory_xact_lock({_DAY_LOCK.format(day='d')}) FROM unnest(%s::text[]) AS d ORDER BY d",
            [keys],
        )
        return True
    cur.execute(
        f"SELECT bool_and(pg_try_advisory_xact_lock({_DAY_LOCK.format(day='d')})) FROM unnest(%s::text[]) AS d",
        [keys],
    )
    return bool(cur.fetchone()[0])


def rebuild_days(cur, project_ids: Sequence[int], first_day: datetime, end_day: datetime) -> int:  # type: ignore[no-untyped-def]
    """Replace the day rows of `project_ids` for the days in [first_day, end_day) from their
    hour rows and consume those days' change notes, in the caller's transaction, which must
    hold the days' locks (lock_days). Returns the day rows written."""
    params = {"project_ids": list(project_ids), "first_day": first_day, "end_day": end_day}
    # The notes first: everything they announce is visible to the INSERT ... SELECT below.
    cur.execute(
        "SELECT id FROM rollups_daychange"
        " WHERE project_id = ANY(%(project_ids)s::bigint[]) AND day >= %(first_day)s AND day < %(end_day)s",
        params,
    )
    note_ids = [row[0] for row in cur.fetchall()]
    cur.execute(_DELETE_DAYS, params)
    cur.execute(_rebuild_sql(), params)
    written = int(cur.rowcount)
    # A new build id for each (project, day): the version the query layer keeps a day under.
    cur.execute(_DELETE_BUILDS, params)
    cur.execute(_INSERT_BUILDS, params)
    if note_ids:
        cur.execute("DELETE FROM rollups_daychange WHERE id = ANY(%s::bigint[])", [note_ids])
    return written


STALE_DAYS_SQL = (
    "SELECT DISTINCT project_id, day FROM rollups_daychange"
    " WHERE project_id = ANY(%(project_ids)s::bigint[]) AND day >= %(first_day)s AND day < %(end_day)s"
)


def stale_days(project_ids: Sequence[int], first_day: datetime, end_day: datetime) -> set[tuple[int, datetime]]:
    """The (project, day) pairs in [first_day, end_day) whose hour rows changed since their day
    rows were built (an Index Only Scan of day_change_read): read them by the hour."""
    with connection.cursor() as cur:
        cur.execute(STALE_DAYS_SQL, {"project_ids": list(project_ids), "first_day": first_day, "end_day": end_day})
        return {(int(project_id), day.astimezone(UTC)) for project_id, day in cur.fetchall()}


def rebuild_stale_days(
    now: datetime | None = None, limit: int = SWEEP_DAYS, days: Sequence[datetime] | None = None
) -> list[datetime]:
    """Rebuild the day rows of up to `limit` closed days that have change notes (oldest first;
    only those of `days` when given), one transaction a day, skipping a day another worker
    holds. Returns the days rebuilt. A day that fails is logged and stays stale (read by the
    hour): one bad day never stops the others."""
    closed_end = closed_days_end(now or timezone.now())
    wanted = sorted({floor_day(day) for day in days}) if days is not None else None
    with connection.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT day FROM rollups_daychange WHERE day < %s"
            + (" AND day = ANY(%s::timestamptz[])" if wanted is not None else "")
            + " ORDER BY day LIMIT %s",
            [closed_end, *([wanted] if wanted is not None else []), limit],
        )
        candidates = [row[0].astimezone(UTC) for row in cur.fetchall()]
    rebuilt = []
    for day in candidates:
        try:
            with transaction.atomic(), connection.cursor() as cur:
                if not lock_days(cur, [day], wait=False):
                    continue
                cur.execute("SELECT DISTINCT project_id FROM rollups_daychange WHERE day = %s", [day])
                project_ids = sorted(row[0] for row in cur.fetchall())
                if not project_ids:
                    continue  # another worker rebuilt it since
                cur.execute("SET LOCAL work_mem = '64MB'")
                written = rebuild_days(cur, project_ids, day, day + DAY)
        except DatabaseError:
            if connection.is_usable():
                log.exception("day rows of %s not rebuilt; the day is read by the hour meanwhile", f"{day:%Y-%m-%d}")
                continue
            raise
        log.info("rebuilt the day rows of %s for %s project(s): %s rows", f"{day:%Y-%m-%d}", len(project_ids), written)
        rebuilt.append(day)
    return rebuilt
