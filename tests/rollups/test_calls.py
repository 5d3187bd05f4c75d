"""One provider call is one call (docs/metrics.md, "Call"), however many instrumentations saw it.

Each shape is checked twice: through rollup rows (rollup_range over the closed hour) and
through the query layer over a raw open edge (run_query while the hour is still open, so it
runs the same SELECT on raw spans). Both must give the same figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import connection

from apps.accounts.models import Project
from apps.metrics.query import Filters, Query, Scope, run_query
from apps.rollups import compute
from apps.rollups.runner import rollup_range
from apps.telemetry.store import insert_spans
from collectors.records import CanonicalSpan
from tests.rollups.helpers import STATUS_ERROR, Trace, at, distribution, sketch, total

pytestmark = pytest.mark.django_db

D = Decimal
HOUR = at("2026-03-02T10:00:00")
OPENLLMETRY = "opentelemetry.instrumentation.anthropic"
ANTHROPIC_SDK = "com.anthropic.sdk.python"
# Query-layer metric -> RollupHour column.
FIGURES = {name: name for name in ("requests", "errors", "input_tokens", "cache_read_tokens", "cache_write_tokens",
           "output_tokens", "reasoning_tokens", "cost_usd", "tokens_unknown", "tasks")} | {
           "cost_unknown_requests": "cost_unknown"}  # fmt: skip


@pytest.fixture
def open_hour() -> Iterator[None]:
    """The clock half way through HOUR: the query layer reads it from raw spans."""
    with time_machine.travel(HOUR + timedelta(minutes=50), tick=False):
        yield


def anthropic_call(trace: Trace, parent: CanonicalSpan | None, *, scope: str, **fields: Any) -> CanonicalSpan:
    """An Anthropic messages.create span as OpenLLMetry or the anthropic SDK exports it:
    input 1250 (200 + cache read 1000 + cache write 50), output 300."""
    name = "anthropic.chat" if scope == OPENLLMETRY else "anthropic.messages.create"
    defaults: dict[str, Any] = {
        "name": name,
        "scope_name": scope,
        "provider": "anthropic",
        "request_model": "claude-sonnet-4-5",
        "response_model": "claude-sonnet-4-5-20250929",
        "input_tokens": 1250,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 50,
        "output_tokens": 300,
        "cost_usd": D("0.006"),
        "at_ms": 10 if scope == OPENLLMETRY else 11,
        "duration_ms": 1000 if scope == OPENLLMETRY else 985,
    }
    return trace.llm(parent=parent, **{**defaults, **fields})


def both_paths(project: Project, *traces: Trace) -> dict[str, Any]:
    """The hour's totals from the query layer over raw spans (the open edge), then from
    rollup rows; asserts they agree and returns them."""
    insert_spans(project.pk, [span for trace in traces for span in trace.spans])
    query = Query((*FIGURES, "ttft_ms_p50"), HOUR, HOUR + timedelta(hours=1), Filters(projects=(project.pk,)))
    with time_machine.travel(HOUR + timedelta(minutes=50), tick=False):
        raw = run_query(query, Scope.everything())
    assert raw.plan is not None and raw.plan.raw, "the open hour is read from raw spans"
    (open_edge,) = raw.rows
    rollup_range(HOUR, HOUR + timedelta(hours=1), [project.pk])
    with time_machine.travel(HOUR + timedelta(hours=3), tick=False):
        rolled = run_query(query, Scope.everything())
    assert rolled.plan is not None and not rolled.plan.raw, "the closed hour is read from rollup rows"
    (from_rollups,) = rolled.rows
    hour = total(project.pk)
    assert hour.requests == open_edge["requests"]
    for name in FIGURES:
        assert open_edge[name] == from_rollups[name], name
    return open_edge


def test_openllmetry_and_the_anthropic_sdk_siblings_with_one_response_id_are_one_call(project: Project) -> None:
    """The shape seen with opentelemetry-instrumentation-anthropic 0.62 and anthropic 2.x:
    two sibling spans under the app's root, one gen_ai.response.id."""
    t = Trace(HOUR + timedelta(minutes=1))
    root = t.root(tenant="acme", feature="chat")
    anthropic_call(t, root, scope=OPENLLMETRY, response_id="msg_01")
    anthropic_call(t, root, scope=ANTHROPIC_SDK, response_id="msg_01")
    figures = both_paths(project, t)
    assert figures["requests"] == 1
    assert (figures["input_tokens"], figures["output_tokens"]) == (1250, 300)
    assert (figures["cache_read_tokens"], figures["cache_write_tokens"]) == (1000, 50)
    assert figures["cost_usd"] == D("0.006")
    assert figures["tasks"] == 1
    # The call is OpenLLMetry's span (as rich, started first): its e2e, its dimensions.
    assert distribution(total(project.pk), "e2e_ms") == sketch([1000])


def test_a_response_id_joins_spans_of_any_scope_and_parent(project: Project) -> None:
    """Same non-empty response id within a trace: the same call, wherever the spans sit."""
    t = Trace(HOUR + timedelta(minutes=2))
    root = t.root(tenant="acme", feature="chat")
    step = t.span("agent.step", parent=root, at_ms=5, duration_ms=1500)
    anthropic_call(t, root, scope=OPENLLMETRY, response_id="msg_02")
    anthropic_call(t, step, scope=OPENLLMETRY, response_id="msg_02", at_ms=400)  # no overlap: the id decides
    assert both_paths(project, t)["requests"] == 1


def test_a_nested_duplicate_is_part_of_its_parents_call_and_fills_its_unknowns(project: Project) -> None:
    """The SDK's span inside OpenLLMetry's: one call; the outer span's unknown TTFT and
    cache write come from the nested one (same kind, same provider)."""
    t = Trace(HOUR + timedelta(minutes=3))
    root = t.root(tenant="acme", feature="chat")
    outer = anthropic_call(t, root, scope=OPENLLMETRY, response_id="msg_03", cache_write_tokens=None)
    anthropic_call(t, outer, scope=ANTHROPIC_SDK, response_id="msg_03", ttft_ms=240.0)
    figures = both_paths(project, t)
    assert figures["requests"] == 1
    assert figures["cache_write_tokens"] == 50
    assert figures["ttft_ms_p50"] == pytest.approx(240.0, rel=0.01)
    assert figures["cost_usd"] == D("0.006")


def test_siblings_without_response_ids_from_two_scopes_that_overlap_are_one_call(project: Project) -> None:
    t = Trace(HOUR + timedelta(minutes=4))
    root = t.root(tenant="acme", feature="chat")
    anthropic_call(t, root, scope=OPENLLMETRY)
    anthropic_call(t, root, scope=ANTHROPIC_SDK, output_tokens=None, cost_usd=None)  # a stream without usage
    figures = both_paths(project, t)
    assert figures["requests"] == 1
    assert figures["tokens_unknown"] == 0 and figures["cost_unknown_requests"] == 0  # the richer span represents it
    assert figures["output_tokens"] == 300


def test_parallel_calls_stay_separate(project: Project) -> None:
    """asyncio.gather: overlapping sibling calls of one instrumentation are different calls;
    so are two instrumentations' parallel calls whose output counts disagree or whose
    providers differ, and two calls with different response ids."""
    same_scope = Trace(HOUR + timedelta(minutes=5))
    root = same_scope.root(tenant="acme", feature="chat")
    for n in range(3):
        anthropic_call(same_scope, root, scope=OPENLLMETRY, at_ms=10 + n)

    two_scopes = Trace(HOUR + timedelta(minutes=6))
    root = two_scopes.root(tenant="acme", feature="chat")
    anthropic_call(two_scopes, root, scope=OPENLLMETRY, output_tokens=300)
    anthropic_call(two_scopes, root, scope=ANTHROPIC_SDK, output_tokens=120)
    two_scopes.llm(parent=root, scope_name="opentelemetry.instrumentation.openai", at_ms=12)

    ids = Trace(HOUR + timedelta(minutes=7))
    root = ids.root(tenant="acme", feature="chat")
    anthropic_call(ids, root, scope=OPENLLMETRY, response_id="msg_a")
    anthropic_call(ids, root, scope=ANTHROPIC_SDK, response_id="msg_b")
    assert both_paths(project, same_scope, two_scopes, ids)["requests"] == 3 + 3 + 2


def test_parallel_calls_each_seen_twice_count_once_each(project: Project) -> None:
    """Two concurrent calls, each seen by OpenLLMetry and by the SDK: two calls."""
    t = Trace(HOUR + timedelta(minutes=8))
    root = t.root(tenant="acme", feature="chat")
    for n, rid in enumerate(("msg_x", "msg_y")):
        anthropic_call(t, root, scope=OPENLLMETRY, response_id=rid, at_ms=10 + 2 * n)
        anthropic_call(t, root, scope=ANTHROPIC_SDK, response_id=rid, at_ms=11 + 2 * n)
    figures = both_paths(project, t)
    assert figures["requests"] == 2
    assert figures["input_tokens"] == 2 * 1250 and figures["cost_usd"] == D("0.012")


def test_the_richest_span_represents_the_call_and_its_duplicates_fill_the_rest(project: Project) -> None:
    """The SDK span knows more (TTFT, reasoning): it is the call; OpenLLMetry's cost fills
    the SDK span's unknown cost, and an error seen by either makes the call an error."""
    t = Trace(HOUR + timedelta(minutes=9))
    root = t.root(tenant="acme", feature="chat")
    anthropic_call(t, root, scope=OPENLLMETRY, response_id="msg_r", cache_write_tokens=None, status=STATUS_ERROR,
                   error_type="overloaded_error")  # fmt: skip
    anthropic_call(t, root, scope=ANTHROPIC_SDK, response_id="msg_r", ttft_ms=180.0, reasoning_tokens=40,
                   cost_usd=None)  # fmt: skip
    figures = both_paths(project, t)
    assert figures["requests"] == 1 and figures["errors"] == 1
    assert figures["reasoning_tokens"] == 40 and figures["cache_write_tokens"] == 50
    assert figures["cost_usd"] == D("0.006") and figures["cost_unknown_requests"] == 0
    assert figures["ttft_ms_p50"] == pytest.approx(180.0, rel=0.01)
    assert distribution(total(project.pk), "e2e_ms") == sketch([985])  # the SDK span's duration


def test_a_vllm_server_span_sharing_the_clients_id_is_not_a_second_call_nor_a_source(project: Project) -> None:
    """vLLM's request id is the client's response id: one call, the client's; the server's
    TTFT is the server's part, not the client's (another kind of span), so it fills nothing."""
    t = Trace(HOUR + timedelta(minutes=10))
    root = t.root(tenant="acme", feature="chat")
    client = t.llm(parent=root, request_model="llama-3.1-8b", response_id="cmpl-1", scope_name="openai-v2")
    t.vllm_server(parent=client, response_id="cmpl-1", scope_name="vllm")
    figures = both_paths(project, t)
    assert figures["requests"] == 1 and figures["input_tokens"] == 1000
    assert figures["ttft_ms_p50"] is None


def test_the_explorer_reads_which_span_is_the_call(project: Project) -> None:
    """traced_spans_sql(detail=True): the duplicate names the span of its call."""
    t = Trace(HOUR + timedelta(minutes=11))
    root = t.root(tenant="acme", feature="chat")
    first = anthropic_call(t, root, scope=OPENLLMETRY, response_id="msg_d")
    second = anthropic_call(t, root, scope=ANTHROPIC_SDK, response_id="msg_d")
    insert_spans(project.pk, t.spans)
    traces = "(SELECT %(project_id)s::bigint AS project_id, %(trace_id)s::uuid AS trace_id)"
    params = {
        **compute.rollup_params([project.pk], HOUR, HOUR + timedelta(hours=1)),
        "project_id": project.pk,
        "trace_id": t.trace_id.hex(),
        "spans_per_trace": 100,
    }
    with connection.cursor() as cur:
        spans = compute.traced_spans_sql(traces, detail=True, capped=True)
        cur.execute(f"SELECT span_id, is_call, same_call_as FROM ({spans}) AS x", params)
        found = {row[0]: (row[1], row[2]) for row in cur.fetchall()}
    as_int = {span.span_id: int.from_bytes(span.span_id, "big", signed=True) for span in t.spans}
    assert found[as_int[first.span_id]] == (True, None)
    assert found[as_int[second.span_id]] == (False, as_int[first.span_id])
