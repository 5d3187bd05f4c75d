"""Each metric of docs/metrics.md on small hand-built traces, with hand-computed expectations.

Every test stores its spans with the ingest writer (insert_spans), rolls the hours up with
rollup_range, and reads RollupHour rows back: the all-dimensions rows (grouping ALL_DIMS)
for the per-slice figures, the grouping-0 row for the hour's totals.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection

from apps.accounts.models import Project
from apps.pricing.models import Price
from apps.rollups import compute
from apps.rollups.models import ALL_DIMS, GROUPING_SETS, mask
from apps.rollups.runner import rollup_range
from apps.telemetry.store import insert_spans
from tests.rollups.helpers import (
    STATUS_ERROR,
    STATUS_OK,
    Trace,
    at,
    distribution,
    one,
    rows,
    select_rows,
    sketch,
    total,
)

pytestmark = pytest.mark.django_db

D = Decimal
HOUR = at("2026-03-02T10:00:00")


def store(project: Project, *traces: Trace, start=HOUR, hours: int = 1) -> None:
    insert_spans(project.pk, [span for trace in traces for span in trace.spans])
    rollup_range(start, start + timedelta(hours=hours), [project.pk])


def test_calls_are_llm_spans_without_an_llm_parent(project: Project) -> None:
    """A nested duplicate (the SDK's span inside OpenLLMetry's) and a vLLM server span under
    its client span are the same call as their parent; a vLLM span with no LLM parent is one."""
    a = Trace(HOUR)
    root = a.root(tenant="acme", feature="chat")
    call = a.llm(parent=root, cost_usd=D("0.001"))
    a.llm(parent=call, name="anthropic.messages.create", at_ms=11, duration_ms=990, cost_usd=D("0.001"))

    b = Trace(HOUR + timedelta(minutes=5))
    root_b = b.root(tenant="acme", feature="chat")
    client = b.llm(parent=root_b, request_model="llama-3.1-8b", response_model="llama-3.1-8b", duration_ms=500)
    b.vllm_server(parent=client, queue_ms=12.0)

    c = Trace(HOUR + timedelta(minutes=10))
    c.vllm_server(parent=None, queue_ms=30.0, duration_ms=700, at_ms=0)
    store(project, a, b, c)

    hour = total(project.pk)
    assert hour.requests == 3
    assert hour.input_tokens == 1000 + 1000 + 800  # the nested span and the server span under a client: not again
    assert hour.output_tokens == 200 + 200 + 100
    assert hour.cost_usd == D("0.001")
    assert distribution(hour, "e2e_ms") == sketch([1000, 500, 700])
    assert distribution(hour, "queue_ms") == sketch([12.0, 30.0])  # queue time from every server span

    openai = one(project.pk, tenant="acme", feature="chat", provider="openai", model="gpt-4o-mini")
    assert openai.requests == 1
    assert openai.service == "support-api"
    # The server span under the client: no call, but its queue time, grouped by its own service,
    # and the tenant and feature of the trace that caused it.
    server = one(project.pk, tenant="acme", provider="vllm")
    assert (server.feature, server.model, server.service) == ("chat", "llama-3.1-8b", "vllm-serving")
    assert server.requests == 0
    assert distribution(server, "queue_ms") == sketch([12.0])
    assert distribution(server, "e2e_ms") == ([], [])
    # The uninstrumented client's vLLM span: a call, unattributed, its service as the feature.
    alone = one(project.pk, tenant="")
    assert (alone.feature, alone.provider, alone.service, alone.requests) == (
        "vllm-serving",
        "vllm",
        "vllm-serving",
        1,
    )


def test_errors_by_type_and_retries(project: Project) -> None:
    t = Trace(HOUR)
    root = t.root(tenant="globex", feature="summarize", status=STATUS_ERROR)
    t.llm(parent=root, status=STATUS_ERROR, error_type="timeout", output_tokens=0)
    t.llm(parent=root, at_ms=1100, status=STATUS_ERROR, retry_attempt=1)  # ERROR without a type
    t.llm(parent=root, at_ms=2200, finish_reasons=["abort"], retry_attempt=2)  # a vLLM abort
    t.llm(parent=root, at_ms=3300, status=STATUS_OK, retry_attempt=3, finish_reasons=["stop"])
    t.llm(parent=root, at_ms=4400, retry_attempt=0)
    store(project, t)

    row = one(project.pk, tenant="globex")
    assert row.requests == 5
    assert row.errors == 3
    assert row.errors_by_type == {"timeout": 1, "error": 2}
    assert row.retries == 3
    ok = one(project.pk, 0)
    assert (ok.errors, ok.retries, ok.errors_by_type) == (3, 3, {"timeout": 1, "error": 2})


def test_tokens_cost_and_unknowns(project: Project) -> None:
    t = Trace(HOUR)
    root = t.root(tenant="acme", feature="chat")
    t.llm(parent=root, input_tokens=1000, cache_read_tokens=600, cache_write_tokens=100, output_tokens=200,
          reasoning_tokens=50, cost_usd=D("0.0030"))  # fmt: skip
    t.llm(parent=root, input_tokens=None, output_tokens=100, cost_usd=None)  # a stream without usage
    t.llm(parent=root, input_tokens=500, output_tokens=None, cost_usd=D("0.0010"))
    t.llm(parent=root, input_tokens=300, output_tokens=30, cost_usd=None)  # no price row
    store(project, t)

    row = total(project.pk)
    assert row.requests == 4
    # Sums over calls whose input and output counts are both known.
    assert (row.input_tokens, row.output_tokens) == (1300, 230)
    assert (row.cache_read_tokens, row.cache_write_tokens, row.reasoning_tokens) == (600, 100, 50)
    assert row.tokens_unknown == 2
    assert row.cost_usd == D("0.0040")
    assert row.cost_unknown == 2


def test_cache_savings_use_the_calls_price_row(project: Project) -> None:
    with_cached = Price.objects.create(provider="openai", model_pattern="test-cached", effective_from=HOUR,
                                       input_per_mtok=D("2.5"), cached_input_per_mtok=D("1.25"),
                                       output_per_mtok=D("10"))  # fmt: skip
    without_cached = Price.objects.create(provider="openai", model_pattern="test-plain", effective_from=HOUR,
                                          input_per_mtok=D("3"), output_per_mtok=D("15"))  # fmt: skip
    t = Trace(HOUR)
    root = t.root(tenant="acme")
    t.llm(parent=root, cache_read_tokens=600, price_id=with_cached.pk, cost_usd=D("0.00275"))
    t.llm(parent=root, cache_read_tokens=333, price_id=with_cached.pk, cost_usd=D("0.00250"))
    t.llm(parent=root, cache_read_tokens=900, price_id=without_cached.pk, cost_usd=D("0.006"))  # priced as input
    t.llm(parent=root, cache_read_tokens=700, price_id=None, cost_usd=None)  # unpriced: saves nothing we know
    nested_parent = t.llm(parent=root, cache_read_tokens=0, price_id=with_cached.pk, cost_usd=D("0.001"))
    t.llm(parent=nested_parent, cache_read_tokens=500, price_id=with_cached.pk)  # not a call
    store(project, t)

    # (600 + 333) tokens x (2.5 - 1.25) USD per million tokens
    assert total(project.pk).cache_savings_usd == D("0.00116625")
    assert total(project.pk).cache_read_tokens == 600 + 333 + 900 + 700


def test_latency_distributions_and_generation(project: Project) -> None:
    t = Trace(HOUR)
    root = t.root(tenant="acme", feature="chat")
    t.llm(parent=root, duration_ms=1000, ttft_ms=100.0, output_tokens=201)  # TPOT 900 / 200 = 4.5
    t.llm(parent=root, duration_ms=250, ttft_ms=None, output_tokens=20)  # no TTFT: e2e and length only
    t.llm(parent=root, duration_ms=300, ttft_ms=120.0, output_tokens=1)  # one token: no TPOT
    t.llm(parent=root, duration_ms=400, ttft_ms=50.0, output_tokens=None, input_tokens=10)  # no count
    t.llm(parent=root, duration_ms=0.0, ttft_ms=0.0, output_tokens=3)  # zero latency: the zero bucket
    store(project, t)

    row = one(project.pk, tenant="acme")
    assert distribution(row, "e2e_ms") == sketch([1000, 250, 300, 400, 0.0])
    assert distribution(row, "ttft_ms") == sketch([100.0, 120.0, 50.0, 0.0])
    assert distribution(row, "tpot_ms") == sketch([4.5, 0.0])
    assert distribution(row, "output_tokens") == sketch([201, 20, 1, 3])
    assert distribution(row, "queue_ms") == ([], [])
    # Tokens per second = generation_tokens / generation_ms: calls with a TTFT and an output count.
    assert row.generation_tokens == 201 + 1 + 3
    assert row.generation_ms == pytest.approx(900 + 180 + 0)


def test_semantic_cache_lookups_are_any_span_attributed_like_the_rest(project: Project) -> None:
    hit = Trace(HOUR)
    root = hit.root(tenant="acme", feature="search")
    hit.span("semantic_cache.lookup", parent=root, semantic_cache_hit=True)
    miss = Trace(HOUR + timedelta(minutes=1))
    root = miss.root(tenant="acme", feature="search")
    miss.span("semantic_cache.lookup", parent=root, semantic_cache_hit=False)
    miss.llm(parent=root, at_ms=200)
    other = Trace(HOUR + timedelta(minutes=2))
    other.root(tenant="globex", feature="search", semantic_cache_hit=True)
    store(project, hit, miss, other)

    acme = one(project.pk, mask("tenant"), tenant="acme")
    assert (acme.semantic_cache_lookups, acme.semantic_cache_hits, acme.requests) == (2, 1, 1)
    lookup = one(project.pk, tenant="acme", provider="")
    assert (lookup.feature, lookup.model, lookup.service) == ("search", "", "support-api")
    assert (lookup.semantic_cache_lookups, lookup.semantic_cache_hits) == (2, 1)
    assert one(project.pk, mask("tenant"), tenant="globex").semantic_cache_hits == 1
    # A task answered from the cache is still a task (and made no call).
    assert (acme.tasks, acme.successful_tasks) == (2, 2)


def test_tasks_are_traces_with_llm_work_counted_in_their_roots_hour(project: Project) -> None:
    ok = Trace(HOUR + timedelta(minutes=59, seconds=59))
    root = ok.root(tenant="acme", feature="chat", status=STATUS_OK)
    # A failed call and its retry in a task that finally succeeds: one successful task.
    ok.llm(parent=root, at_ms=200, status=STATUS_ERROR, error_type="429", provider="anthropic",
           request_model="claude-haiku-4-5")  # fmt: skip
    ok.llm(parent=root, at_ms=1500, retry_attempt=1)  # starts in the next hour
    failed = Trace(HOUR + timedelta(minutes=3))
    root = failed.root(tenant="acme", feature="chat", status=STATUS_ERROR)
    failed.llm(parent=root)
    plain = Trace(HOUR + timedelta(minutes=4))  # no LLM work at all: a health check, not a task
    plain.root(tenant="acme", feature="chat")
    headless = Trace(HOUR + timedelta(minutes=5))  # its root was never exported: the earliest span stands in
    lost_parent = headless.span("handler", at_ms=0, tenant="acme", feature="chat", status=STATUS_ERROR)
    lost_parent.parent_span_id = b"\x01" * 8
    headless.llm(parent=lost_parent, at_ms=5)
    store(project, ok, failed, plain, headless, hours=2)

    first, second = rows(project.pk, mask("tenant"))
    assert first.bucket == HOUR
    assert (first.tasks, first.successful_tasks) == (3, 1)
    assert (second.tasks, second.requests, second.retries) == (0, 1, 1)
    # The task's provider and model are its first call's, even for a slice by model.
    by_model = {(r.provider, r.model): r.tasks for r in rows(project.pk, mask("provider", "model"), bucket=HOUR)}
    assert by_model == {("anthropic", "claude-haiku-4-5"): 1, ("openai", "gpt-4o-mini"): 2}


def test_a_task_id_spans_traces_and_hours(project: Project) -> None:
    """Spans with observatory.task.id: all traces carrying the id are one task, counted once,
    in the hour of its earliest root; a trace's task id is inherited like its tenant."""
    step1 = Trace(HOUR + timedelta(minutes=59))
    root = step1.root(tenant="acme", feature="agent", task_id="job-1", status=STATUS_OK)
    step1.llm(parent=root, provider="anthropic", request_model="claude-sonnet-4-5")
    step2 = Trace(HOUR + timedelta(minutes=61))
    root = step2.root(tenant="acme", feature="agent", status=STATUS_ERROR)
    step2.llm(parent=root, task_id="job-1")  # the id on a child span only
    lone = Trace(HOUR + timedelta(minutes=62))
    root = lone.root(tenant="acme", feature="agent", task_id="job-2", status=STATUS_ERROR)
    lone.llm(parent=root)
    insert_spans(project.pk, step1.spans + step2.spans + lone.spans)

    # Hour by hour, as the noted-hour recompute does: hour 11 sees job-1's earlier root.
    rollup_range(HOUR + timedelta(hours=1), HOUR + timedelta(hours=2), [project.pk])
    rollup_range(HOUR, HOUR + timedelta(hours=1), [project.pk])
    first, second = rows(project.pk, 0)
    assert (first.tasks, first.successful_tasks) == (1, 1)
    assert (second.tasks, second.successful_tasks) == (1, 0)  # job-2 only
    job1 = one(project.pk, mask("provider", "model"), bucket=HOUR, tasks=1)
    assert (job1.provider, job1.model) == ("anthropic", "claude-sonnet-4-5")
    assert (first.requests, second.requests) == (1, 2)


def test_attribution_inherits_from_the_trace(project: Project) -> None:
    t = Trace(HOUR)
    root = t.root(tenant="acme", feature="chat")
    client = t.llm(parent=root)
    t.vllm_server(parent=client)
    t.llm(parent=root, at_ms=20, tenant="initech", request_model="own-tenant")  # its own tenant wins

    rootless = Trace(HOUR + timedelta(minutes=1))  # no tenant on the root: the earliest span's
    root = rootless.root(feature="chat")
    rootless.span("auth", parent=root, at_ms=5, tenant="globex")
    rootless.span("later", parent=root, at_ms=50, tenant="umbrella")
    rootless.llm(parent=root, at_ms=10, request_model="inherited-late")

    no_feature = Trace(HOUR + timedelta(minutes=2))  # no feature anywhere: each span's own service.name
    root = no_feature.root(tenant="acme", service="docs-api")
    client = no_feature.llm(parent=root, service="docs-api", request_model="fallback")
    no_feature.vllm_server(parent=client)

    nothing = Trace(HOUR + timedelta(minutes=3))
    nothing.llm(parent=None, service="", request_model="", response_model="gpt-4o")
    store(project, t, rootless, no_feature, nothing)

    def dims(model: str) -> list[tuple[str, str, str, str]]:
        return sorted((r.tenant, r.feature, r.provider, r.service) for r in rows(project.pk, model=model))

    assert dims("gpt-4o-mini") == [("acme", "chat", "openai", "support-api")]
    assert dims("llama-3.1-8b") == [
        ("acme", "chat", "vllm", "vllm-serving"),
        ("acme", "vllm-serving", "vllm", "vllm-serving"),
    ]
    assert dims("own-tenant") == [("initech", "chat", "openai", "support-api")]
    assert dims("inherited-late") == [("globex", "chat", "openai", "support-api")]
    assert dims("fallback") == [("acme", "docs-api", "openai", "docs-api")]
    # Nothing known: unattributed tenant, no feature, the responded model.
    assert dims("gpt-4o") == [("", "", "openai", "")]
    assert one(project.pk, model="llama-3.1-8b", feature="vllm-serving").requests == 0


def test_feature_fallback_attribute_can_be_another_resource_key(project: Project, settings) -> None:
    settings.FEATURE_FALLBACK_ATTRIBUTE = "deployment.name"
    t = Trace(HOUR)
    root = t.root(tenant="acme", resource={"deployment.name": "eu-checkout", "service.name": "support-api"})
    t.llm(parent=root, resource={"deployment.name": "eu-checkout's api"})
    store(project, t)
    assert one(project.pk, requests=1).feature == "eu-checkout's api"
    # The task: the trace's feature, else its root span's fallback.
    assert one(project.pk, tasks=1).feature == "eu-checkout"


def test_calls_count_in_the_hour_they_start_with_their_traces_attribution(project: Project) -> None:
    t = Trace(HOUR + timedelta(minutes=59, seconds=59, milliseconds=900))
    root = t.root(tenant="acme", feature="chat")
    t.llm(parent=root, at_ms=200)
    store(project, t, hours=2)
    first, second = rows(project.pk, mask("tenant"))
    assert (first.bucket, first.requests, first.tasks) == (HOUR, 0, 1)
    assert (second.bucket, second.requests, second.tenant) == (HOUR + timedelta(hours=1), 1, "acme")


def test_the_select_takes_any_range(project: Project) -> None:
    """The query layer runs the SELECT over partial hours: only spans in [start, end) count."""
    traces = []
    for minute in (5, 20, 40, 55):
        t = Trace(HOUR + timedelta(minutes=minute))
        root = t.root(tenant="acme")
        t.llm(parent=root, at_ms=0)
        traces.append(t)
    insert_spans(project.pk, [span for t in traces for span in t.spans])
    selected = select_rows([project.pk], HOUR + timedelta(minutes=15), HOUR + timedelta(minutes=50))
    everything = [row for row in selected if row["grouping"] == 0]
    assert len(everything) == 1
    assert (everything[0]["bucket"], everything[0]["requests"], everything[0]["tasks"]) == (HOUR, 2, 2)
    assert {row["grouping"] for row in selected} == {0, 1, 2, 3, 12, 13, 14, ALL_DIMS}


def test_projects_are_kept_apart(project: Project) -> None:
    other = Project.objects.create(name="other")
    t = Trace(HOUR)
    root = t.root(tenant="acme")
    t.llm(parent=root)
    insert_spans(project.pk, t.spans)
    # The same trace id in another project (a client reusing ids): not the same trace.
    u = Trace(HOUR, trace_id=t.trace_id)
    u.llm(parent=None)
    insert_spans(other.pk, u.spans)
    rollup_range(HOUR, HOUR + timedelta(hours=1))
    assert total(project.pk).requests == 1
    assert one(other.pk, 0).requests == 1
    assert one(other.pk).tenant == ""


@pytest.mark.parametrize("grouping_sets", [(0,), (mask("tenant"),), (mask("provider", "model"), 0), GROUPING_SETS])
def test_the_select_takes_any_grouping_sets(project: Project, grouping_sets: tuple[int, ...]) -> None:
    """The query layer asks for the one grouping set a question needs."""
    t = Trace(HOUR)
    root = t.root(tenant="acme", feature="chat")
    t.llm(parent=root)
    insert_spans(project.pk, t.spans)
    with connection.cursor() as cur:
        cur.execute(
            compute.rollup_rows_sql(grouping_sets), compute.rollup_params([project.pk], HOUR, HOUR + timedelta(hours=1))
        )
        names = [column.name for column in cur.description]
        got = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    assert tuple(names) == compute.ROLLUP_COLUMNS
    assert sorted(row["grouping"] for row in got) == sorted(grouping_sets)
    for row in got:
        assert (row["requests"], row["tasks"]) == (1, 1)
        assert (row["tenant"] is None) == (not row["grouping"] & mask("tenant"))


def test_a_task_keeps_its_traces_tenant_when_its_first_call_has_another(project: Project) -> None:
    t = Trace(HOUR)
    root = t.root(tenant="acme", feature="chat")
    t.llm(parent=root, tenant="initech", request_model="billed-elsewhere")
    store(project, t)
    call = one(project.pk, tenant="initech")
    task = one(project.pk, tenant="acme")
    assert (call.requests, call.tasks) == (1, 0)
    assert (task.requests, task.tasks, task.successful_tasks) == (0, 1, 1)
    assert (task.model, task.feature) == ("billed-elsewhere", "chat")
