"""Convention mapping: the attribute sets real instrumentations send (shared/CONVENTIONS.md,
"Seen from real instrumentations"), and the normalised values Observatory must get from them.

Scenario: an OpenAI chat call with prompt 1200 tokens of which 1000 cached, completion 300
of which 100 reasoning; an Anthropic call with input 200 excluding cache, cache read 1000,
cache creation 50, output 300.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_spans_json
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from collectors.conventions import EVENT_SOURCES, FIELD_SOURCES, MappingConfig, map_span
from collectors.otlp import decode_traces_json
from collectors.records import CanonicalSpan, RawEvent, RawSpan, SpanRejected

START_NS = 1_764_000_000_000_000_000
CONFIG = MappingConfig()


def _raw(
    attributes: dict[str, Any],
    *,
    name: str = "span",
    resource: dict[str, Any] | None = None,
    kind: int = 3,
    status_code: int = 0,
    status_message: str = "",
    scope_name: str = "test",
    events: tuple[RawEvent, ...] = (),
) -> RawSpan:
    return RawSpan(
        trace_id=bytes.fromhex("5b8efff798038103d269b633813fc60c"),
        span_id=bytes.fromhex("eee19b7ec3c1b174"),
        parent_span_id=None,
        name=name,
        kind=kind,
        start_ns=START_NS,
        end_ns=START_NS + 2_000_000_000,
        status_code=status_code,
        status_message=status_message,
        attributes=attributes,
        resource={"service.name": "checkout"} if resource is None else resource,
        scope_name=scope_name,
        events=events,
    )


def _map(attributes: dict[str, Any], config: MappingConfig = CONFIG, **raw: Any) -> CanonicalSpan:
    return map_span(_raw(attributes, **raw), config)


def _tokens(span: CanonicalSpan) -> tuple[int | None, ...]:
    return (
        span.input_tokens,
        span.cache_read_tokens,
        span.cache_write_tokens,
        span.output_tokens,
        span.reasoning_tokens,
    )


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- OpenAI


def test_openai_v2_legacy_span() -> None:
    span = _map(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.response.id": "chatcmpl-abc",
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.openai.response.service_tier": "default",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300,
            "server.address": "api.openai.com",
            "server.port": 443,
        },
        name="chat gpt-4o-mini",
        scope_name="opentelemetry.instrumentation.openai_v2",
    )

    assert span.is_llm
    assert (span.provider, span.operation) == ("openai", "chat")
    assert (span.request_model, span.response_model) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    # No cached or reasoning counts in this mode: unknown, not zero.
    assert _tokens(span) == (1200, None, None, 300, None)
    assert span.finish_reasons == ["stop"]
    assert (span.response_id, span.service_tier, span.system_fingerprint) == ("chatcmpl-abc", "default", None)
    assert span.error_type is None
    assert span.service_name == "checkout"
    assert span.attributes == {"server.address": "api.openai.com", "server.port": 443}


def test_openai_v2_streamed_span_without_usage_has_unknown_tokens() -> None:
    span = _map(
        {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini"},
        name="chat gpt-4o-mini",
    )

    assert span.is_llm
    assert _tokens(span) == (None, None, None, None, None)
    assert span.finish_reasons is None


def test_openai_v2_latest_experimental_span() -> None:
    span = _map(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "openai.response.system_fingerprint": "fp_44709d6fcb",
            "openai.response.service_tier": "default",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "What is the capital of France?"}]}]
            ),
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": "Paris."}],
                        "finish_reason": "stop",
                    }
                ]
            ),
        }
    )

    assert span.provider == "openai"
    assert (span.system_fingerprint, span.service_tier) == ("fp_44709d6fcb", "default")
    assert _tokens(span) == (1200, None, None, 300, None)
    assert (span.prompt_chars, span.completion_chars) == (30, 6)
    assert span.prompt_hash == _hash("What is the capital of France?")
    assert span.attributes == {}


def test_openinference_openai_span() -> None:
    request_body = {
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "model": "gpt-4o-mini",
        "stop": ["END"],
    }
    span = _map(
        {
            "openinference.span.kind": "LLM",
            "llm.system": "openai",
            "llm.model_name": "gpt-4o-mini-2024-07-18",
            "llm.invocation_parameters": '{"model": "gpt-4o-mini"}',
            "llm.token_count.prompt": 1200,
            "llm.token_count.prompt_details.cache_read": 1000,
            "llm.token_count.completion": 300,
            "llm.token_count.completion_details.reasoning": 100,
            "llm.token_count.total": 1500,
            "input.value": json.dumps(request_body),
            "input.mime_type": "application/json",
            "output.value": '{"choices": [{"message": {"content": "Paris."}}]}',
            "output.mime_type": "application/json",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "What is the capital of France?",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "Paris.",
        },
        name="ChatCompletion",
    )

    assert span.is_llm
    assert (span.provider, span.operation) == ("openai", "llm")
    # The requested alias comes from the invocation parameters; llm.model_name is the snapshot.
    assert (span.request_model, span.response_model) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert span.is_streaming is None  # a plain call's parameters name no "stream"
    assert _tokens(span) == (1200, 1000, None, 300, 100)
    # The prompt arrives twice (messages and input.value): counted once.
    assert (span.prompt_chars, span.completion_chars) == (30, 6)
    assert span.prompt_hash == _hash("What is the capital of France?")
    assert span.attributes == {
        "llm.invocation_parameters": '{"model": "gpt-4o-mini"}',
        "llm.token_count.total": 1500,
        "input.mime_type": "application/json",
        "output.mime_type": "application/json",
    }


def test_openllmetry_openai_span() -> None:
    span = _map(
        {
            "llm.request.type": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.response.id": "chatcmpl-abc",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.reasoning_tokens": 100,
            "llm.usage.total_tokens": 1500,
            "gen_ai.openai.response.system_fingerprint": "fp_44709d6fcb",
            "gen_ai.is_streaming": False,
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "What is the capital of France?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "Paris.",
            "gen_ai.completion.0.finish_reason": "stop",
            "gen_ai.prompt.name": "capital-question",  # a prompt's name, not its content
        },
        name="openai.chat",
        scope_name="opentelemetry.instrumentation.openai",
    )

    assert (span.provider, span.operation) == ("openai", "chat")
    assert _tokens(span) == (1200, 1000, None, 300, 100)
    assert span.system_fingerprint == "fp_44709d6fcb"
    assert span.is_streaming is False
    assert span.finish_reasons == ["stop"]
    assert (span.prompt_chars, span.completion_chars) == (30, 6)
    assert span.attributes == {"llm.usage.total_tokens": 1500, "gen_ai.prompt.name": "capital-question"}


# --------------------------------------------------------------------------- Anthropic


ANTHROPIC_SDK_SPAN = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.response.model": "claude-sonnet-4-5-20250929",
    "gen_ai.response.id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "gen_ai.usage.input_tokens": 1250,
    "gen_ai.usage.cache_read.input_tokens": 1000,
    "gen_ai.usage.cache_write.input_tokens": 50,
    "gen_ai.usage.output_tokens": 300,
    # anthropic 2.16.0 sets no gen_ai.response.finish_reasons: its own keys instead.
    "anthropic.message.stop_reason": "end_turn",
    "anthropic.response.service_tier": "standard",
}


def test_anthropic_sdk_span_already_includes_cache_in_input() -> None:
    span = _map(ANTHROPIC_SDK_SPAN, name="anthropic.messages.create", scope_name="com.anthropic.sdk.python")

    assert span.provider == "anthropic"
    assert _tokens(span) == (1250, 1000, 50, 300, None)
    assert span.finish_reasons == ["end_turn"]
    assert span.service_tier == "standard"
    assert span.attributes == {}


def test_openllmetry_anthropic_span_reports_the_same_call_the_same_way() -> None:
    sdk = _map(ANTHROPIC_SDK_SPAN, name="anthropic.messages.create", scope_name="com.anthropic.sdk.python")
    openllmetry = _map(
        {
            "llm.request.type": "chat",
            "gen_ai.system": "Anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.model": "claude-sonnet-4-5-20250929",
            "gen_ai.response.id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "gen_ai.usage.input_tokens": 1250,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.cache_creation.input_tokens": 50,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.response.finish_reason": "end_turn",
        },
        name="anthropic.chat",
        scope_name="opentelemetry.instrumentation.anthropic",
    )

    assert openllmetry.provider == "anthropic"
    assert _tokens(openllmetry) == _tokens(sdk) == (1250, 1000, 50, 300, None)
    # Same response id: what lets the trace-level dedupe count this call once.
    assert openllmetry.response_id == sdk.response_id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert openllmetry.finish_reasons == ["end_turn"]


def test_raw_anthropic_input_excluding_cache_gets_the_cache_added_back() -> None:
    span = _map(
        {
            "gen_ai.system": "anthropic",
            "gen_ai.usage.input_tokens": 200,
            "gen_ai.usage.cache_read_input_tokens": 1000,  # OpenLLMetry's older spelling
            "gen_ai.usage.cache_creation_input_tokens": 50,
            "gen_ai.usage.output_tokens": 300,
        }
    )

    assert _tokens(span) == (1250, 1000, 50, 300, None)


# --------------------------------------------------------------------------- vLLM

VLLM_SPAN = {
    "gen_ai.request.id": "cmpl-8f3a",
    "gen_ai.request.max_tokens": 512,
    "gen_ai.request.temperature": 0.7,
    "gen_ai.request.top_p": 0.95,
    "gen_ai.request.n": 1,
    "gen_ai.usage.prompt_tokens": 1200,
    "gen_ai.usage.completion_tokens": 300,
    "gen_ai.response.finish_reasons": '["stop"]',
    "gen_ai.latency.time_to_first_token": 0.25,
    "gen_ai.latency.e2e": 1.5,
    "gen_ai.latency.time_in_queue": 0.012,
    "gen_ai.latency.time_in_model_prefill": 0.2,
    "gen_ai.latency.time_in_model_decode": 1.25,
    "gen_ai.latency.time_in_model_inference": 1.45,
}


def test_vllm_llm_request_span() -> None:
    config = MappingConfig(vllm_model="meta-llama/Llama-3.1-8B-Instruct")

    span = _map(VLLM_SPAN, config, name="llm_request", kind=2, resource={"service.name": "vllm"})

    assert span.is_llm
    assert span.provider == "vllm"
    assert span.response_model == "meta-llama/Llama-3.1-8B-Instruct"
    assert _tokens(span) == (1200, None, None, 300, None)
    assert span.finish_reasons == ["stop"]
    assert span.ttft_ms == pytest.approx(250.0)
    assert span.queue_ms == pytest.approx(12.0)
    assert span.prefill_ms == pytest.approx(200.0)
    assert span.decode_ms == pytest.approx(1250.0)
    assert span.server_e2e_ms == pytest.approx(1500.0)
    assert span.response_id == "cmpl-8f3a"
    assert span.error_type is None
    # No canonical column for the inference total or the sampling parameters: kept as-is.
    assert span.attributes == {
        "gen_ai.request.max_tokens": 512,
        "gen_ai.request.temperature": 0.7,
        "gen_ai.request.top_p": 0.95,
        "gen_ai.request.n": 1,
        "gen_ai.latency.time_in_model_inference": 1.45,
    }


def test_vllm_span_model_comes_from_the_span_before_the_configuration() -> None:
    config = MappingConfig(vllm_model="configured")

    with_model = _map({**VLLM_SPAN, "gen_ai.response.model": "served"}, config, name="llm_request")
    unconfigured = _map(VLLM_SPAN, name="llm_request")

    assert with_model.response_model == "served"
    assert unconfigured.response_model is None
    assert unconfigured.provider == "vllm"


def test_vllm_abort_is_an_error() -> None:
    span = _map({**VLLM_SPAN, "gen_ai.response.finish_reasons": '["abort"]'}, name="llm_request")

    assert span.finish_reasons == ["abort"]
    assert span.error_type == "error"


# --------------------------------------------------------------------------- Langfuse


def test_langfuse_generation_usage_excludes_cache_and_reasoning() -> None:
    completion_start = datetime.fromtimestamp(START_NS // 10**9 + 0.25, UTC).isoformat()
    span = _map(
        {
            "langfuse.observation.type": "generation",
            "langfuse.observation.model.name": "gpt-4o-mini",
            "langfuse.observation.usage_details": json.dumps(
                {
                    "input": 200,
                    "input_cached_tokens": 1000,
                    "output": 200,
                    "output_reasoning_tokens": 100,
                    "total": 1500,
                }
            ),
            "langfuse.observation.cost_details": json.dumps({"input": 0.00003, "output": 0.00018, "total": 0.00021}),
            "langfuse.observation.completion_start_time": json.dumps(completion_start),
            "langfuse.observation.input": json.dumps([{"role": "user", "content": "What is the capital of France?"}]),
            "langfuse.observation.output": json.dumps({"role": "assistant", "content": "Paris."}),
            "langfuse.observation.level": "ERROR",
            "langfuse.observation.status_message": "rate limited",
            "langfuse.observation.metadata.tenant": "acme",
            "user.id": "user-7",
            "session.id": "session-3",
            "langfuse.trace.name": "answer-question",
        },
        name="OpenAI-generation",
    )

    assert span.is_llm
    assert (span.operation, span.response_model) == ("generation", "gpt-4o-mini")
    assert _tokens(span) == (1200, 1000, None, 300, 100)
    assert span.supplied_cost_usd == Decimal("0.00021")
    assert span.ttft_ms == pytest.approx(250.0)
    assert span.error_type == "rate limited"
    assert (span.user_id, span.session_id) == ("user-7", "session-3")
    assert span.feature == "answer-question"
    assert (span.prompt_chars, span.completion_chars) == (30, 6)
    assert span.attributes == {"langfuse.observation.metadata.tenant": "acme", "langfuse.trace.name": "answer-question"}


def test_langfuse_langchain_anthropic_usage_keys() -> None:
    span = _map(
        {
            "langfuse.observation.type": "generation",
            "langfuse.observation.usage_details": json.dumps(
                {"input": 2000, "input_cache_read": 1000, "input_cache_creation": 50, "output": 300}
            ),
            "langfuse.observation.cost_details": json.dumps({"input": 0.0006, "output": 0.0045}),
        }
    )

    # More uncached than cached input: only knowing the source excludes cache gets this right.
    assert _tokens(span) == (3050, 1000, 50, 300, None)
    assert span.supplied_cost_usd == Decimal("0.0051")


def test_gen_ai_usage_wins_over_langfuse_usage_details() -> None:
    span = _map(
        {
            "gen_ai.usage.input_tokens": 1200,
            "langfuse.observation.usage_details": '{"input": 200, "input_cached_tokens": 1000, "output": 300}',
        }
    )

    assert _tokens(span) == (1200, 1000, None, 300, None)


# --------------------------------------------------------------------------- tenant, feature, errors


def test_tenant_and_feature_prefer_span_attributes_then_configured_order() -> None:
    config = MappingConfig(tenant_keys=["tenant.id", "app.tenant"], feature_keys=["app.feature", "service.name"])
    resource = {"service.name": "checkout", "tenant.id": "from-resource", "app.feature": "resource-feature"}

    on_span = _map({"app.tenant": "from-span", "app.feature": "search"}, config, resource=resource)
    on_resource = _map({}, config, resource=resource)
    service_only = _map({}, config, resource={"service.name": "checkout"})
    nothing = _map({}, config, resource={})

    # A later key on the span beats an earlier key on the resource.
    assert (on_span.tenant, on_span.feature) == ("from-span", "search")
    assert (on_resource.tenant, on_resource.feature) == ("from-resource", "resource-feature")
    assert (service_only.tenant, service_only.feature) == (None, "checkout")
    assert (nothing.tenant, nothing.feature, nothing.service_name) == (None, None, "")


def test_configured_key_order_decides_between_two_span_keys() -> None:
    attributes = {"tenant.id": "first", "traceloop.association.properties.customer_id": "second"}

    default_order = _map(attributes)
    reversed_order = _map(
        attributes, MappingConfig(tenant_keys=["traceloop.association.properties.customer_id", "tenant.id"])
    )

    assert default_order.tenant == "first"
    assert reversed_order.tenant == "second"


def test_non_llm_span_is_mapped_but_not_an_llm_call() -> None:
    span = _map(
        {"http.route": "/answer", "tenant.id": "acme", "user.id": "user-7", "observatory.task.id": "task-9"},
        name="GET /answer",
        kind=2,
        status_code=2,
        status_message="x" * 150,
    )

    assert not span.is_llm
    # service.name is the feature of last resort, applied after trace inheritance, not here.
    assert (span.tenant, span.feature, span.service_name) == ("acme", None, "checkout")
    assert (span.user_id, span.task_id) == ("user-7", "task-9")
    assert span.error_type == "x" * 100
    assert span.attributes == {"http.route": "/answer", "tenant.id": "acme"}


@pytest.mark.parametrize(
    ("attributes", "is_llm"),
    [
        ({"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 5000}, False),
        ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}, False),
        ({"openinference.span.kind": "CHAIN", "llm.model_name": "gpt-4o"}, False),
        ({"openinference.span.kind": "EMBEDDING", "embedding.model_name": "text-embedding-3-small"}, True),
        ({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3-small"}, True),
        ({"gen_ai.request.model": "gpt-4o"}, True),
        ({"gen_ai.usage.output_tokens": 3}, True),
        ({"langfuse.observation.type": "span"}, False),
        ({"traceloop.workflow.name": "answer"}, False),
    ],
)
def test_is_llm(attributes: dict[str, Any], is_llm: bool) -> None:
    assert _map(attributes).is_llm is is_llm


def test_error_type_prefers_error_type_attribute() -> None:
    with_type = _map({"error.type": "RateLimitError"}, status_code=2, status_message="429 Too Many Requests")
    status_only = _map({}, status_code=2)
    not_an_error = _map({}, status_code=1, status_message="fine")

    assert with_type.error_type == "RateLimitError"
    assert status_only.error_type == "error"
    assert not_an_error.error_type is None


def test_observatory_and_other_scalar_fields() -> None:
    span = _map(
        {
            "gen_ai.request.model": "gpt-4o-mini",
            "app.task.id": "task-1",
            "http.request.resend_count": 2,
            "observatory.retry.attempt": "1",
            "observatory.semantic_cache.hit": True,
            "gen_ai.request.stream": True,
            "gen_ai.conversation.id": "conv-5",
            "traceloop.association.properties.user_id": 42,
            "llm.cost.total": 0.0123,
            "gen_ai.response.time_to_first_chunk": 0.4,
        }
    )

    assert span.task_id == "task-1"
    assert span.retry_attempt == 1  # Observatory's own key first
    assert span.semantic_cache_hit is True
    assert span.is_streaming is True
    assert (span.session_id, span.user_id) == ("conv-5", "42")
    assert span.supplied_cost_usd == Decimal("0.0123")
    assert span.ttft_ms == pytest.approx(400.0)


@pytest.mark.parametrize(
    ("attributes", "reasons"),
    [
        ({"gen_ai.response.finish_reasons": ["stop", "length"]}, ["stop", "length"]),
        ({"gen_ai.response.finish_reasons": '["length"]'}, ["length"]),
        ({"gen_ai.response.finish_reason": "tool_calls"}, ["tool_calls"]),
        ({"llm.finish_reason": "stop"}, ["stop"]),
        ({"gen_ai.response.finish_reasons": []}, None),
    ],
)
def test_finish_reasons_shapes(attributes: dict[str, Any], reasons: list[str] | None) -> None:
    assert _map(attributes).finish_reasons == reasons


def test_a_value_that_does_not_convert_falls_back_to_the_next_source() -> None:
    span = _map({"gen_ai.usage.input_tokens": "lots", "gen_ai.usage.prompt_tokens": 1200})

    assert span.input_tokens == 1200
    assert "gen_ai.usage.input_tokens" not in span.attributes


# --------------------------------------------------------------------------- content and caps


def test_content_is_kept_only_when_configured() -> None:
    attributes = {
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.prompt.0.content": "hello",
        "gen_ai.completion.0.content": "hi there",
        "gen_ai.tool.call.arguments": '{"city": "Paris"}',
    }

    stripped = _map(attributes)
    captured = _map(attributes, MappingConfig(capture_content=True))

    assert stripped.attributes == {}
    assert captured.attributes == {
        "gen_ai.prompt.0.content": "hello",
        "gen_ai.completion.0.content": "hi there",
        "gen_ai.tool.call.arguments": '{"city": "Paris"}',
    }
    assert (stripped.prompt_chars, stripped.completion_chars) == (captured.prompt_chars, captured.completion_chars)
    assert (stripped.prompt_chars, stripped.completion_chars, stripped.prompt_hash) == (5, 8, _hash("hello"))


def test_content_on_a_non_llm_span_is_stripped_but_not_measured() -> None:
    span = _map({"traceloop.entity.input": '{"question": "secret"}', "traceloop.span.kind": "workflow"})

    assert span.attributes == {"traceloop.span.kind": "workflow"}
    assert span.prompt_chars is None


def test_each_attribute_value_is_capped() -> None:
    config = MappingConfig(max_attribute_chars=10, max_attributes_chars=1000)

    span = _map({"long": "a" * 50, "list": ["b" * 20, 1], "short": "ok", "nan": math.nan}, config)

    assert span.attributes == {
        "long": "a" * 10,
        "list": ["b" * 10, 1],
        "short": "ok",
        "nan": "nan",
        "_truncated": True,
    }


def test_the_whole_attribute_dict_is_capped_by_dropping_the_largest_values() -> None:
    config = MappingConfig(max_attribute_chars=100, max_attributes_chars=60)
    attributes = {"a": "x" * 40, "b": "y" * 30, "c": "z" * 5, "d": 7}

    span = _map(attributes, config, resource={"service.name": "checkout", "big": "w" * 80})

    # 41 + 31 + 6 + 9 = 87 > 60: dropping "a" (41) is enough.
    assert span.attributes == {"b": "y" * 30, "c": "z" * 5, "d": 7, "_truncated": True}
    # The resource is capped the same way: 20 + 83 = 103 > 60 drops "big".
    assert span.resource == {"service.name": "checkout", "_truncated": True}


# --------------------------------------------------------------------------- robustness and end to end


def test_table_keys_with_garbage_values_never_raise_but_span_rejected() -> None:
    rng = random.Random(7)
    garbage = [
        None,
        "",
        "x",
        "-1",
        "1e400",
        "[",
        "{",
        "[1, {}]",
        -5,
        2**70,
        1.5,
        math.inf,
        True,
        [],
        {},
        [None],
        {"a": 1},
    ]
    keys = [source.key for sources in FIELD_SOURCES.values() for source in sources]
    for _ in range(500):
        attributes = {key: rng.choice(garbage) for key in rng.sample(keys, 12)}
        try:
            span = _map(attributes, name=rng.choice(["llm_request", "x"]))
        except SpanRejected as exc:
            assert "is not a token count" in str(exc)
            continue
        assert span.input_tokens is None or span.input_tokens >= 0


def test_sdk_span_through_the_json_encoder_decoder_and_mapper() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot", "tenant.id": "acme"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("com.anthropic.sdk.python")
    with tracer.start_as_current_span(
        "anthropic.messages.create", kind=SpanKind.CLIENT, attributes={**ANTHROPIC_SDK_SPAN, "app.feature": "triage"}
    ):
        pass
    provider.shutdown()

    (raw,), rejections = decode_traces_json(encode_spans_json(exporter.get_finished_spans()).to_json().encode())
    span = map_span(raw, CONFIG)

    assert rejections == []
    assert (span.tenant, span.feature, span.service_name) == ("acme", "triage", "support-bot")
    assert (span.provider, span.response_model) == ("anthropic", "claude-sonnet-4-5-20250929")
    assert _tokens(span) == (1250, 1000, 50, 300, None)
    assert span.scope_name == "com.anthropic.sdk.python"
    assert span.attributes == {"app.feature": "triage"}


def test_nul_characters_never_reach_the_store() -> None:
    # PostgreSQL refuses NUL in text and jsonb: one such span would fail the whole batch.
    span = _map(
        {"gen_ai.request.model": "gpt\x00-4o", "note": "a\x00b", "k\x00ey": 1, "tenant.id": "ac\x00me"},
        name="chat\x00",
        status_code=2,
        status_message="bad\x00",
    )

    assert (span.name, span.request_model, span.tenant, span.error_type) == ("chat", "gpt-4o", "acme", "bad")
    assert span.attributes == {"note": "ab", "key": 1, "tenant.id": "acme"}


@pytest.mark.parametrize(
    ("usage_details", "tokens"),
    [
        # The raw OpenAI chat usage object, which Langfuse's SDK may pass through as is.
        (
            {
                "prompt_tokens": 1200,
                "completion_tokens": 300,
                "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 100},
            },
            (1200, 1000, None, 300, 100),
        ),
        # The raw OpenAI Responses usage object.
        (
            {
                "input_tokens": 1200,
                "output_tokens": 300,
                "input_tokens_details": {"cached_tokens": 1000},
                "output_tokens_details": {"reasoning_tokens": 100},
            },
            (1200, 1000, None, 300, 100),
        ),
        # The raw Anthropic usage object: input excludes cache.
        (
            {
                "input_tokens": 200,
                "cache_read_input_tokens": 1000,
                "cache_creation_input_tokens": 50,
                "output_tokens": 300,
            },
            (1250, 1000, 50, 300, None),
        ),
        # Langfuse's own shape with the 5m/1h cache-write split and an audio detail.
        (
            {"input": 2000, "input_cache_creation_5m": 30, "input_cache_creation_1h": 20, "input_audio_tokens": 5},
            (2055, None, 50, None, None),
        ),
    ],
)
def test_langfuse_usage_details_shapes(usage_details: dict[str, Any], tokens: tuple[int | None, ...]) -> None:
    span = _map({"langfuse.observation.usage_details": json.dumps(usage_details)})

    assert _tokens(span) == tokens


@pytest.mark.parametrize("value", [-5, 10**13, -1.0])
def test_out_of_range_token_count_rejects_the_span(value: int | float) -> None:
    with pytest.raises(SpanRejected, match=r"gen_ai\.usage\.input_tokens"):
        _map({"gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": value})


# --------------------------------------------------------------------------- span events

OPENINFERENCE_STREAMED = {
    "openinference.span.kind": "LLM",
    "llm.system": "openai",
    "llm.model_name": "gpt-4o-mini-2024-07-18",
    "llm.invocation_parameters": '{"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}}',
    "llm.token_count.prompt": 1200,
    "llm.token_count.completion": 300,
}


def _event(name: str, after_ms: float, **attributes: Any) -> RawEvent:
    return RawEvent(name, START_NS + int(after_ms * 1_000_000), attributes)


def test_ttft_from_openinference_first_token_event() -> None:
    span = _map(OPENINFERENCE_STREAMED, events=(_event("First Token Stream Event", 412.5),))

    assert span.ttft_ms == pytest.approx(412.5)
    assert (span.request_model, span.response_model) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert span.is_streaming is True
    # Events are read, never stored.
    assert "First Token Stream Event" not in json.dumps(span.attributes)


def test_ttft_from_the_first_openllmetry_chunk_event() -> None:
    chunks = tuple(_event("gen_ai.content.completion.chunk", 180.0 + 15 * index) for index in range(40))
    span = _map(
        {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.is_streaming": True},
        events=(_event("unrelated", 5.0), *chunks),
    )

    assert span.ttft_ms == pytest.approx(180.0)


def test_an_explicit_ttft_attribute_wins_over_a_first_token_event() -> None:
    attributes = {"gen_ai.provider.name": "anthropic", "gen_ai.response.time_to_first_chunk": 0.25}
    span = _map(attributes, events=(_event("gen_ai.content.completion.chunk", 900.0),))
    assert span.ttft_ms == pytest.approx(250.0)

    # Langfuse's completion start is an attribute too: it wins over the event.
    langfuse = {"gen_ai.system": "openai", "langfuse.observation.completion_start_time": '"2025-11-24T16:00:00.300Z"'}
    start_ns = int(datetime(2025, 11, 24, 16, 0, tzinfo=UTC).timestamp()) * 1_000_000_000
    raw = _raw(langfuse, events=(RawEvent("First Token Stream Event", start_ns + 700_000_000, {}),))
    raw.start_ns, raw.end_ns = start_ns, start_ns + 2_000_000_000
    assert map_span(raw, CONFIG).ttft_ms == pytest.approx(300.0)


def test_a_ttft_attribute_just_past_the_span_end_is_capped_at_its_duration() -> None:
    # The span lasts 2 s; the anthropic SDK's timer starts a little before its span does.
    attributes = {"gen_ai.provider.name": "anthropic", "gen_ai.request.stream": True}
    just_past = _map(attributes | {"gen_ai.response.time_to_first_chunk": 2.0006})
    assert just_past.ttft_ms == pytest.approx(2_000.0)
    inside = _map(attributes | {"gen_ai.response.time_to_first_chunk": 1.9994})
    assert inside.ttft_ms == pytest.approx(1_999.4)
    # Far past: not skew, the span does not cover the stream; kept as the instrumentation sent it.
    far_past = _map(attributes | {"gen_ai.response.time_to_first_chunk": 3.5})
    assert far_past.ttft_ms == pytest.approx(3_500.0)


def test_a_first_token_event_outside_the_span_gives_no_ttft() -> None:
    # Before the start, after the end, or with no time: a clock mix-up, not a first token.
    for event in (
        _event("First Token Stream Event", -1.0),
        _event("First Token Stream Event", 2_000.001),
        RawEvent("First Token Stream Event", 0, {}),
    ):
        assert _map(OPENINFERENCE_STREAMED, events=(event,)).ttft_ms is None
    # The span's own end is still within it (a stream that sent everything in one chunk).
    at_the_end = _map(OPENINFERENCE_STREAMED, events=(_event("First Token Stream Event", 2_000.0),))
    assert at_the_end.ttft_ms == pytest.approx(2_000.0)


def test_exception_event_gives_the_error_type_of_a_failed_span() -> None:
    exception = _event("exception", 30.0, **{"exception.type": "openai.RateLimitError", "exception.message": "429"})
    failed = _map(
        OPENINFERENCE_STREAMED,
        status_code=2,
        status_message="RateLimitError: Error code: 429 - injected failure",
        events=(exception,),
    )
    assert failed.error_type == "openai.RateLimitError"
    assert "429" not in json.dumps(failed.attributes)

    # An error.type attribute wins over the event.
    explicit = _map(OPENINFERENCE_STREAMED | {"error.type": "rate_limit"}, status_code=2, events=(exception,))
    assert explicit.error_type == "rate_limit"

    # An exception the instrumentation recorded on a span that did not fail is no error.
    handled = _map(OPENINFERENCE_STREAMED, status_code=1, events=(exception,))
    assert handled.error_type is None

    # No exception event: the status message, as before.
    no_event = _map(OPENINFERENCE_STREAMED, status_code=2, status_message="upstream 529")
    assert no_event.error_type == "upstream 529"
    # An exception event without a type adds nothing.
    untyped = _map(OPENINFERENCE_STREAMED, status_code=2, events=(_event("exception", 1.0),))
    assert untyped.error_type == "error"
    # Several: the last failed the span (the earlier ones were retried past).
    retried = (
        _event("exception", 10.0, **{"exception.type": "openai.APITimeoutError"}),
        _event("exception", 20.0, **{"exception.type": "openai.InternalServerError"}),
        _event("exception", 30.0),
    )
    assert _map(OPENINFERENCE_STREAMED, status_code=2, events=retried).error_type == "openai.InternalServerError"


@pytest.mark.parametrize(
    "parameters",
    ["{not json", '["gpt-4o-mini"]', '"gpt-4o-mini"', "null", '{"model": 42.5, "stream": "maybe"}', "{}", "", 17],
)
def test_invalid_invocation_parameters_are_ignored(parameters: Any) -> None:
    attributes = OPENINFERENCE_STREAMED | {"llm.invocation_parameters": parameters}

    span = _map(attributes)

    # Back to the responded model, as before the parameters were read; nothing raised.
    assert (span.request_model, span.response_model) == ("gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18")
    assert span.is_streaming is None
    assert span.input_tokens == 1200


def test_invocation_parameters_rank_below_the_standard_keys() -> None:
    attributes = OPENINFERENCE_STREAMED | {"gen_ai.request.model": "gpt-4o", "llm.is_streaming": False}
    span = _map(attributes)
    assert (span.request_model, span.is_streaming) == ("gpt-4o", False)

    # OpenInference's embeddings keep theirs under another key.
    embedding = _map(
        {
            "openinference.span.kind": "EMBEDDING",
            "embedding.model_name": "text-embedding-3-small",
            "embedding.invocation_parameters": '{"model": "text-embedding-3-small", "encoding_format": "base64"}',
        }
    )
    assert embedding.request_model == "text-embedding-3-small"
    assert embedding.attributes["embedding.invocation_parameters"].startswith('{"model"')


@pytest.mark.parametrize(
    "cache_write",
    [
        {"gen_ai.usage.cache_write.input_tokens": 50},
        {"gen_ai.usage.cache_creation.input_tokens": 50},
        {"gen_ai.usage.cache_creation_input_tokens": 50},
        {"gen_ai.usage.cache_write.input_tokens": 50, "gen_ai.usage.cache_creation.input_tokens": 50},
    ],
    ids=["cache_write", "cache_creation", "underscore", "both"],
)
def test_every_cache_write_spelling_normalises_the_same(cache_write: dict[str, int]) -> None:
    # Anthropic's call (raw input 200 excluding cache), as an instrumentation that adds the
    # cache back reports it (1250), and as one that forwards the raw count (200).
    for input_tokens in (1250, 200):
        attributes = {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 300,
        }
        span = _map(attributes | cache_write)
        assert _tokens(span) == (1250, 1000, 50, 300, None)
        assert span.attributes == {}


def test_event_sources_name_intermediate_fields_only() -> None:
    # map_span turns each into a canonical field itself (TTFT, error type).
    assert set(EVENT_SOURCES) == {"_first_token_ns", "_exception_type"}
    names = [source.event_name for sources in EVENT_SOURCES.values() for source in sources]
    assert len(names) == len(set(names))
