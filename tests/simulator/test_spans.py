"""The spans a run produces: trace structure, attributes, token invariants, timing, determinism."""

from __future__ import annotations

import itertools
import json

from opentelemetry.trace import SpanKind, StatusCode

from collectors.simulator.catalog import FEATURES, TENANTS, UNPRICED_FINE_TUNE, VLLM_SERVICE
from tests.simulator.conftest import Run, fingerprint, is_llm_client, run_in_memory, service_of

ROOT_KEYS = ("tenant.id", "app.feature", "user.id", "session.id")


def test_every_trace_has_one_root_with_tenant_feature_user_and_session(baseline: Run) -> None:
    traces = baseline.by_trace()
    assert len(traces) == baseline.summary.traces == 2500
    for spans in traces.values():
        roots = [s for s in spans if s.parent is None]
        assert len(roots) == 1
        attrs = roots[0].attributes or {}
        assert all(attrs.get(key) for key in ROOT_KEYS)
        assert attrs["tenant.id"] in TENANTS
        assert attrs["app.feature"] in FEATURES
        assert roots[0].kind in (SpanKind.SERVER, SpanKind.INTERNAL)


def test_only_roots_carry_tenant_and_feature(baseline: Run) -> None:
    for span in baseline.spans:
        if span.parent is not None:
            assert "tenant.id" not in (span.attributes or {})
            assert "app.feature" not in (span.attributes or {})


def test_vllm_server_span_joins_the_client_trace_through_traceparent(baseline: Run) -> None:
    by_id = {(s.context.trace_id, s.context.span_id): s for s in baseline.spans}
    servers = [s for s in baseline.spans if service_of(s) == VLLM_SERVICE]
    assert len(servers) == baseline.summary.vllm_server_spans > 100
    for server in servers:
        assert server.name == "llm_request"
        assert server.kind is SpanKind.SERVER
        assert server.parent is not None
        # Extracted from a carrier, as from HTTP headers: the parent is remote.
        assert server.parent.is_remote
        client = by_id[(server.context.trace_id, server.parent.span_id)]
        assert client.context.trace_id == server.context.trace_id
        assert client.kind is SpanKind.CLIENT
        assert client.attributes["gen_ai.provider.name"] == "vllm"
        assert client.start_time < server.start_time <= server.end_time < client.end_time
        assert server.resource.attributes["service.instance.id"]
        attrs = server.attributes or {}
        assert not {"tenant.id", "app.feature", "user.id", "gen_ai.provider.name"} & set(attrs)
        # vLLM's own shapes: deprecated token names, finish reasons as a JSON-encoded string.
        assert isinstance(attrs["gen_ai.response.finish_reasons"], str)
        assert json.loads(str(attrs["gen_ai.response.finish_reasons"]))[0] in ("stop", "length", "abort")
        if server.status.status_code is not StatusCode.ERROR:
            assert attrs["gen_ai.usage.prompt_tokens"] == client.attributes["gen_ai.usage.input_tokens"]
            assert attrs["gen_ai.usage.completion_tokens"] == client.attributes["gen_ai.usage.output_tokens"]
        assert attrs["gen_ai.request.id"] == client.attributes.get("gen_ai.response.id", attrs["gen_ai.request.id"])
        if server.status.status_code is not StatusCode.ERROR:
            e2e = float(attrs["gen_ai.latency.e2e"])  # type: ignore[arg-type]
            queue = float(attrs["gen_ai.latency.time_in_queue"])  # type: ignore[arg-type]
            ttft = float(attrs["gen_ai.latency.time_to_first_token"])  # type: ignore[arg-type]
            assert 0 <= queue <= ttft <= e2e
            assert abs((server.end_time - server.start_time) / 1e9 - e2e) < 1e-3
    # Both engine generations appear: only the legacy replica names the model.
    with_model = sum("gen_ai.response.model" in (s.attributes or {}) for s in servers)
    assert 0 < with_model < len(servers)


def test_retry_after_rate_limit_carries_resend_count(baseline: Run) -> None:
    rate_limited = 0
    for spans in baseline.by_trace().values():
        calls = sorted((s for s in spans if is_llm_client(s)), key=lambda s: s.start_time)
        for first, second in itertools.pairwise(calls):
            if (first.attributes or {}).get("error.type") != "RateLimitError":
                continue
            rate_limited += 1
            assert first.status.status_code is StatusCode.ERROR
            assert second.attributes["http.request.resend_count"] == 1
            assert second.start_time > first.end_time
            assert second.name == first.name
    assert rate_limited >= 5
    resends = [s for s in baseline.spans if "http.request.resend_count" in (s.attributes or {})]
    assert len(resends) == baseline.summary.resends


def test_validation_retry_is_a_second_call_and_giving_up_fails_the_task(baseline: Run) -> None:
    gave_up = 0
    for spans in baseline.by_trace().values():
        root = next(s for s in spans if s.parent is None)
        retried = [s for s in spans if (s.attributes or {}).get("observatory.retry.attempt") == 1]
        if (root.attributes or {}).get("error.type") == "validation_failed":
            gave_up += 1
            assert root.status.status_code is StatusCode.ERROR
            assert retried
            assert sum(1 for s in spans if is_llm_client(s)) >= 2
    assert gave_up == baseline.summary.validation_failures > 0
    assert baseline.summary.validation_retries > gave_up


def test_token_invariants(baseline: Run) -> None:
    checked = 0
    for span in baseline.spans:
        a = span.attributes or {}
        if "gen_ai.usage.input_tokens" in a:
            cached = int(a.get("gen_ai.usage.cache_read.input_tokens", 0))  # type: ignore[arg-type]
            written = int(a.get("gen_ai.usage.cache_creation.input_tokens", 0))  # type: ignore[arg-type]
            assert int(a["gen_ai.usage.input_tokens"]) >= cached + written  # type: ignore[arg-type]
            reasoning = int(a.get("gen_ai.usage.reasoning.output_tokens", 0))  # type: ignore[arg-type]
            assert int(a["gen_ai.usage.output_tokens"]) >= reasoning >= 0  # type: ignore[arg-type]
            if a.get("gen_ai.provider.name") == "openai":
                assert cached % 128 == 0  # OpenAI caches in 128-token steps
            checked += 1
        if "llm.token_count.prompt" in a:
            cached = int(a.get("llm.token_count.prompt_details.cache_read", 0))  # type: ignore[arg-type]
            assert int(a["llm.token_count.prompt"]) >= cached  # type: ignore[arg-type]
            total = int(a["llm.token_count.prompt"]) + int(a["llm.token_count.completion"])  # type: ignore[arg-type]
            assert a["llm.token_count.total"] == total
            checked += 1
    assert checked > 1000
    assert baseline.summary.totals.cache_read_tokens > 0
    assert baseline.summary.totals.cache_write_tokens > 0
    assert baseline.summary.totals.reasoning_tokens > 0


def test_conventions_and_catalog_variety(baseline: Run) -> None:
    keys = set().union(*((s.attributes or {}).keys() for s in baseline.spans))
    # Current GenAI names, the deprecated ones, OpenInference, and vLLM's latency keys.
    for key in (
        "gen_ai.provider.name",
        "gen_ai.response.time_to_first_chunk",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "openai.response.system_fingerprint",
        "openai.response.service_tier",
        "gen_ai.system",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
        "gen_ai.latency.time_in_model_decode",
        "gen_ai.input.messages",
        "error.type",
    ):
        assert key in keys, key
    models = {(s.attributes or {}).get("gen_ai.request.model") for s in baseline.spans}
    assert UNPRICED_FINE_TUNE in models
    providers = {(s.attributes or {}).get("gen_ai.provider.name") for s in baseline.spans}
    assert {"openai", "anthropic", "gcp.gemini", "vllm"} <= providers
    # Content is the exception, not the rule.
    with_content = sum("gen_ai.input.messages" in (s.attributes or {}) for s in baseline.spans)
    assert 0 < with_content < 0.02 * baseline.summary.llm_spans


def test_streamed_calls_report_time_to_first_chunk_within_the_call(baseline: Run) -> None:
    streamed = [s for s in baseline.spans if (s.attributes or {}).get("gen_ai.request.stream")]
    assert streamed
    for span in streamed:
        ttft = (span.attributes or {}).get("gen_ai.response.time_to_first_chunk")
        if span.status.status_code is StatusCode.ERROR:
            assert ttft is None
        else:
            assert 0 < float(ttft) <= (span.end_time - span.start_time) / 1e9 + 1e-6  # type: ignore[arg-type]


def test_timestamps_fall_in_the_requested_range_and_children_inside_parents(baseline: Run) -> None:
    by_id = {(s.context.trace_id, s.context.span_id): s for s in baseline.spans}
    for span in baseline.spans:
        assert baseline.start_ns <= span.start_time <= span.end_time <= baseline.end_ns
        if span.parent is not None:
            parent = by_id[(span.context.trace_id, span.parent.span_id)]
            assert parent.start_time <= span.start_time and span.end_time <= parent.end_time


def test_summary_matches_what_was_emitted(baseline: Run) -> None:
    s = baseline.summary
    assert s.spans == len(baseline.spans) == s.exported_spans
    assert s.failed_spans == 0
    assert s.failed_traces == sum(r.status.status_code is StatusCode.ERROR for r in baseline.roots())
    assert sum(t.traces for t in s.per_tenant.values()) == s.traces
    per_tenant = {name: 0 for name in s.per_tenant}
    for root in baseline.roots():
        per_tenant[str(root.attributes["tenant.id"])] += 1
    assert per_tenant == {name: t.traces for name, t in s.per_tenant.items()}
    client_calls = [x for x in baseline.spans if is_llm_client(x) and service_of(x) != VLLM_SERVICE]
    assert len(client_calls) == s.totals.llm_calls
    input_tokens = 0
    for span in client_calls:
        a = span.attributes or {}
        input_tokens += int(
            a.get("gen_ai.usage.input_tokens", a.get("gen_ai.usage.prompt_tokens", a.get("llm.token_count.prompt", 0)))  # type: ignore[arg-type]
        )
    assert input_tokens == s.totals.input_tokens


def test_traffic_has_a_working_week_shape() -> None:
    from datetime import UTC, datetime, timedelta

    end = datetime(2026, 11, 16, 0, 0, tzinfo=UTC)  # a Monday: the 7 days before hold one weekend
    run = run_in_memory(start=end - timedelta(days=7), end=end, requests=7000)
    per_weekday = [0] * 7
    for root in run.roots():
        per_weekday[datetime.fromtimestamp(root.start_time / 1e9, UTC).weekday()] += 1
    weekday_mean = sum(per_weekday[:5]) / 5
    weekend_mean = sum(per_weekday[5:]) / 2
    assert weekend_mean < 0.6 * weekday_mean
    assert sum(per_weekday) == 7000


def test_same_seed_same_spans_and_other_seed_other_spans(baseline: Run) -> None:
    again = run_in_memory()
    assert sorted(map(fingerprint, again.spans)) == sorted(map(fingerprint, baseline.spans))
    assert again.summary.as_dict() | {"elapsed_s": 0} == baseline.summary.as_dict() | {"elapsed_s": 0}
    other = run_in_memory(seed=43)
    assert {s.context.trace_id for s in other.spans}.isdisjoint({s.context.trace_id for s in baseline.spans})
