"""Recomputing RollupHour rows from raw spans: the noted hours, or every hour of a range.

The protocol (models.DirtyHour): ingest and re-pricing write a note (project, hour) in the
same transaction as the spans they change. rollup_pending() takes the oldest noted hours; for
each one, in one transaction, it takes transaction-level advisory locks on the hour (shared)
and on (project, hour) (skipping an hour another worker holds), reads the ids of that hour's
notes, replaces the hour's RollupHour rows with rows computed from the spans, and deletes
exactly the note ids it read. A recompute is idempotent, so running it twice, or after a
worker was killed half way (its transaction rolled back, its notes still there), changes
nothing. An hour whose recompute fails is set aside (models.RollupFailure) and retried with
backoff; the sweep goes on with the others. The closed days whose hour rows changed get
their day rows rebuilt (day_rows.py): by rollup_range in its own transaction, after noted
hours by the day sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.rollups import day_rows
from apps.rollups.compute import HOUR_OF_SQL, ROLLUP_COLUMNS, rollup_params, rollup_rows_sql
from apps.rollups.models import RollupFailure

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
# rollup_range works whole days at a time, about this many spans a statement: the window a
# statement reads around its days (a day either side) costs less the longer the chunk, while
# its memory and transaction grow with it. The span counts come from the planner's statistics
# of the day partitions.
RANGE_CHUNK_SPANS = 200_000
RANGE_CHUNK_MAX_DAYS = 7
# From this many hours on, the rollup query reads the window's spans by scanning its day
# partitions rather than trace by trace (compute.rollup_rows_sql, bulk).
BULK_HOURS = 12
# The rollup query sorts and hashes its spans (a few thousand for an hour, up to a few hundred
# thousand for a busy day); the default 4MB would spill them to temporary files.
WORK_MEM = "64MB"
BULK_WORK_MEM = "256MB"

_COLUMN_LIST = ", ".join(ROLLUP_COLUMNS)
_INSERT = f"INSERT INTO rollups_rolluphour ({_COLUMN_LIST})\n{{select}}"
_DELETE_HOURS = """
DELETE FROM rollups_rolluphour
WHERE project_id = ANY(%(project_ids)s::bigint[]) AND bucket >= %(start)s AND bucket < %(end)s
"""

# Locks, in the one-bigint key space of pg_advisory_xact_lock (keys are hashes: two hours that
# collide only wait for, or skip, each other, which is safe). A noted-hour recompute holds its
# hour's lock SHARED and its (project, hour) lock exclusively, so workers on different
# projects of one hour go on side by side; a range rebuild holds the hour's lock exclusively,
# one lock per hour whatever the number of projects (the lock table is finite).
_HOUR_LOCK = "hashtextextended('rollups.hour:' || {hour}, 0)"
_PROJECT_HOUR_LOCK = "hashtextextended('rollups.project-hour:' || {project}::text || ':' || {hour}, 0)"


def floor_hour(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def _hour_key(hour: datetime) -> str:
    """The hour as text in the lock key: the same string whatever the caller's time zone."""
    return floor_hour(hour).strftime("%Y-%m-%dT%H")


def _prepare(cur, *, bulk: bool = False) -> None:  # type: ignore[no-untyped-def]
    # SET LOCAL: for this transaction only, so a pooled connection keeps its settings.
    cur.execute(f"SET LOCAL work_mem = '{BULK_WORK_MEM if bulk else WORK_MEM}'")
    # The statement is complex but short: compiling it costs more than it saves.
    cur.execute("SET LOCAL jit = off")


def _is_bulk(start: datetime, end: datetime) -> bool:
    return end - start >= timedelta(hours=BULK_HOURS)


def _replace_rows(cur, project_ids: Sequence[int], start: datetime, end: datetime) -> int:  # type: ignore[no-untyped-def]
    """Replace the RollupHour rows of whole hours [start, end) with rows computed from spans."""
    params = rollup_params(project_ids, start, end)
    cur.execute(_DELETE_HOURS, params)
    cur.execute(_INSERT.format(select=rollup_rows_sql(bulk=_is_bulk(start, end))), params)
    return int(cur.rowcount)


# The other hours of the traces that gained spans in an hour: a late root (or any span with
# the tenant, the feature or the task id) changes the attribution of its trace's spans in
# those hours too, and ingest noted only its own hour. Ingest stamps a batch's spans
# (received_at) and its notes (noted_at) with the same now(), so the spans that came with the
# notes being consumed are those received at or after the oldest of them. The hours noted
# here have no such spans, so the propagation stops after one step.
_NOTE_TRACE_HOURS = f"""
INSERT INTO rollups_dirtyhour (project_id, hour, noted_at)
SELECT DISTINCT %(project_id)s, {HOUR_OF_SQL.format(x="o.start_time")}, now()
FROM (
    SELECT DISTINCT n.trace_id
    FROM telemetry_span AS n
    WHERE n.project_id = %(project_id)s AND n.start_time >= %(start)s AND n.start_time < %(end)s
      AND n.received_at >= %(since)s
) AS t
-- Trace by trace through the primary key (OFFSET 0: never a hash over the whole window).
CROSS JOIN LATERAL (
    SELECT o.start_time FROM telemetry_span AS o
    WHERE o.trace_id = t.trace_id AND o.project_id = %(project_id)s
      AND o.start_time >= %(window_start)s AND o.start_time < %(window_end)s
    OFFSET 0
) AS o
WHERE NOT (o.start_time >= %(start)s AND o.start_time < %(end)s)
"""


def _note_trace_hours(cur, project_id: int, hour: datetime, since: datetime) -> None:  # type: ignore[no-untyped-def]
    params = {**rollup_params([project_id], hour, hour + HOUR), "project_id": project_id, "since": since}
    cur.execute(_NOTE_TRACE_HOURS, params)


def _recompute_hour(project_id: int, hour: datetime, *, wait: bool) -> bool:
    """Recompute one noted hour under its lock; False when another worker holds the lock
    (wait=False) or nobody noted it any more."""
    hour = floor_hour(hour)
    with transaction.atomic(), connection.cursor() as cur:
        keys: dict[str, Any] = {"project_id": project_id, "hour": _hour_key(hour)}
        hour_lock = _HOUR_LOCK.format(hour="%(hour)s")
        project_hour_lock = _PROJECT_HOUR_LOCK.format(project="%(project_id)s", hour="%(hour)s")
        if wait:
            cur.execute(
                f"SELECT pg_advisory_xact_lock_shared({hour_lock}), pg_advisory_xact_lock({project_hour_lock})", keys
            )
        else:
            # When one is refused, the other (if taken) goes when this transaction ends, below.
            cur.execute(
                f"SELECT pg_try_advisory_xact_lock_shared({hour_lock}) "
                f"AND pg_try_advisory_xact_lock({project_hour_lock})",
                keys,
            )
            if not cur.fetchone()[0]:
                return False
        # The notes are read under the lock, before the recompute reads spans. Under READ
        # COMMITTED each statement sees what had committed when it began, so every note read
        # here is older than the INSERT ... SELECT below, and so are the spans it announced.
        cur.execute(
            "SELECT id, noted_at FROM rollups_dirtyhour WHERE project_id = %s AND hour = %s", [project_id, hour]
        )
        notes = cur.fetchall()
        note_ids = [note_id for note_id, _ in notes]
        if not note_ids and not wait:
            return False  # another worker recomputed the hour since our batch was read
        _prepare(cur)
        if notes:
            _note_trace_hours(cur, project_id, hour, min(noted_at for _, noted_at in notes))
        _replace_rows(cur, [project_id], hour, hour + HOUR)
        # Exactly the notes read above, never `id <= max(id)`: ids come from a sequence when a
        # note is inserted, but transactions commit in another order. A batch of spans whose
        # transaction took a smaller id and committed after the read above (so its spans were
        # not in the recompute) must keep its note, or those spans would never be rolled up.
        if note_ids:
            cur.execute("DELETE FROM rollups_dirtyhour WHERE id = ANY(%s::bigint[])", [note_ids])
        # An hour set aside after failing is cleared by the recompute that succeeds.
        cur.execute("DELETE FROM rollups_rollupfailure WHERE project_id = %s AND hour = %s", [project_id, hour])
        if cur.rowcount:
            log.info("project %s, hour %s rolled up after failing before", project_id, f"{hour:%Y-%m-%d %H:00}")
    return True


def recompute_hours(project_id: int, hours: Iterable[datetime]) -> int:
    """Recompute the given hours of a project now, waiting for any worker that holds one;
    consumes their notes, then rebuilds the day rows of their closed days. Returns the number
    of hours recomputed."""
    done = 0
    hours = sorted({floor_hour(hour) for hour in hours})
    for hour in hours:
        done += _recompute_hour(project_id, hour, wait=True)
    if hours:
        day_rows.rebuild_stale_days(days=hours, limit=len(hours))
    return done


def pending_hours(limit: int, skip: Collection[tuple[int, datetime]] = ()) -> list[tuple[int, datetime]]:
    """The oldest noted (project, hour) pairs but those in `skip` and those set aside until
    later (RollupFailure). dirty_hour_read serves the GROUP BY and ORDER BY, and the LIMIT
    stops the index scan early; the set-aside hours are a handful of rows, hashed."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT d.project_id, d.hour FROM rollups_dirtyhour AS d"
            " WHERE NOT EXISTS (SELECT FROM rollups_rollupfailure AS f"
            "                   WHERE f.project_id = d.project_id AND f.hour = d.hour AND f.next_attempt_at > %s)"
            " GROUP BY d.hour, d.project_id ORDER BY d.hour, d.project_id LIMIT %s",
            [timezone.now(), limit + len(skip)],
        )
        pairs = [(project_id, hour) for project_id, hour in cur.fetchall() if (project_id, hour) not in skip]
    return pairs[:limit]


# SQLSTATE classes of a lost connection or a server going away: the sweep stops and the task
# retries later (the notes are all still there). Any other error belongs to the hour.
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def _is_transient(error: DatabaseError) -> bool:
    sqlstate = getattr(error.__cause__, "sqlstate", None) or ""
    return sqlstate.startswith(_TRANSIENT_SQLSTATES) or not connection.is_usable()


def _set_aside(project_id: int, hour: datetime, error: DatabaseError) -> None:
    """Record a failed recompute (RollupFailure): the sweep goes on with the other hours and
    tries this one again after its backoff."""
    text = str(error).strip()[:2000] or type(error).__name__
    with transaction.atomic():
        failure = RollupFailure.record(project_id, hour, text, timezone.now())
    log.warning(
        "rollup of project %s, hour %s failed (attempt %s), set aside until %s: %s",
        project_id, f"{hour:%Y-%m-%d %H:00}", failure.attempts, f"{failure.next_attempt_at:%Y-%m-%d %H:%M:%S}",
        text.splitlines()[0] if text else "",
    )  # fmt: skip


def recompute_pending(limit: int = 100, skip: Collection[tuple[int, datetime]] = ()) -> list[tuple[int, datetime]]:
    """Take up to `limit` noted hours, oldest first, but those in `skip`, those another worker
    holds and those set aside until later, and recompute each in its own transaction (a
    savepoint inside a caller's). An hour that fails is set aside (RollupFailure) and the
    others go on; a lost connection stops the sweep. Returns the (project, hour) pairs taken:
    recomputed, or set aside."""
    taken = []
    for project_id, hour in pending_hours(limit, skip):
        try:
            if _recompute_hour(project_id, hour, wait=False):
                taken.append((project_id, hour))
        except DatabaseError as error:
            if _is_transient(error):
                raise
            _set_aside(project_id, hour, error)
            taken.append((project_id, hour))
    return taken


def rollup_pending(limit: int = 100) -> int:
    """Recompute up to `limit` noted hours, oldest first, skipping those another worker
    holds and those set aside, then rebuild the day rows of the closed days they changed.
    Returns how many hours were taken (0: nothing left that is free)."""
    taken = recompute_pending(limit)
    day_rows.rebuild_stale_days()
    return len(taken)


# Each day's change notes (models.DayChange) folded into one fresh row. The DELETE takes only
# committed notes and inserts one in their place in the same transaction, so a stale day
# never looks current; two compactions at once wait on each other's deletes, and each adds at
# most one row a day. A day rebuild that read notes folded meanwhile deletes nothing: the
# folded note keeps the day stale until the next sweep rebuilds it again (work, never error).
_COMPACT_DAY_CHANGES = """
WITH crowded AS (
    SELECT project_id, day FROM rollups_daychange GROUP BY project_id, day HAVING count(*) > 1
), folded AS (
    DELETE FROM rollups_daychange AS c USING crowded
    WHERE c.project_id = crowded.project_id AND c.day = crowded.day
    RETURNING c.project_id, c.day
)
INSERT INTO rollups_daychange (project_id, day)
SELECT DISTINCT project_id, day FROM folded
"""


def compact_day_changes() -> int:
    """Fold the day change notes the rollup writes leave (two a recomputed hour) into one a
    day: the open day gathers two every sweep until it closes and its day rows are built.
    Returns the days folded."""
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(_COMPACT_DAY_CHANGES)
        return int(cur.rowcount)


def _project_ids() -> list[int]:
    from apps.accounts.models import Project

    return list(Project.objects.order_by("pk").values_list("pk", flat=True))


def _range_chunk(first: datetime, last: datetime) -> timedelta:
    """Whole days holding about RANGE_CHUNK_SPANS spans, by the partitions' statistics."""
    from apps.telemetry.partitions import partition_name

    days = {(first + timedelta(days=offset)).date() for offset in range((last - first).days + 1)}
    with connection.cursor() as cur:
        cur.execute(
            "SELECT sum(reltuples) FILTER (WHERE reltuples >= 0), count(*) FILTER (WHERE reltuples >= 0) "
            "FROM pg_class WHERE relname = ANY(%s)",
            [[partition_name(day) for day in days]],
        )
        spans, analyzed = cur.fetchone()
    if not analyzed or not spans:
        return timedelta(days=1)
    per_day = float(spans) / analyzed
    return timedelta(days=max(1, min(RANGE_CHUNK_MAX_DAYS, int(RANGE_CHUNK_SPANS // per_day))))


def rollup_range(start: datetime, end: datetime, project_ids: Sequence[int] | None = None, *, workers: int = 1) -> int:
    """(Re)build every hour that overlaps [start, end) for `project_ids` (default: every
    project), whole days per transaction (RANGE_CHUNK_SPANS); consumes the notes of those
    hours. Returns the number of RollupHour rows written.

    `workers` > 1 rebuilds that many chunks at once, each on its own database connection (a
    backfill on a machine with cores to spare: one statement uses one core).
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("rollup_range needs aware datetimes")
    if project_ids is None:
        project_ids = _project_ids()
    project_ids = sorted(set(project_ids))
    first = floor_hour(start)
    last = floor_hour(end - timedelta(microseconds=1)) + HOUR if end > start else first
    chunk = _range_chunk(first, last)
    chunks = []
    chunk_start = first
    while chunk_start < last:
        chunk_end = min(chunk_start + chunk, last)
        chunks.append((chunk_start, chunk_end))
        chunk_start = chunk_end
    if workers <= 1 or len(chunks) <= 1:
        written = sum(_rollup_chunk(project_ids, chunk_start, chunk_end) for chunk_start, chunk_end in chunks)
    else:

        def rollup_chunk_on_own_connection(chunk: tuple[datetime, datetime]) -> int:
            try:
                return _rollup_chunk(project_ids, *chunk)
            finally:
                connection.close()  # this thread's connection; the pool thread may not run again

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rollup") as pool:
            written = sum(pool.map(rollup_chunk_on_own_connection, chunks))
    compact_day_changes()
    return written


def _rollup_chunk(project_ids: list[int], start: datetime, end: datetime) -> int:
    hours = []
    hour = start
    while hour < end:
        hours.append(hour)
        hour += HOUR
    with transaction.atomic(), connection.cursor() as cur:
        # Every hour's lock, exclusively and in hour order, so two range rebuilds never
        # deadlock; a noted-hour recompute holds one hour at a time (and a sweep only tries).
        cur.execute(
            f"SELECT pg_advisory_xact_lock({_HOUR_LOCK.format(hour='h')}) FROM unnest(%s::text[]) AS h ORDER BY h",
            [[_hour_key(hour) for hour in hours]],
        )
        cur.execute(
            "SELECT id FROM rollups_dirtyhour WHERE project_id = ANY(%s::bigint[]) AND hour >= %s AND hour < %s",
            [project_ids, start, end],
        )
        note_ids = [row[0] for row in cur.fetchall()]
        _prepare(cur, bulk=_is_bulk(start, end))
        written = _replace_rows(cur, project_ids, start, end)
        if note_ids:
            cur.execute("DELETE FROM rollups_dirtyhour WHERE id = ANY(%s::bigint[])", [note_ids])
        # The closed days these hours belong to get their day rows in the same transaction
        # (day_rows.py): after the hours' locks, the days' in order, so no two chunks deadlock.
        first_day = day_rows.floor_day(start)
        end_day = min(day_rows.floor_day(end - timedelta(microseconds=1)) + day_rows.DAY,
                      day_rows.closed_days_end(timezone.now()))  # fmt: skip
        if first_day < end_day:
            day_rows.lock_days(cur, [first_day + n * day_rows.DAY for n in range((end_day - first_day).days)])
            day_rows.rebuild_days(cur, project_ids, first_day, end_day)
    log.info("rolled up %s to %s: %s rows", start, end, written)
    return written
