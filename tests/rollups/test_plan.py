"""The plans the rollup SELECT relies on (apps/rollups/compute.py): partitions pruned at plan
time to the attribution window, traces read by key for a short range."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection

from apps.accounts.models import Project
from apps.rollups import compute
from apps.telemetry.partitions import ensure_partitions_for
from tests.rollups.helpers import at

pytestmark = pytest.mark.django_db

HOUR = at("2026-03-05T10:00:00")


def plan(project: Project, *, bulk: bool, hours: int = 1) -> str:
    ensure_partitions_for({(HOUR + timedelta(days=offset)).date() for offset in range(-3, 4)})
    with connection.cursor() as cur:
        cur.execute(
            f"EXPLAIN (COSTS OFF) {compute.rollup_rows_sql(bulk=bulk)}",
            compute.rollup_params([project.pk], HOUR, HOUR + timedelta(hours=hours)),
        )
        return "\n".join(row[0] for row in cur.fetchall())


@pytest.mark.parametrize("bulk", [False, True])
def test_only_the_window_partitions_are_read(project: Project, bulk: bool) -> None:
    text = plan(project, bulk=bulk)
    for day in ("20260304", "20260305", "20260306"):  # the hour, and a day either side
        assert f"telemetry_span_p{day}" in text
    for day in ("20260302", "20260303", "20260307", "20260308"):
        assert f"telemetry_span_p{day}" not in text


def test_a_short_range_reads_its_traces_by_key(project: Project) -> None:
    """Trace by trace through the primary key (a parameterised scan under a nested loop), not
    a hash join over every span of the window."""
    text = plan(project, bulk=False)
    assert "Nested Loop" in text
    assert re.search(r"Index Cond: \(\(trace_id = \w+\.trace_id\) AND \(start_time >=", text)
    assert "telemetry_span_task" in text or "project_id_task_id" in text  # the task index for task ids
