"""Each incident changes what it says it changes, from its start, and nothing else."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from collectors.simulator.incidents import INCIDENTS, CostSpike, Incident, parse_incident, register
from collectors.simulator.traffic import parse_time, to_ns
from tests.simulator.conftest import END, Run, fingerprint, is_llm_client, run_in_memory

INCIDENT_START = END - timedelta(days=1)


def _feature_of_traces(run: Run) -> dict[int, tuple[str, str, int]]:
    """trace id -> (tenant, feature, root start)."""
    return {
        r.context.trace_id: (str(r.attributes["tenant.id"]), str(r.attributes["app.feature"]), r.start_time)
        for r in run.roots()
    }


def _by_span(run: Run) -> dict[tuple[int, int], ReadableSpan]:
    return {(s.context.trace_id, s.context.span_id): s for s in run.spans}


def test_silent_model_change_changes_response_model_after_start_for_that_feature_only(baseline: Run) -> None:
    changed = run_in_memory(incidents=["silent-model-change:support-chat@-1d"])
    traces = _feature_of_traces(baseline)
    before = _by_span(baseline)
    start_ns = to_ns(INCIDENT_START)
    drifted = longer = compared = 0
    for key, span in _by_span(changed).items():
        old = before[key]
        _, feature, root_start = traces[span.context.trace_id]
        if feature != "support-chat" or root_start < start_ns:
            assert fingerprint(span) == fingerprint(old)
            continue
        if not is_llm_client(span) or "gen_ai.response.model" not in (span.attributes or {}):
            continue
        compared += 1
        new_model, old_model = span.attributes["gen_ai.response.model"], old.attributes["gen_ai.response.model"]
        assert new_model != old_model
        assert span.attributes["gen_ai.request.model"] == old.attributes["gen_ai.request.model"]
        drifted += str(new_model).endswith(f"{INCIDENT_START:%Y-%m-%d}") or str(new_model).endswith(
            f"{INCIDENT_START:%Y%m%d}"
        )
        longer += int(span.attributes["gen_ai.usage.output_tokens"]) > int(old.attributes["gen_ai.usage.output_tokens"])  # type: ignore[arg-type]
        if "openai.response.system_fingerprint" in old.attributes:
            assert (
                span.attributes["openai.response.system_fingerprint"]
                != old.attributes["openai.response.system_fingerprint"]
            )
    assert compared > 50
    assert drifted > 0.5 * compared
    assert longer > 0.7 * compared
    assert changed.summary.incident_hits["silent-model-change:support-chat@-1d"] > 50


def test_p99_regression_slows_a_tenth_of_that_models_calls(baseline: Run) -> None:
    slowed = run_in_memory(incidents=["p99-regression:gpt-4o-mini@-1d"])
    traces = _feature_of_traces(baseline)
    before = _by_span(baseline)
    start_ns = to_ns(INCIDENT_START)
    ratios: list[float] = []
    for key, span in _by_span(slowed).items():
        old = before[key]
        model = (old.attributes or {}).get("gen_ai.request.model") or (old.attributes or {}).get("llm.model_name", "")
        _, _, root_start = traces[span.context.trace_id]
        if not is_llm_client(span) or not str(model).startswith("gpt-4o-mini") or root_start < start_ns:
            if is_llm_client(span) and root_start < start_ns:
                assert fingerprint(span) == fingerprint(old)
            continue
        ratios.append((span.end_time - span.start_time) / (old.end_time - old.start_time))
    assert len(ratios) > 200
    slow = [r for r in ratios if r > 1.01]
    assert all(abs(r - 5.0) < 0.01 for r in slow)
    assert 0.05 < len(slow) / len(ratios) < 0.16
    # Other models are untouched.
    for key, span in _by_span(slowed).items():
        if (span.attributes or {}).get("gen_ai.request.model") == "claude-sonnet-4-5":
            assert fingerprint(span) == fingerprint(before[key])


def test_cost_spike_multiplies_one_tenants_feature_traffic(baseline: Run) -> None:
    spiked = run_in_memory(incidents=["cost-spike:acme/summarize@-1d"])
    start_ns = to_ns(INCIDENT_START)

    def counts(run: Run) -> Counter[tuple[str, str, bool]]:
        return Counter((t, f, at >= start_ns) for t, f, at in _feature_of_traces(run).values())

    old, new = counts(baseline), counts(spiked)
    assert new[("acme", "summarize", True)] > 3.5 * old[("acme", "summarize", True)]
    assert new[("acme", "summarize", False)] == old[("acme", "summarize", False)]
    for key, count in old.items():
        if key[:2] != ("acme", "summarize"):
            assert new[key] == count
    assert spiked.summary.per_tenant["acme"].input_tokens > baseline.summary.per_tenant["acme"].input_tokens


def test_cost_spike_defaults_to_the_tenants_busiest_feature() -> None:
    incident = parse_incident("cost-spike:initech@-2h", END)
    assert isinstance(incident, CostSpike)
    assert incident.feature == "extraction"


def test_incident_spec_parsing() -> None:
    incident = parse_incident("p99-regression:meta-llama/Llama-3.1-8B-Instruct@2026-11-18T09:00..-6h", END)
    assert incident.target == "meta-llama/Llama-3.1-8B-Instruct"
    assert incident.start_ns == to_ns(datetime(2026, 11, 18, 9, tzinfo=UTC))
    assert incident.end_ns == to_ns(END - timedelta(hours=6))
    assert incident.active(incident.start_ns) and not incident.active(incident.end_ns)
    for bad in (
        "nope:acme@-1d",
        "cost-spike:acme",
        "cost-spike:nobody@-1d",
        "silent-model-change:no-such-feature@-1d",
        "p99-regression:gpt-4o@-1d..-2d",
        "p99-regression:gpt-4o@yesterday",
    ):
        with pytest.raises(ValueError):
            parse_incident(bad, END)


def test_parse_time_forms() -> None:
    assert parse_time("now", END) == END
    assert parse_time("-1d12h", END) == END - timedelta(hours=36)
    assert parse_time("+30m", END) == END + timedelta(minutes=30)
    assert parse_time("2026-11-18T09:00:00Z", END) == datetime(2026, 11, 18, 9, tzinfo=UTC)


def test_registry_is_open_for_new_scenarios() -> None:
    assert {"silent-model-change", "p99-regression", "cost-spike"} <= set(INCIDENTS)

    @register
    class QuietHours(Incident):
        name = "test-quiet-hours"
        target_help = "TENANT"
        description = "TENANT sends nothing."

        def traffic_multiplier(self, tenant: str, feature: str, at_ns: int) -> float:
            return 0.0 if tenant == self.target and self.active(at_ns) else 1.0

    try:
        quiet = run_in_memory(incidents=["test-quiet-hours:globex@-1d"], requests=800)
        start_ns = to_ns(INCIDENT_START)
        assert not [
            r for r in quiet.roots() if r.attributes["tenant.id"] == "globex" and r.start_time >= start_ns + 10**9
        ]
        assert quiet.summary.per_tenant["globex"].traces > 0
    finally:
        del INCIDENTS["test-quiet-hours"]


def _cache_reads(span: ReadableSpan) -> int:
    attrs = span.attributes or {}
    reads = attrs.get("gen_ai.usage.cache_read.input_tokens") or attrs.get("llm.token_count.prompt_details.cache_read")
    return int(reads or 0)  # type: ignore[arg-type]


def _input_tokens(span: ReadableSpan) -> int:
    attrs = span.attributes or {}
    for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"):
        if key in attrs:
            return int(attrs[key])  # type: ignore[arg-type]
    return 0


def test_cache_hit_drop_empties_one_features_cache_reads_in_its_window_only(baseline: Run) -> None:
    window_end = END - timedelta(hours=6)
    dropped = run_in_memory(incidents=["cache-hit-drop:support-chat@-1d..-6h"])
    traces = _feature_of_traces(baseline)
    before = _by_span(baseline)
    start_ns, end_ns = to_ns(INCIDENT_START), to_ns(window_end)
    reads_before = reads_after = writes_before = writes_after = calls = 0
    for key, span in _by_span(dropped).items():
        old = before[key]
        _, feature, root_start = traces[span.context.trace_id]
        if feature != "support-chat" or not start_ns <= root_start < end_ns:
            assert fingerprint(span) == fingerprint(old)
            continue
        if not is_llm_client(span):
            continue
        calls += 1
        # Same prompts: the input is as large as before, only its cached part is gone.
        assert _input_tokens(span) == _input_tokens(old)
        reads_before += _cache_reads(old)
        reads_after += _cache_reads(span)
        attrs, old_attrs = span.attributes or {}, old.attributes or {}
        writes_before += int(old_attrs.get("gen_ai.usage.cache_creation.input_tokens", 0))  # type: ignore[arg-type]
        writes_after += int(attrs.get("gen_ai.usage.cache_creation.input_tokens", 0))  # type: ignore[arg-type]
    assert calls > 100
    assert reads_before > 100_000
    assert reads_after < 0.05 * reads_before
    # Anthropic writes the prefix again on every miss: the cache-write charge goes up.
    assert writes_after > writes_before
    assert dropped.summary.incident_hits["cache-hit-drop:support-chat@-1d..-6h"] > 50


def test_cache_hit_drop_by_tenant_touches_only_that_tenant(baseline: Run) -> None:
    dropped = run_in_memory(incidents=["cache-hit-drop:globex@-1d"])
    traces = _feature_of_traces(baseline)
    before = _by_span(baseline)
    start_ns = to_ns(INCIDENT_START)
    reads_before = reads_after = 0
    for key, span in _by_span(dropped).items():
        tenant, _, root_start = traces[span.context.trace_id]
        if tenant != "globex" or root_start < start_ns:
            assert fingerprint(span) == fingerprint(before[key])
        elif is_llm_client(span):
            reads_before += _cache_reads(before[key])
            reads_after += _cache_reads(span)
    assert reads_before > 10_000 and reads_after < 0.05 * reads_before


def _is_error(span: ReadableSpan) -> bool:
    return span.status.status_code.name == "ERROR"


def test_error_burst_fails_a_third_of_one_providers_calls_with_typed_errors(baseline: Run) -> None:
    burst = run_in_memory(incidents=["error-burst:anthropic@-1d"])
    start_ns = to_ns(INCIDENT_START)

    def anthropic_calls(run: Run, after: bool) -> list[ReadableSpan]:
        return [
            s
            for s in run.spans
            if is_llm_client(s)
            and (s.attributes or {}).get("gen_ai.provider.name") == "anthropic"
            and (s.start_time >= start_ns) == after
        ]

    calls = anthropic_calls(burst, after=True)
    failed = [s for s in calls if _is_error(s)]
    usual = anthropic_calls(baseline, after=True)
    assert len(calls) > 100
    assert 0.25 <= len(failed) / len(calls) <= 0.45
    assert sum(_is_error(s) for s in usual) / len(usual) < 0.06
    types = Counter(str((s.attributes or {})["error.type"]) for s in failed)
    assert {"RateLimitError", "OverloadedError", "InternalServerError"} <= set(types)
    # A failed call reports no usage and ends with an exception event, as the SDKs record it.
    assert all("gen_ai.usage.output_tokens" not in (s.attributes or {}) for s in failed)
    assert all(s.events and s.events[0].name == "exception" for s in failed)
    # Before the burst, and for every other provider's requests, nothing changed.
    before = _by_span(baseline)
    traces = _feature_of_traces(baseline)
    untouched = 0
    by_trace = burst.by_trace()
    for trace_id, spans in by_trace.items():
        root_start = traces[trace_id][2]
        uses_anthropic = any((s.attributes or {}).get("gen_ai.provider.name") == "anthropic" for s in spans)
        if root_start < start_ns or not uses_anthropic:
            for span in spans:
                assert fingerprint(span) == fingerprint(before[(span.context.trace_id, span.context.span_id)])
            untouched += 1
    assert untouched > 1000


def test_error_burst_by_model_and_its_window_end(baseline: Run) -> None:
    burst = run_in_memory(incidents=["error-burst:gpt-4o-mini@-1d..-12h"])
    start_ns, end_ns = to_ns(INCIDENT_START), to_ns(END - timedelta(hours=12))

    def share_failed(run: Run, lo: int, hi: int, model: str) -> float:
        calls = [
            s
            for s in run.spans
            if is_llm_client(s)
            and (s.attributes or {}).get("gen_ai.request.model") == model
            and lo <= s.start_time < hi
        ]
        return sum(_is_error(s) for s in calls) / max(1, len(calls))

    assert share_failed(burst, start_ns, end_ns, "gpt-4o-mini") > 0.25
    assert share_failed(burst, end_ns + 10**10, to_ns(END), "gpt-4o-mini") < 0.08
    assert share_failed(burst, start_ns, end_ns, "gpt-4o") < 0.08


def test_new_incident_targets_are_checked() -> None:
    for bad in ("cache-hit-drop:nobody@-1d", "error-burst:support-chat@-1d", "error-burst:azure@-1d"):
        with pytest.raises(ValueError, match="choose one of"):
            parse_incident(bad, END)
    assert parse_incident("error-burst:anthropic@-2h..-1h", END).target == "anthropic"
    assert parse_incident("cache-hit-drop:acme@-2h", END).target == "acme"
    feature = parse_incident("p99-regression:search-rerank@-8h", END)
    assert feature.target == "search-rerank"


def test_p99_regression_on_a_feature_slows_only_that_features_calls(baseline: Run) -> None:
    slowed = run_in_memory(incidents=["p99-regression:support-chat@-1d"])
    traces = _feature_of_traces(baseline)
    before = _by_span(baseline)
    start_ns = to_ns(INCIDENT_START)
    slow = compared = 0
    for key, span in _by_span(slowed).items():
        old = before[key]
        _, feature, root_start = traces[span.context.trace_id]
        if feature != "support-chat" or root_start < start_ns:
            assert fingerprint(span) == fingerprint(old)
            continue
        if is_llm_client(span):
            compared += 1
            slow += (span.end_time - span.start_time) > 4.9 * (old.end_time - old.start_time)
    assert compared > 200
    assert 0.05 < slow / compared < 0.16
