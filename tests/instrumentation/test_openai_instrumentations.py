"""The real OpenAI instrumentations, around the real `openai` client, end to end.

openai client -> our OpenAI-compatible test server; the instrumentation's spans -> the real
OTLP/protobuf exporter -> the live Django receiver -> PostgreSQL. The expectations are what
each package really delivers (CONVENTIONS.md, "Seen from real instrumentations"), not what
a convention document promises: when a package changes what it sends, these tests say so.

The server answers every chat call with prompt 1200 tokens (1000 of them cached) and
completion 300 (100 of them reasoning).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.sdk.trace import TracerProvider

from apps.pricing.models import Price
from apps.telemetry.models import Span
from tests.instrumentation.calls import (
    FEATURE,
    TENANT,
    calls_by_tenant_and_feature,
    flush,
    methods_restored,
    request_root,
)
from tests.support.openai_server import COMPLETION_TEXT, SYSTEM_FINGERPRINT, OpenAITestServer

SYSTEM_PROMPT = "You are a terse support assistant."
PROMPT = "Summarise ticket 4711: the llama enclosure gate sticks whenever it rains."
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": SYSTEM_PROMPT},
    {"role": "user", "content": PROMPT},
]
MODEL = "gpt-4o-mini"
SNAPSHOT = "gpt-4o-mini-2024-07-18"
STATUS_ERROR = 2


def _openai_v2(monkeypatch: pytest.MonkeyPatch) -> BaseInstrumentor:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    return OpenAIInstrumentor()


def _openai_v2_latest_experimental(monkeypatch: pytest.MonkeyPatch) -> BaseInstrumentor:
    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetrySemanticConventionStability,
        _OpenTelemetryStabilitySignalType,
        _StabilityMode,
    )
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    # OTEL_SEMCONV_STABILITY_OPT_IN is parsed once per process, by whichever instrumentor
    # runs first, so setting the variable here would be too late: set the parsed mode for
    # this test only.
    _OpenTelemetrySemanticConventionStability._initialize()
    monkeypatch.setitem(
        _OpenTelemetrySemanticConventionStability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING,
        _OpenTelemetryStabilitySignalType.GEN_AI,
        _StabilityMode.GEN_AI_LATEST_EXPERIMENTAL,
    )
    # Content on the span, so that the receiver has prompts to measure and must drop.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    return OpenAIInstrumentor()


def _openinference(monkeypatch: pytest.MonkeyPatch) -> BaseInstrumentor:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    return OpenAIInstrumentor()


def _openllmetry(monkeypatch: pytest.MonkeyPatch) -> BaseInstrumentor:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    # Its default, spelt out: prompts and completions on the span (measured, then dropped).
    monkeypatch.setenv("TRACELOOP_TRACE_CONTENT", "true")
    return OpenAIInstrumentor()


@dataclass(frozen=True)
class Instrumentation:
    """What one instrumentation delivers for the plain call and the streamed call with usage."""

    make: Callable[[pytest.MonkeyPatch], BaseInstrumentor]
    span_name: str
    request_model: str
    cache_read_tokens: int | None
    # The plain call's, and the streamed call's (OpenLLMetry reads it off the plain response only).
    reasoning_tokens: int | None
    streamed_reasoning_tokens: int | None
    # The plain call's, and whether the streamed span has them too.
    finish_reasons: list[str] | None
    streamed_finish_reasons: bool
    system_fingerprint: str | None
    service_tier: str | None
    streamed_service_tier: str | None
    has_response_id: bool
    # Whether a streamed span carries its time to first token (an attribute or an event).
    streamed_ttft: bool
    # The model on a span whose call failed (no response, so only the requested model).
    error_request_model: str | None
    # The error type of a rate-limited call: error.type, else the exception event's type.
    error_type: str
    # Whether prompt and completion text arrive on the span (to be measured, then dropped).
    delivers_content: bool


INSTRUMENTATIONS = [
    pytest.param(
        # opentelemetry-instrumentation-openai-v2, default (v1.30.0 semantic conventions):
        # gen_ai.system, input/output tokens only, service tier under its deprecated key.
        Instrumentation(
            make=_openai_v2,
            span_name=f"chat {MODEL}",
            request_model=MODEL,
            cache_read_tokens=None,
            reasoning_tokens=None,
            streamed_reasoning_tokens=None,
            finish_reasons=["stop"],
            streamed_finish_reasons=False,
            system_fingerprint=None,
            service_tier="default",
            streamed_service_tier="default",
            has_response_id=True,
            # Its time to first chunk is a metric only (gen_ai.client.operation.time_to_first_chunk).
            streamed_ttft=False,
            error_request_model=MODEL,
            error_type="RateLimitError",
            delivers_content=False,
        ),
        id="openai-v2",
    ),
    pytest.param(
        # The same package with OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental:
        # gen_ai.provider.name, openai.response.*; still no cached or reasoning tokens.
        Instrumentation(
            make=_openai_v2_latest_experimental,
            span_name=f"chat {MODEL}",
            request_model=MODEL,
            cache_read_tokens=None,
            reasoning_tokens=None,
            streamed_reasoning_tokens=None,
            finish_reasons=["stop"],
            streamed_finish_reasons=False,
            system_fingerprint=SYSTEM_FINGERPRINT,
            service_tier="default",
            streamed_service_tier="default",
            has_response_id=True,
            streamed_ttft=False,
            error_request_model=MODEL,
            error_type="RateLimitError",
            delivers_content=True,
        ),
        id="openai-v2-latest-experimental",
    ),
    pytest.param(
        # openinference-instrumentation-openai: llm.system (no llm.provider), llm.model_name
        # is the responded model and the requested one is inside llm.invocation_parameters
        # (JSON), all four token counts, the first token as a span event, and the full prompt
        # and completion in input.value / llm.*_messages.*.
        Instrumentation(
            make=_openinference,
            span_name="ChatCompletion",
            request_model=MODEL,
            cache_read_tokens=1000,
            reasoning_tokens=100,
            streamed_reasoning_tokens=100,
            finish_reasons=["stop"],
            streamed_finish_reasons=True,
            system_fingerprint=None,
            service_tier=None,
            streamed_service_tier=None,
            has_response_id=False,
            streamed_ttft=True,
            error_request_model=MODEL,
            # No error.type: the exception event's, fully qualified as the SDK records it.
            error_type="openai.RateLimitError",
            delivers_content=True,
        ),
        id="openinference",
    ),
    pytest.param(
        # opentelemetry-instrumentation-openai (OpenLLMetry): gen_ai.provider.name, cached
        # tokens, reasoning tokens and fingerprint on the plain call only, one span event per
        # streamed chunk (the first is the first token), content in gen_ai.input/output.messages.
        Instrumentation(
            make=_openllmetry,
            span_name="openai.chat",
            request_model=MODEL,
            cache_read_tokens=1000,
            reasoning_tokens=100,
            streamed_reasoning_tokens=None,
            finish_reasons=["stop"],
            streamed_finish_reasons=True,
            system_fingerprint=SYSTEM_FINGERPRINT,
            service_tier="default",
            streamed_service_tier=None,
            has_response_id=True,
            streamed_ttft=True,
            error_request_model=MODEL,
            error_type="RateLimitError",
            delivers_content=True,
        ),
        id="openllmetry",
    ),
]


@pytest.fixture(params=INSTRUMENTATIONS)
def instrumentation(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tracer_provider: TracerProvider
) -> Iterator[Instrumentation]:
    expected: Instrumentation = request.param
    instrumentor = expected.make(monkeypatch)
    # Every package patches the openai module itself: leave it clean for the next test, even
    # where the package's own uninstrument misses something.
    with methods_restored("openai"):
        instrumentor.instrument(tracer_provider=tracer_provider)
        try:
            yield expected
        finally:
            instrumentor.uninstrument()


@pytest.fixture
def client(openai_server: OpenAITestServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=openai_server.base_url, api_key="test", max_retries=0)


def _expected_cost(span: Span, price: Price) -> Decimal:
    """Each part of the usage at its own rate, cached input and reasoning output charged once."""
    input_tokens, output_tokens = span.input_tokens or 0, span.output_tokens or 0
    cached, reasoning = span.cache_read_tokens or 0, span.reasoning_tokens or 0
    cached_rate = price.cached_input_per_mtok if price.cached_input_per_mtok is not None else price.input_per_mtok
    reasoning_rate = price.reasoning_per_mtok if price.reasoning_per_mtok is not None else price.output_per_mtok
    per_mtok = (
        (input_tokens - cached) * price.input_per_mtok
        + cached * cached_rate
        + (output_tokens - reasoning) * price.output_per_mtok
        + reasoning * reasoning_rate
    )
    return per_mtok / 1_000_000


def _assert_priced(span: Span) -> None:
    assert span.price_id is not None, f"{span.name}: no price row for {span.provider}/{span.response_model}"
    price = Price.objects.get(pk=span.price_id)
    assert price.provider == "openai"
    assert span.cost_usd is not None and span.cost_usd > 0
    assert abs(span.cost_usd - _expected_cost(span, price)) < Decimal("1e-9")


def _assert_no_content_stored(spans: list[Span]) -> None:
    for span in spans:
        stored = json.dumps([span.attributes, span.resource])
        for text in (PROMPT, SYSTEM_PROMPT, COMPLETION_TEXT):
            assert text not in stored, f"{span.name} stores content: {stored[:300]}"


@pytest.mark.django_db(transaction=True)
def test_chat_calls_arrive_with_tokens_cost_and_the_requests_tenant(
    instrumentation: Instrumentation,
    tracer_provider: TracerProvider,
    client: openai.OpenAI,
    openai_server: OpenAITestServer,
) -> None:
    expected = instrumentation
    with request_root(tracer_provider):
        reply = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert reply.usage is not None and reply.usage.prompt_tokens == 1200
        stream = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        streamed_text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert streamed_text == COMPLETION_TEXT
        for _ in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
            pass
    flush(tracer_provider)
    assert len(openai_server.requests) == 3

    spans = list(Span.objects.order_by("start_time"))
    root = next(span for span in spans if span.parent_span_id is None)
    plain, streamed, streamed_without_usage = (span for span in spans if span.is_llm)
    assert len(spans) == 4

    # Attribution: no instrumentation carries the tenant or feature; the application's root
    # span does, and every LLM span is in its trace (the trace rollup attributes them).
    assert (root.tenant, root.feature, root.is_llm) == (TENANT, FEATURE, False)
    for span in (plain, streamed, streamed_without_usage):
        assert span.trace_id == root.trace_id
        assert span.parent_span_id == root.span_id
        assert span.tenant in (None, TENANT)
        assert span.feature in (None, FEATURE)
        assert span.name == expected.span_name
        assert (span.provider, span.request_model, span.response_model) == ("openai", expected.request_model, SNAPSHOT)
        assert span.service_name == "support-api"

    for span in (plain, streamed):
        assert (span.input_tokens, span.output_tokens) == (1200, 300)
        assert span.cache_read_tokens == expected.cache_read_tokens
        assert span.cache_write_tokens is None
        assert span.error_type is None and span.status_code != STATUS_ERROR
        _assert_priced(span)
    assert (plain.reasoning_tokens, streamed.reasoning_tokens) == (
        expected.reasoning_tokens,
        expected.streamed_reasoning_tokens,
    )
    assert (plain.service_tier, streamed.service_tier) == (expected.service_tier, expected.streamed_service_tier)
    # The cost by hand from the catalog's rates, for the tokens the server sent (1200 in, of
    # which 1000 cached; 300 out, of which 100 reasoning where the span reports it).
    assert plain.price_id is not None
    price = Price.objects.get(pk=plain.price_id)
    assert (price.provider, price.model_pattern.startswith(MODEL)) == ("openai", True)
    cached_rate = price.cached_input_per_mtok if price.cached_input_per_mtok is not None else price.input_per_mtok
    reasoning_rate = price.reasoning_per_mtok if price.reasoning_per_mtok is not None else price.output_per_mtok
    for span in (plain, streamed):
        cached = expected.cache_read_tokens or 0
        reasoning = span.reasoning_tokens or 0
        by_hand = (
            (1200 - cached) * price.input_per_mtok
            + cached * cached_rate
            + (300 - reasoning) * price.output_per_mtok
            + reasoning * reasoning_rate
        ) / 1_000_000
        assert span.cost_usd is not None and abs(span.cost_usd - by_hand) < Decimal("1e-9")

    # Time to first token: only a streamed call has one, and it lies inside the span.
    assert plain.ttft_ms is None
    for span in (streamed, streamed_without_usage):
        if expected.streamed_ttft:
            assert span.ttft_ms is not None and 0 < span.ttft_ms <= span.duration_ms
        else:
            assert span.ttft_ms is None
    assert streamed.is_streaming in (None, True) and plain.is_streaming in (None, False)
    assert plain.finish_reasons == expected.finish_reasons
    assert streamed.finish_reasons == (expected.finish_reasons if expected.streamed_finish_reasons else None)
    assert plain.system_fingerprint == expected.system_fingerprint
    if expected.has_response_id:
        assert (plain.response_id, streamed.response_id) == ("chatcmpl-observatory000001", "chatcmpl-observatory000002")
    else:
        assert plain.response_id is None

    # Streamed without stream_options.include_usage: OpenAI sends no usage, so the tokens
    # are unknown, not 0, and so is the cost.
    assert streamed_without_usage.input_tokens is None
    assert streamed_without_usage.output_tokens is None
    assert streamed_without_usage.cost_usd is None

    # Content: measured where it arrived, never stored.
    _assert_no_content_stored(spans)
    for span in (plain, streamed, streamed_without_usage):
        if expected.delivers_content:
            assert span.prompt_chars == len(SYSTEM_PROMPT) + len(PROMPT)
            assert span.completion_chars == len(COMPLETION_TEXT)
            assert span.prompt_hash
        else:
            assert (span.prompt_chars, span.completion_chars, span.prompt_hash) == (None, None, None)
    assert root.prompt_chars is None

    # Through the one query layer: the three calls are the root's tenant's and feature's, and
    # their cost is the two priced calls' (the one without usage is unknown, not 0).
    (row,) = calls_by_tenant_and_feature(spans, ("requests", "cost_usd", "cost_unknown_requests"))
    assert (row["tenant"], row["feature"], row["requests"]) == (TENANT, FEATURE, 3)
    assert row["cost_unknown_requests"] == 1
    assert plain.cost_usd is not None and streamed.cost_usd is not None
    assert abs(row["cost_usd"] - (plain.cost_usd + streamed.cost_usd)) < Decimal("1e-9")


@pytest.mark.django_db(transaction=True)
def test_rate_limited_call_arrives_as_an_error_without_tokens_or_cost(
    instrumentation: Instrumentation,
    tracer_provider: TracerProvider,
    client: openai.OpenAI,
    openai_server: OpenAITestServer,
) -> None:
    openai_server.fail_next(429, retry_after=7)
    with request_root(tracer_provider), pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    flush(tracer_provider)
    assert len(openai_server.requests) == 1  # max_retries=0: the SDK did not retry

    llm = Span.objects.get(is_llm=True)
    assert llm.status_code == STATUS_ERROR
    # openai-v2 and OpenLLMetry send error.type; OpenInference a status description and the
    # exception as a span event, whose exception.type becomes the error type.
    assert llm.error_type == instrumentation.error_type
    assert (llm.input_tokens, llm.output_tokens, llm.cost_usd) == (None, None, None)
    assert (llm.provider, llm.request_model) == ("openai", instrumentation.error_request_model)
    _assert_no_content_stored(list(Span.objects.all()))
