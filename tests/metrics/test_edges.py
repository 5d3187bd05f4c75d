"""Where numbers are read from: the open edge and noted hours come from raw spans, closed
hours from rollups, and the two agree."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine

from apps.accounts.models import Project
from apps.metrics.plan import HOUR
from apps.metrics.query import Filters, Query, Scope, run_query
from apps.rollups.models import DirtyHour, RollupHour, mask
from apps.telemetry.store import insert_spans
from tests.metrics.traffic import Traffic, at

NOW = at("2026-05-04T10:37:00")
CURRENT_HOUR = at("2026-05-04T10:00:00")
EVERYTHING = Scope.everything()
METRICS = ("requests", "cost_usd", "e2e_ms_p99", "tasks")


def calls(spans: list[Any]) -> int:
    """Calls among the generated spans: LLM spans whose parent is not an LLM span."""
    llm = {span.span_id for span in spans if span.is_llm}
    return sum(1 for span in spans if span.is_llm and span.parent_span_id not in llm)


@pytest.fixture
def project(db: None) -> Project:
    return Project.objects.create(name="edges")


@pytest.fixture
def now() -> Any:
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def test_spans_of_the_current_hour_count_at_once_without_a_rollup(project: Project, now: Any) -> None:
    traffic = Traffic(seed=3)
    spans = traffic.spans(300, CURRENT_HOUR, NOW - timedelta(minutes=1))
    insert_spans(project.pk, spans)
    assert not RollupHour.objects.exists()

    result = run_query(Query(METRICS, NOW - timedelta(hours=6), NOW), EVERYTHING)
    assert result.rows[0]["requests"] == calls(spans)
    assert result.rows[0]["e2e_ms_p99_samples"] == calls(spans)
    assert result.plan is not None
    edges = [(piece.start, piece.end) for piece in result.plan.raw if piece.reason == "edge"]
    assert edges == [(NOW - timedelta(hours=6), CURRENT_HOUR - timedelta(hours=5)), (CURRENT_HOUR, NOW)]

    by_hour = run_query(Query(METRICS, CURRENT_HOUR - timedelta(hours=2), NOW, granularity="hour"), EVERYTHING)
    assert [row["requests"] for row in by_hour.rows] == [0, 0, calls(spans)]
    assert [row["time"] for row in by_hour.rows] == [CURRENT_HOUR - 2 * HOUR, CURRENT_HOUR - HOUR, CURRENT_HOUR]


def test_a_noted_hour_is_read_raw_and_other_closed_hours_from_rollups(project: Project, now: Any) -> None:
    from apps.rollups.runner import rollup_range

    traffic = Traffic(seed=5)
    first = CURRENT_HOUR - timedelta(hours=5)
    spans = traffic.spans(600, first, CURRENT_HOUR)
    insert_spans(project.pk, spans)
    rollup_range(first, CURRENT_HOUR)
    assert not DirtyHour.objects.filter(hour__lt=CURRENT_HOUR).exists()
    query = Query(METRICS, first, CURRENT_HOUR, Filters(projects=(project.pk,)), granularity="hour")
    before = run_query(query, EVERYTHING)
    assert before.plan is not None and before.plan.raw == ()
    assert sum(row["requests"] for row in before.rows) == calls(spans)

    late_hour = first + 2 * HOUR
    late = traffic.spans(40, late_hour, late_hour + HOUR)
    insert_spans(project.pk, late)
    after = run_query(query, EVERYTHING)
    assert after.plan is not None
    assert [(p.project_ids, p.start, p.end) for p in after.plan.raw] == [((project.pk,), late_hour, late_hour + HOUR)]
    assert sum(row["requests"] for row in after.rows) == calls(spans) + calls(late)
    changed = [row["time"] for row, old in zip(after.rows, before.rows, strict=True) if row != old]
    assert changed == [late_hour]

    # Scoped and grouped reads take the same path, in their own grouping set.
    grouped = run_query(
        Query(METRICS, first, CURRENT_HOUR, group_by=("feature",)), Scope(tenants=("acme", "globex"))
    )  # fmt: skip
    assert grouped.plan is not None and grouped.plan.grouping == mask("tenant", "feature")
    assert [p.start for p in grouped.plan.raw] == [late_hour]
