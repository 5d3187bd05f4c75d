"""The metric store's own binary values read back from PostgreSQL exactly as meant: every
NULL pattern of a packed gauge/sum row, arrays of each kind (empty ones too), and times at
microsecond precision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import connection

from apps.gpu.pg_binary import Int8Array, NanosecondsArray, number_rows, use_binary_dumpers
from collectors.metric_records import GAUGE, MetricPoint

pytestmark = pytest.mark.django_db

T_NS = 1_765_000_000_123_456_789  # 2025-12-06, with nanoseconds the store drops
T = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=T_NS // 1000)


def _point(series_id: int, start_ns: int, value: float | None, increase: float | None) -> MetricPoint:
    point = MetricPoint(name="m", kind=GAUGE, unit="", resource={}, attributes={}, time_ns=T_NS, start_ns=start_ns)
    point.series_id, point.value, point.increase = series_id, value, increase
    return point


def test_number_rows_every_null_pattern() -> None:
    points = [
        _point(index, start, value, increase)
        for index, (start, value, increase) in enumerate(
            (s, v, i) for s in (0, T_NS - 10**9) for v in (None, -2.5) for i in (None, 0.125)
        )
    ]
    points[0].series_id = -(2**63)  # the whole signed range of a series id
    with connection.cursor() as django_cursor, psycopg.Cursor(connection.connection) as cur:
        django_cursor.execute(
            "CREATE TEMP TABLE rows_back (project_id int8, series_id int8, time timestamptz, "
            "start_time timestamptz, value float8, increase float8)"
        )
        with cur.copy("COPY rows_back FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(number_rows(7, points))
        cur.execute("SELECT * FROM rows_back ORDER BY series_id")
        rows = cur.fetchall()
    expected = sorted(
        (7, p.series_id, T, T - timedelta(seconds=1) if p.start_ns else None, p.value, p.increase) for p in points
    )
    assert rows == expected


def test_array_parameters() -> None:
    with psycopg.Cursor(connection.connection) as cur:
        use_binary_dumpers(cur.adapters)
        cur.execute(
            "SELECT %b::bigint[], %b::bigint[], %b::timestamptz[], %b::timestamptz[]",
            [Int8Array([2**63 - 1, -1, 0]), Int8Array([]), NanosecondsArray([T_NS, T_NS + 1000]), NanosecondsArray([])],
        )
        assert cur.fetchone() == ([2**63 - 1, -1, 0], [], [T, T + timedelta(microseconds=1)], [])


def test_array_columns_in_copy() -> None:
    with connection.cursor() as django_cursor, psycopg.Cursor(connection.connection) as cur:
        use_binary_dumpers(cur.adapters)
        django_cursor.execute("CREATE TEMP TABLE arrays_back (at timestamptz, counts int8[], bounds float8[])")
        with cur.copy("COPY arrays_back FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["timestamptz", "int8[]", "float8[]"])
            copy.write_row((T_NS, [0, 5, 2**62], [0.01, 2.5]))
            copy.write_row((T_NS, [], []))
        cur.execute("SELECT * FROM arrays_back")
        assert cur.fetchall() == [(T, [0, 5, 2**62], [0.01, 2.5]), (T, [], [])]
