"""Writing metric points: series rows, per-interval increases, COPY, ON CONFLICT DO NOTHING.

A batch is one transaction: the series it names are inserted if new; the cumulative ones are
locked (so two batches of one series never compute increases from the same baseline), their
baselines read, every cumulative point given its interval (collectors.counters), then the
points COPYed straight into the table in a savepoint. A batch with a point already stored
fails that COPY on the primary key and goes through a temporary table and one INSERT ...
ON CONFLICT DO NOTHING instead, so an exporter's retry is a no-op. The caller acknowledges
only after this returns.

Points normally arrive in order: the baseline is the series' latest stored point before the
batch. A point that arrives after a later one of its series (a late or re-sent batch) also
re-derives the stored later points' intervals, so an interval is never counted twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import psycopg
from django.conf import settings
from django.db import connection, transaction

from apps.gpu.partitions import METRIC_POINTS
from apps.gpu.pg_binary import Int8Array, NanosecondsArray, number_rows, use_binary_dumpers
from collectors.counters import fill_interval
from collectors.metric_records import GAUGE, SUM, TEMPORALITY_CUMULATIVE, MetricPoint

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# (column, PostgreSQL type for binary COPY). Keep in step with migrations/0001_initial.py.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("project_id", "int8"),
    ("series_id", "int8"),
    ("time", "timestamptz"),
    ("start_time", "timestamptz"),
    ("value", "float8"),
    ("increase", "float8"),
    ("count", "int8"),
    ("sum", "float8"),
    ("min", "float8"),
    ("max", "float8"),
    ("bounds", "float8[]"),
    ("bucket_counts", "int8[]"),
    ("scale", "int2"),
    ("zero_count", "int8"),
    ("positive_offset", "int4"),
    ("positive_counts", "int8[]"),
    ("negative_offset", "int4"),
    ("negative_counts", "int8[]"),
    ("interval_count", "int8"),
    ("interval_sum", "float8"),
    ("interval_buckets", "int8[]"),
    ("interval_zero_count", "int8"),
    ("interval_negative", "int8[]"),
)
_COLUMN_LIST = ", ".join(name for name, _ in COLUMNS)
_TYPES = [pg_type for _, pg_type in COLUMNS]
# Gauges and sums (most points) are COPYed with only the columns they fill: a third of the
# per-row encoding work of a full row; the rest default to NULL.
_NUMBER_COLUMNS = COLUMNS[:6]
_NUMBER_COLUMN_LIST = ", ".join(name for name, _ in _NUMBER_COLUMNS)
_INTERVAL_FIELDS = ("increase", "interval_count", "interval_sum", "interval_buckets", "interval_zero_count",
                    "interval_negative")  # fmt: skip

# Series known to have a row, per process: a batch of known series writes no series rows.
_known_series: set[tuple[int, int]] = set()


def forget_known_series() -> None:
    _known_series.clear()


def ns_to_datetime(ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=ns // 1000)


def datetime_to_ns(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _row(project_id: int, p: MetricPoint) -> tuple[Any, ...]:
    # Times stay unix nanoseconds: copy_dumpers turns them into timestamptz.
    return (
        project_id,
        p.series_id,
        p.time_ns,
        p.start_ns or None,
        p.value,
        p.increase,
        p.count,
        p.sum,
        p.min,
        p.max,
        p.bounds,
        p.bucket_counts,
        p.scale,
        p.zero_count,
        p.positive_offset,
        p.positive_counts,
        p.negative_offset,
        p.negative_counts,
        p.interval_count,
        p.interval_sum,
        p.interval_buckets,
        p.interval_zero_count,
        p.interval_negative,
    )


def _truncate_to_storage(points: Sequence[MetricPoint]) -> None:
    """timestamptz keeps microseconds: compare new points with stored ones at that precision,
    or a start time read back would differ from the one sent and look like a reset."""
    for p in points:
        p.time_ns -= p.time_ns % 1000
        p.start_ns -= p.start_ns % 1000


def _upsert_series(cur: Any, project_id: int, points: Sequence[MetricPoint]) -> None:
    firsts: dict[int, MetricPoint] = {}
    for p in points:
        if (project_id, p.series_id) not in _known_series:
            firsts.setdefault(p.series_id, p)
    if not firsts:
        return
    # A series this process has not met is usually stored already (another worker met it, or
    # this one before a restart): one probe of the primary key for all of them, and only the
    # rest are written, their JSON made. A row found is committed (ours are not written yet),
    # so it is remembered at once.
    cur.execute(
        "SELECT series_id FROM gpu_metric_series WHERE project_id = %b AND series_id = ANY(%b::bigint[])",
        [project_id, Int8Array(firsts)],
        binary=True,
    )
    for (series_id,) in cur.fetchall():
        del firsts[series_id]
        _known_series.add((project_id, series_id))
    if not firsts:
        return
    ordered = [firsts[series_id] for series_id in sorted(firsts)]  # one lock order for every batch
    # Binary parameters: psycopg quotes each element of a text-format text[] with a regex, which
    # made this statement cost more than the rest of a batch of new series.
    cur.execute(
        """
        INSERT INTO gpu_metric_series
            (project_id, series_id, name, kind, unit, temporality, monotonic, description, resource, attributes)
        SELECT %b, s.id, s.name, s.kind, s.unit, s.temporality, s.monotonic, s.description,
               s.resource::jsonb, s.attributes::jsonb
        FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::smallint[], %b::boolean[], %b::text[],
                    %b::text[], %b::text[])
             AS s(id, name, kind, unit, temporality, monotonic, description, resource, attributes)
        ON CONFLICT DO NOTHING
        """,
        [
            project_id,
            Int8Array(p.series_id for p in ordered),
            [p.name for p in ordered],
            [p.kind for p in ordered],
            [p.unit for p in ordered],
            [p.temporality for p in ordered],
            [p.monotonic for p in ordered],
            [p.description[:1000] for p in ordered],
            [orjson.dumps(p.resource, option=orjson.OPT_NON_STR_KEYS).decode() for p in ordered],
            [orjson.dumps(p.attributes, option=orjson.OPT_NON_STR_KEYS).decode() for p in ordered],
        ],
    )
    # Remembered only once committed: a batch that rolls back leaves no series row behind,
    # and a remembered id would keep its later points from ever getting one.
    new_keys = [(project_id, series_id) for series_id in firsts]
    transaction.on_commit(lambda: _known_series.update(new_keys))


_STORED_COLUMNS = (
    "series_id, time, start_time, value, increase, count, sum, bounds, bucket_counts, scale, zero_count, "
    "positive_offset, positive_counts, negative_offset, negative_counts, interval_count, interval_sum, "
    "interval_buckets, interval_zero_count, interval_negative"
)


def _stored_neighbours(cur: Any, project_id: int, first_times: dict[int, int]) -> dict[int, list[dict[str, Any]]]:
    """Per series: its latest stored point before the batch's first point of it (the baseline)
    and any stored points at or after it (a late or re-sent batch), in time order.

    One probe per series down the primary key (project_id, series_id, time) in the partitions
    of the look-back window; run-time partition pruning keeps it to those days.
    """
    series_ids = sorted(first_times)
    cur.execute(
        f"""
        WITH wanted(series_id, first_time) AS (SELECT * FROM unnest(%b::bigint[], %b::timestamptz[]))
        SELECT found.* FROM wanted w
        CROSS JOIN LATERAL (
            (SELECT {_STORED_COLUMNS} FROM gpu_metric_point p
             WHERE p.project_id = %b AND p.series_id = w.series_id
               AND p.time < w.first_time AND p.time >= w.first_time - %b::interval
             ORDER BY p.time DESC LIMIT 1)
            UNION ALL
            (SELECT {_STORED_COLUMNS} FROM gpu_metric_point p
             WHERE p.project_id = %b AND p.series_id = w.series_id AND p.time >= w.first_time)
        ) found
        ORDER BY found.series_id, found.time
        """,
        [
            Int8Array(series_ids),
            NanosecondsArray([first_times[s] for s in series_ids]),
            project_id,
            timedelta(days=settings.METRIC_BASELINE_LOOKBACK_DAYS),
            project_id,
        ],
        # Binary both ways: no text formatting of the id and time arrays, no timestamp parsing.
        binary=True,
    )
    names = [column.name for column in cur.description]
    stored: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in cur.fetchall():
        record = dict(zip(names, row, strict=True))
        stored[record["series_id"]].append(record)
    return stored


def _as_point(template: MetricPoint, record: dict[str, Any]) -> MetricPoint:
    start = record["start_time"]
    return MetricPoint(
        name=template.name,
        kind=template.kind,
        unit=template.unit,
        resource=template.resource,
        attributes=template.attributes,
        time_ns=datetime_to_ns(record["time"]),
        start_ns=datetime_to_ns(start) if start else 0,
        temporality=template.temporality,
        monotonic=template.monotonic,
        first_counts=template.first_counts,
        value=record["value"],
        count=record["count"],
        sum=record["sum"],
        bounds=record["bounds"],
        bucket_counts=record["bucket_counts"],
        scale=record["scale"],
        zero_count=record["zero_count"],
        positive_offset=record["positive_offset"],
        positive_counts=record["positive_counts"],
        negative_offset=record["negative_offset"],
        negative_counts=record["negative_counts"],
        increase=record["increase"],
        interval_count=record["interval_count"],
        interval_sum=record["interval_sum"],
        interval_buckets=record["interval_buckets"],
        interval_zero_count=record["interval_zero_count"],
        interval_negative=record["interval_negative"],
        series_id=template.series_id,
    )


def _intervals(cur: Any, project_id: int, points: Sequence[MetricPoint]) -> list[MetricPoint]:
    """Fill the intervals of the batch's points; returns stored points whose interval changed."""
    by_series: dict[int, list[MetricPoint]] = defaultdict(list)
    for p in points:
        if p.kind == GAUGE:
            continue  # no interval
        if p.temporality == TEMPORALITY_CUMULATIVE:
            by_series[p.series_id].append(p)
        else:
            fill_interval(None, p)
    if not by_series:
        return []
    # Two batches of one series must not both derive intervals from the same baseline (an
    # exporter's retry racing its original): a transaction-scoped advisory lock per series,
    # taken in one order. The two-int form keeps these keys apart from the partition DDL
    # lock (a bigint key); the series id is split into its two halves.
    cur.execute(
        "SELECT count(pg_advisory_xact_lock((s >> 32)::int4, (s & 4294967295)::bigint::bit(32)::int4)) "
        "FROM unnest(%b::bigint[]) AS s",
        [Int8Array(sorted(by_series))],
    )
    for series_points in by_series.values():
        series_points.sort(key=lambda p: p.time_ns)
    stored = _stored_neighbours(cur, project_id, {s: pts[0].time_ns for s, pts in by_series.items()})
    changed: list[MetricPoint] = []
    for series_id, new_points in by_series.items():
        records = stored.get(series_id, [])
        previous = None
        if len(records) == 1 and datetime_to_ns(records[0]["time"]) < new_points[0].time_ns:
            previous = _as_point(new_points[0], records[0])  # the usual case: only the baseline
        if previous is not None or not records:
            for p in new_points:
                fill_interval(previous, p)
                previous = p
            continue
        # Merge by time; a stored point wins over a re-sent one (ON CONFLICT keeps it anyway).
        stored_points = {datetime_to_ns(r["time"]): _as_point(new_points[0], r) for r in records}
        sequence = dict(stored_points)
        for p in new_points:
            sequence.setdefault(p.time_ns, p)
        previous = None
        for time_ns in sorted(sequence):
            p = sequence[time_ns]
            if previous is None and time_ns in stored_points:
                previous = p  # the baseline (or the first stored point): its interval stands
                continue
            before = tuple(getattr(p, name) for name in _INTERVAL_FIELDS)
            fill_interval(previous, p)
            if time_ns in stored_points and tuple(getattr(p, name) for name in _INTERVAL_FIELDS) != before:
                changed.append(p)
            previous = p
    return changed


def _rewrite_intervals(cur: Any, project_id: int, changed: Sequence[MetricPoint]) -> None:
    for p in changed:
        cur.execute(
            "UPDATE gpu_metric_point SET increase = %s, interval_count = %s, interval_sum = %s, "
            "interval_buckets = %s, interval_zero_count = %s, interval_negative = %s "
            "WHERE project_id = %s AND series_id = %s AND time = %s",
            [p.increase, p.interval_count, p.interval_sum, p.interval_buckets, p.interval_zero_count,
             p.interval_negative, project_id, p.series_id, ns_to_datetime(p.time_ns)],
        )  # fmt: skip


_DAY_NS = 86_400 * 10**9


def point_days(points: Sequence[MetricPoint]) -> set[date]:
    return {EPOCH.date() + timedelta(days=day) for day in {p.time_ns // _DAY_NS for p in points}}


def _copy_points(cur: Any, table: str, project_id: int, points: Sequence[MetricPoint]) -> None:
    """COPY the points into `table` (the points table itself, or the temporary one)."""
    numbers = [p for p in points if p.kind in (GAUGE, SUM)]
    if len(numbers) < len(points):
        histograms = [p for p in points if p.kind not in (GAUGE, SUM)]
        with cur.copy(f"COPY {table} ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_TYPES)
            for p in histograms:
                copy.write_row(_row(project_id, p))
    if numbers:
        with cur.copy(f"COPY {table} ({_NUMBER_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(number_rows(project_id, numbers))


def _insert_new_points(cur: Any, project_id: int, points: Sequence[MetricPoint]) -> int:
    """The path for a batch holding points already stored (a retry, a re-sent batch): COPY
    into a session-lifetime temp table (emptied at each commit: no DDL per batch), then one
    INSERT ... ON CONFLICT DO NOTHING. Returns how many were new."""
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS metric_point_incoming "
        "(LIKE gpu_metric_point INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    _copy_points(cur, "metric_point_incoming", project_id, points)
    cur.execute(
        f"""
        WITH inserted AS (
            INSERT INTO gpu_metric_point ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM metric_point_incoming
            ON CONFLICT DO NOTHING
            RETURNING 1
        )
        SELECT count(*) FROM inserted
        """
    )
    return int(cur.fetchone()[0])


def insert_points(project_id: int, points: Sequence[MetricPoint]) -> int:
    """Store points durably; returns how many were new (a re-sent point is not counted twice)."""
    if not points:
        return 0
    _truncate_to_storage(points)
    METRIC_POINTS.ensure(point_days(points))
    # psycopg errors raised on the raw cursors become Django's (OperationalError: the
    # receivers answer 503; DataError: 400), as they would on a Django cursor.
    with transaction.atomic(), connection.wrap_database_errors, ExitStack() as stack:
        # Django's cursors bind parameters client-side (quoting every array element into the
        # SQL text); the array-heavy statements go through a server-binding psycopg cursor
        # on the same connection and transaction instead.
        raw = stack.enter_context(psycopg.Cursor(connection.connection))
        use_binary_dumpers(raw.adapters)
        _upsert_series(raw, project_id, points)
        changed = _intervals(raw, project_id, points)
        try:
            # Nearly every batch is all new points: COPY them straight into the table, in a
            # savepoint. The primary key still decides: a batch with a point already stored
            # (an exporter's retry, whose original committed first or is waited for) fails
            # here whole, and takes the ON CONFLICT DO NOTHING path below. Measured: COPY
            # into the table costs PostgreSQL about a third less CPU than COPY into a temp
            # table plus INSERT ... ON CONFLICT (docs/gpu.md, "Ingest speed").
            with transaction.atomic():
                _copy_points(raw, "gpu_metric_point", project_id, points)
            inserted = len(points)
        except psycopg.errors.UniqueViolation:
            inserted = _insert_new_points(raw, project_id, points)
        _rewrite_intervals(raw, project_id, changed)
        return inserted
