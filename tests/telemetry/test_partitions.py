from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.db import connection

from apps.telemetry.partitions import existing_partition_days, maintain_partitions, partition_name
from apps.telemetry.store import insert_spans
from collectors.records import CanonicalSpan

pytestmark = pytest.mark.django_db


def _span(day: date, span_id: int = 1) -> CanonicalSpan:
    start_ns = int((day - date(1970, 1, 1)).total_seconds()) * 10**9 + 3600 * 10**9
    return CanonicalSpan(
        trace_id=b"\x01" * 16, span_id=span_id.to_bytes(8, "big"), parent_span_id=None, name="x", kind=1,
        start_ns=start_ns, end_ns=start_ns + 10**6, status_code=0, status_message="", service_name="svc",
        scope_name="tests",
    )  # fmt: skip


def test_maintenance_creates_ahead_and_drops_past_retention(settings: object) -> None:
    settings.SPAN_RETENTION_DAYS = 10  # type: ignore[attr-defined]
    settings.SPAN_PARTITIONS_AHEAD_DAYS = 2  # type: ignore[attr-defined]
    today = date(2026, 11, 21)
    old = today - timedelta(days=11)
    insert_spans(_project_id(), [_span(old)])
    assert old in existing_partition_days()

    created, dropped = maintain_partitions(today)
    days = existing_partition_days()
    assert {today - timedelta(days=1), today, today + timedelta(days=1), today + timedelta(days=2)} <= days
    # Other tests' committed history may have left older partitions: they go too.
    assert old in dropped and old not in days
    assert all(day < today - timedelta(days=10) for day in dropped)
    assert created == [today + timedelta(days=n) for n in range(-1, 3)]
    # Idempotent: a second run changes nothing.
    assert maintain_partitions(today) == ([], [])


def test_insert_is_idempotent_and_creates_the_partition_it_needs() -> None:
    day = date(2026, 11, 20)
    project_id = _project_id()
    assert insert_spans(project_id, [_span(day, 1), _span(day, 2), _span(day, 2)]) == 2
    assert insert_spans(project_id, [_span(day, 1), _span(day, 3)]) == 1
    with connection.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {partition_name(day)}")
        assert cur.fetchone()[0] == 3


def _project_id() -> int:
    from apps.accounts.models import Project

    return Project.objects.create(name="p").id
