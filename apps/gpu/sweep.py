"""The gpu.attribute_costs sweep: which intervals are due, and which must be redone.

Beat only triggers. Per project an AttributionCursor row says how far attribution has got
(`computed_until`) and since when arrivals were last checked (`watermark`); a sweep claims
the row with a conditional UPDATE on its lease (exactly one row, or another worker has it),
so a killed worker holds nothing past the lease.

- **Due**: intervals that closed GPU_COST_GRACE_SECONDS ago (late samples get that long),
  oldest first, at most GPU_INTERVALS_PER_SWEEP a sweep. A project's first sweep starts at
  its first GPU sample of the last GPU_ATTRIBUTION_BACKFILL_DAYS (+ 1) days and catches up in
  steps.
- **Late**: an LLM span or a GPU presence point received since the watermark whose time
  falls in an interval already attributed (a span: every interval its [start, end]
  overlaps; its trace's server span lies inside it) re-attributes that interval, up to
  GPU_LATE_LOOKBACK_HOURS back. The next watermark is this sweep's start minus
  COMMIT_SLACK: ingest stamps received_at when its transaction starts, so a batch that
  committed after this sweep read is still seen by the next one (seeing one twice only
  recomputes an interval twice, which changes nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from apps.gpu.attribution import (
    PRESENCE_SERIES,
    GpuPriceBook,
    InstanceMap,
    attribute_interval,
    floor_interval,
    interval_seconds,
)
from apps.gpu.models import AttributionCursor

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)
COMMIT_SLACK = timedelta(seconds=60)

# Intervals that late spans fall into. The partial index telemetry_span_llm_start (is_llm,
# start_time) bounds the scan to the lookback; received_at is filtered on those rows.
_LATE_SPANS_SQL = """
SELECT DISTINCT i
FROM telemetry_span AS s
CROSS JOIN LATERAL generate_series(
    date_bin(make_interval(secs => %(seconds)s), s.start_time, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
    s.end_time, make_interval(secs => %(seconds)s)) AS i
WHERE s.project_id = %(project)s AND s.is_llm AND s.start_time >= %(since)s AND s.start_time < %(until)s
  AND s.received_at >= %(watermark)s
"""
_LATE_POINTS_SQL = """
SELECT DISTINCT date_bin(make_interval(secs => %(seconds)s), p.time, TIMESTAMPTZ '2000-01-01 00:00:00+00')
FROM gpu_metric_series AS s
JOIN gpu_metric_point AS p ON p.project_id = s.project_id AND p.series_id = s.series_id
WHERE s.project_id = %(project)s AND s.name = ANY(%(names)s)
  AND p.time >= %(since)s AND p.time < %(until)s AND p.received_at >= %(watermark)s
"""
# Projects with something to attribute: GPU series or a cursor already.
# Projects that exist: metric series carry no foreign key (partitioned point tables), so a
# deleted project's series may outlive it, and its cursor could not be written.
_PROJECTS_SQL = """
SELECT project_id FROM (
    SELECT DISTINCT project_id FROM gpu_metric_series WHERE name = ANY(%s)
    UNION SELECT project_id FROM gpu_attributioncursor
) AS found WHERE project_id IN (SELECT id FROM accounts_project)
"""


@dataclass
class SweepResult:
    project_id: int
    due: int = 0
    late: int = 0
    spans_changed: int = 0
    skipped: bool = False


def claim(project_id: int, now: datetime) -> AttributionCursor | None:
    """The project's cursor, leased to this worker; None when another worker holds it."""
    start = _first_interval(project_id, now)
    AttributionCursor.objects.get_or_create(project_id=project_id, defaults={"computed_until": start, "watermark": now})
    with connection.cursor() as cur:
        cur.execute(
            "UPDATE gpu_attributioncursor SET lease_until = %s "
            "WHERE project_id = %s AND (lease_until IS NULL OR lease_until < %s)",
            [now + LEASE, project_id, now],
        )
        if cur.rowcount != 1:
            return None
    return AttributionCursor.objects.get(project_id=project_id)


def _first_interval(project_id: int, now: datetime) -> datetime:
    """Where a project's attribution starts: its first GPU sample of the backfill window (a
    day more, so a backfill that began just before the first sweep is covered whole)."""
    since = now - timedelta(days=settings.GPU_ATTRIBUTION_BACKFILL_DAYS + 1)
    with connection.cursor() as cur:
        cur.execute(
            "SELECT min(p.time) FROM gpu_metric_series AS s JOIN gpu_metric_point AS p "
            "ON p.project_id = s.project_id AND p.series_id = s.series_id "
            "WHERE s.project_id = %s AND s.name = ANY(%s) AND p.time >= %s",
            [project_id, list(PRESENCE_SERIES), since],
        )
        first = cur.fetchone()[0]
    return floor_interval(first if first is not None else now)


def late_intervals(cursor: AttributionCursor, now: datetime) -> set[datetime]:
    params: dict[str, Any] = {
        "project": cursor.project_id,
        "seconds": interval_seconds(),
        "since": now - timedelta(hours=settings.GPU_LATE_LOOKBACK_HOURS),
        "until": cursor.computed_until,
        "watermark": cursor.watermark,
        "names": list(PRESENCE_SERIES),
    }
    found: set[datetime] = set()
    with connection.cursor() as cur:
        for sql in (_LATE_SPANS_SQL, _LATE_POINTS_SQL):
            cur.execute(sql, params)
            found.update(row[0] for row in cur.fetchall())
    return {moment for moment in found if moment < cursor.computed_until}


def sweep_project(project_id: int, now: datetime | None = None) -> SweepResult:
    now = now or datetime.now(UTC)
    result = SweepResult(project_id)
    cursor = claim(project_id, now)
    if cursor is None:
        result.skipped = True
        return result
    try:
        seconds = interval_seconds()
        book, instances = GpuPriceBook.load(), InstanceMap.for_project(project_id)
        late = sorted(late_intervals(cursor, now))
        due_until = floor_interval(now - timedelta(seconds=settings.GPU_COST_GRACE_SECONDS), seconds)
        due: list[datetime] = []
        moment = cursor.computed_until
        while moment + timedelta(seconds=seconds) <= due_until and len(due) < settings.GPU_INTERVALS_PER_SWEEP:
            due.append(moment)
            moment += timedelta(seconds=seconds)
        for start in late:
            result.spans_changed += attribute_interval(project_id, start, book=book, instances=instances).spans_changed
        for start in due:
            result.spans_changed += attribute_interval(project_id, start, book=book, instances=instances).spans_changed
            # Progress is kept interval by interval: a sweep stopped by its time limit resumes here.
            AttributionCursor.objects.filter(project_id=project_id).update(
                computed_until=start + timedelta(seconds=seconds)
            )
        result.late, result.due = len(late), len(due)
        with transaction.atomic():
            AttributionCursor.objects.filter(project_id=project_id).update(
                computed_until=moment,
                watermark=now - COMMIT_SLACK,
                lease_until=None,
                last_run_at=now,
                last_error="",
            )
    except Exception as exc:
        AttributionCursor.objects.filter(project_id=project_id).update(lease_until=None, last_error=str(exc)[:2000])
        raise
    return result


def sweep(now: datetime | None = None) -> list[SweepResult]:
    with connection.cursor() as cur:
        cur.execute(_PROJECTS_SQL, [list(PRESENCE_SERIES)])
        projects = sorted(row[0] for row in cur.fetchall())
    results = []
    for project_id in projects:
        try:
            results.append(sweep_project(project_id, now))
        except DatabaseError as error:
            if not connection.is_usable():
                raise  # the database went away: the task retries later
            # One project's failure (a row it cannot write) must not stop every other
            # project's attribution: logged, retried on the next sweep.
            log.exception("GPU cost attribution of project %s failed: %s", project_id, error)
    return results
