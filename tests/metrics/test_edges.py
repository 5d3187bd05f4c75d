"""Where numbers are read from: the open edge and noted hours come from raw spans, closed
hours from rollups, and the two agree."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine

from apps.accounts.models import Project
from apps.metrics.plan import HOUR
from apps.metrics.query import Filters, Query, Scope, SharedReads, run_query, shared_reads_for
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


ALL_METRICS = (
    "requests", "errors", "successes", "error_rate", "errors_by_type", "retries", "retry_rate", "input_tokens",
    "cache_read_tokens", "output_tokens", "tokens_unknown", "cost_usd", "cost_unknown_requests",
    "cost_per_1k_requests", "tasks", "successful_tasks", "cost_per_successful_task", "prompt_cache_hit_rate",
    "tokens_per_second", "e2e_ms_p50", "e2e_ms_p99", "ttft_ms_p95", "output_tokens_p90", "tpot_ms_p50",
)  # fmt: skip


def assert_same_rows(rows: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Equal, but for float sums added in another order (generation_ms: tokens_per_second)."""
    assert len(rows) == len(expected)
    for row, other in zip(rows, expected, strict=True):
        assert row.keys() == other.keys()
        for name, value in row.items():
            if isinstance(value, float):
                assert value == pytest.approx(other[name], rel=1e-12), name
            else:
                assert value == other[name], name


def test_an_hour_read_raw_while_open_reads_the_same_from_rollups_once_closed(project: Project) -> None:
    from apps.rollups.runner import rollup_range

    traffic = Traffic(seed=9)
    spans = traffic.spans(1500, CURRENT_HOUR - 3 * HOUR, NOW - timedelta(minutes=5))
    insert_spans(project.pk, spans)
    start, end = CURRENT_HOUR - 3 * HOUR, NOW - timedelta(minutes=2)
    queries = [
        Query(ALL_METRICS, start, end, granularity="hour"),
        Query(ALL_METRICS, start, end, group_by=("tenant", "model")),
        Query(ALL_METRICS, start, end, group_by=("feature",), granularity="day"),
    ]
    with time_machine.travel(NOW, tick=False):
        while_open = [run_query(query, EVERYTHING) for query in queries]
        for shared in (SharedReads(), shared_reads_for(queries, EVERYTHING)):
            for query, result in zip(queries, while_open, strict=True):
                assert_same_rows(run_query(query, EVERYTHING, shared=shared).rows, result.rows)
            # The two raw pieces of the three queries (the partial last hour, the open
            # hour), each rolled up once for the queries' grouping sets.
            assert len(shared.pieces) == 2
        assert sorted(shared.pieces[(project.pk,), CURRENT_HOUR, end]) == [
            0,
            mask("feature"),
            mask("tenant", "provider", "model"),
        ]
    assert any(piece.start == CURRENT_HOUR for piece in while_open[0].plan.raw if while_open[0].plan)
    assert while_open[0].rows[-1]["requests"] > 0

    with time_machine.travel(NOW + 2 * HOUR, tick=False):
        rollup_range(start - HOUR, NOW + HOUR)
        once_closed = [run_query(query, EVERYTHING) for query in queries]
    for before, after in zip(while_open, once_closed, strict=True):
        assert after.plan is not None
        assert [piece.reason for piece in after.plan.raw] == ["edge"]  # only the partial last hour
        assert_same_rows(after.rows, before.rows)
