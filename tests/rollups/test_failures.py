"""One hour that cannot be rolled up blocks nothing (issue 9): it is set aside with its error
and a backoff, the sweep goes on with every other hour, and it is retried until it works."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test import Client

from apps.accounts.models import Project
from apps.rollups import tasks
from apps.rollups.models import DirtyHour, RollupFailure
from apps.rollups.runner import rollup_pending
from apps.telemetry.store import insert_spans
from tests.rollups.helpers import rows, total
from tests.rollups.test_runner import HOUR, call_traces

T0 = HOUR + timedelta(days=3)


def _poison(project: Project, tenant_sql: str) -> None:
    """Set the tenant of the project's root spans in HOUR straight in SQL (ingest would cap it)."""
    with connection.cursor() as cur:
        cur.execute(
            f"UPDATE telemetry_span SET tenant = {tenant_sql}"
            " WHERE project_id = %s AND start_time >= %s AND start_time < %s AND parent_span_id IS NULL",
            [project.pk, HOUR, HOUR + timedelta(hours=1)],
        )
        assert cur.rowcount == 2


# 3008 bytes of hex that does not compress: over the btree row limit of the rollup's unique index.
HUGE_TENANT = "(SELECT string_agg(md5(n::text), '') FROM generate_series(1, 94) AS n)"


@pytest.mark.django_db
def test_a_failing_hour_is_set_aside_retried_with_backoff_and_cleared(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    other = Project.objects.create(name="other")
    insert_spans(project.pk, call_traces(HOUR, 2))  # project A, 10:00: poisoned below
    insert_spans(project.pk, call_traces(HOUR + timedelta(hours=2), 3))  # A, 12:00
    insert_spans(other.pk, call_traces(HOUR, 4))  # B, 10:00
    _poison(project, HUGE_TENANT)

    with time_machine.travel(T0, tick=False), caplog.at_level(logging.WARNING, logger="apps.rollups.runner"):
        # The poisoned hour is the oldest noted pair: it is taken first and fails, and the
        # others are rolled up all the same.
        assert rollup_pending() == 3
    assert total(other.pk).requests == 4
    assert [(row.bucket, row.requests) for row in rows(project.pk, 0)] == [(HOUR + timedelta(hours=2), 3)]
    failure = RollupFailure.objects.get()
    assert (failure.project_id, failure.hour, failure.attempts) == (project.pk, HOUR, 1)
    assert "index row size" in failure.error
    assert failure.next_attempt_at == T0 + timedelta(minutes=1)
    assert "set aside until" in caplog.text and "index row size" in caplog.text
    # Its notes stay: the query layer reads the hour from raw spans meanwhile.
    assert list(DirtyHour.objects.values_list("project_id", "hour").distinct()) == [(project.pk, HOUR)]

    # Not tried again before its next attempt, by the function or by the task.
    with time_machine.travel(T0 + timedelta(seconds=59), tick=False):
        assert rollup_pending() == 0
        assert tasks.rollup_pending_task.apply().get() == 0
    assert RollupFailure.objects.get().attempts == 1

    # Tried again after it, fails again: the wait doubles.
    retried_at = T0 + timedelta(minutes=1)
    with time_machine.travel(retried_at, tick=False):
        assert rollup_pending() == 1
    failure = RollupFailure.objects.get()
    assert failure.attempts == 2 and failure.next_attempt_at == retried_at + timedelta(minutes=2)
    assert not rows(project.pk, 0, bucket=HOUR)

    # Fixed: the next attempt rolls it up and clears the failure.
    _poison(project, "'acme'")
    with time_machine.travel(retried_at + timedelta(minutes=2), tick=False):
        assert rollup_pending() == 1
    assert not RollupFailure.objects.exists() and not DirtyHour.objects.exists()
    assert rows(project.pk, 0, bucket=HOUR)[0].requests == 2


def test_the_backoff_doubles_up_to_a_cap() -> None:
    waits = [RollupFailure.backoff(attempts).total_seconds() for attempts in range(1, 10)]
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


@pytest.mark.django_db
def test_failures_are_listed_in_admin(project: Project, admin_client: Client) -> None:
    RollupFailure.record(project.pk, HOUR, "index row size 3024 exceeds btree version 4 maximum 2704", T0)
    response = admin_client.get("/admin/rollups/rollupfailure/")
    assert response.status_code == 200
    assert b"index row size 3024 exceeds" in response.content
