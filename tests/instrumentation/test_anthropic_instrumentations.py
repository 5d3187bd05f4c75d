"""The real Anthropic instrumentations, around the real `anthropic` client, end to end.

anthropic client -> the test server's Messages API (tests/support/openai_server.py: plain
JSON, or SSE message_start / content_block_delta / message_delta / message_stop) -> the
instrumentation's spans -> the real OTLP/protobuf exporter -> the live receiver ->
PostgreSQL. Two packages make spans for these calls:

- the `anthropic` SDK itself (2.x), whenever it is given a tracer provider: span
  `anthropic.messages.create`, scope `com.anthropic.sdk.python`;
- OpenLLMetry's `opentelemetry-instrumentation-anthropic`: span `anthropic.chat`.

With both, one provider call leaves two sibling LLM spans with the same response id.

The server's usage for every call: input 200 EXCLUDING cache, cache read 1000, cache
creation 50, output 300. Both packages add the cache back (input 1250).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import anthropic
import pytest
from anthropic.types import MessageParam
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
from tests.support.openai_server import COMPLETION_TEXT, OpenAITestServer

SYSTEM_PROMPT = "You are a terse support assistant."
PROMPT = "Summarise ticket 4711: the llama enclosure gate sticks whenever it rains."
MESSAGES: list[MessageParam] = [{"role": "user", "content": PROMPT}]
MODEL = "claude-sonnet-4-5"
SNAPSHOT = "claude-sonnet-4-5-20250929"
SDK_SCOPE = "com.anthropic.sdk.python"
OPENLLMETRY_SCOPE = "opentelemetry.instrumentation.anthropic"
# The server's usage, normalised: input includes the cache read and write.
INPUT, CACHE_READ, CACHE_WRITE, OUTPUT = 1250, 1000, 50, 300


@dataclass(frozen=True)
class Wiring:
    sdk_spans: bool  # the SDK is given the tracer provider (else its own spans are off)
    openllmetry: bool  # OpenLLMetry's instrumentor is on


@dataclass(frozen=True)
class Package:
    """What one package delivers for a plain and a streamed Messages call."""

    wiring: Wiring
    span_name: str
    scope_name: str
    finish_reasons: list[str]
    service_tier: str | None
    # OpenLLMetry adds message_start's output count (1) to message_delta's, which already
    # includes it: the streamed span says 301 where the API says 300.
    streamed_output_tokens: int
    # The SDK sets gen_ai.response.time_to_first_chunk; OpenLLMetry's anthropic package records
    # it only as a metric (no attribute, no event), so its spans have none.
    streamed_ttft: bool
    delivers_content: bool
    # A rate-limited call's: the SDK takes the API's own error type from the body,
    # OpenLLMetry the exception's class name.
    error_type: str


SDK = Package(
    wiring=Wiring(sdk_spans=True, openllmetry=False),
    span_name="anthropic.messages.create",
    scope_name=SDK_SCOPE,
    finish_reasons=["end_turn"],  # anthropic.message.stop_reason, Anthropic's own word
    service_tier="standard",  # anthropic.response.service_tier
    streamed_output_tokens=OUTPUT,
    streamed_ttft=True,
    delivers_content=False,  # content_mode defaults to metadata_only
    error_type="rate_limit_error",
)
OPENLLMETRY = Package(
    wiring=Wiring(sdk_spans=False, openllmetry=True),
    span_name="anthropic.chat",
    scope_name=OPENLLMETRY_SCOPE,
    finish_reasons=["stop"],  # gen_ai.response.finish_reasons, end_turn mapped to "stop"
    service_tier=None,
    streamed_output_tokens=OUTPUT + 1,
    streamed_ttft=False,
    delivers_content=True,  # gen_ai.input.messages / gen_ai.output.messages
    error_type="RateLimitError",
)


# What real applications run: the SDK's own spans (on whenever a tracer provider is set)
# and OpenLLMetry's instrumentor, side by side.
BOTH = Wiring(sdk_spans=True, openllmetry=True)


@contextmanager
def _client(
    wiring: Wiring, provider: TracerProvider, server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[anthropic.Anthropic]:
    instrumentor: BaseInstrumentor | None = None
    # OpenLLMetry patches the anthropic module itself: leave it clean for the next test.
    with methods_restored("anthropic"):
        if wiring.openllmetry:
            from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

            # Its default, spelt out: prompts and completions on the span (measured, then dropped).
            monkeypatch.setenv("TRACELOOP_TRACE_CONTENT", "true")
            instrumentor = AnthropicInstrumentor()
            instrumentor.instrument(tracer_provider=provider)
        try:
            with anthropic.Anthropic(
                base_url=server.root_url,
                api_key="test",
                max_retries=0,
                # The SDK traces through the global provider unless told otherwise: off, or ours.
                open_telemetry={"tracer_provider": provider} if wiring.sdk_spans else {"traces": False},
            ) as client:
                yield client
        finally:
            if instrumentor is not None:
                instrumentor.uninstrument()


def _plain_call(client: anthropic.Anthropic) -> None:
    reply = client.messages.create(model=MODEL, max_tokens=1024, system=SYSTEM_PROMPT, messages=MESSAGES)
    assert (reply.usage.input_tokens, reply.usage.cache_read_input_tokens) == (200, CACHE_READ)


def _streamed_call(client: anthropic.Anthropic) -> None:
    pieces = []
    stream = client.messages.create(model=MODEL, max_tokens=1024, system=SYSTEM_PROMPT, messages=MESSAGES, stream=True)
    with stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                pieces.append(event.delta.text)
    assert "".join(pieces) == COMPLETION_TEXT


def _cost_by_hand(price: Price, output_tokens: int) -> Decimal:
    """Each part at the catalog row's own rate: uncached input, cache read, cache write, output."""
    assert price.provider == "anthropic"
    assert price.cached_input_per_mtok is not None and price.cache_write_per_mtok is not None
    per_mtok = (
        (INPUT - CACHE_READ - CACHE_WRITE) * price.input_per_mtok
        + CACHE_READ * price.cached_input_per_mtok
        + CACHE_WRITE * price.cache_write_per_mtok
        + output_tokens * price.output_per_mtok
    )
    return per_mtok / 1_000_000


def _assert_no_content_stored(spans: list[Span]) -> None:
    for span in spans:
        stored = json.dumps([span.attributes, span.resource])
        for text in (PROMPT, SYSTEM_PROMPT, COMPLETION_TEXT):
            assert text not in stored, f"{span.name} stores content: {stored[:300]}"


def _tokens(span: Span) -> tuple[int | None, ...]:
    return (span.input_tokens, span.cache_read_tokens, span.cache_write_tokens, span.output_tokens)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "package", [pytest.param(SDK, id="anthropic-sdk"), pytest.param(OPENLLMETRY, id="openllmetry-anthropic")]
)
def test_messages_calls_arrive_with_tokens_cost_ttft_and_the_requests_tenant(
    package: Package,
    tracer_provider: TracerProvider,
    openai_server: OpenAITestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _client(package.wiring, tracer_provider, openai_server, monkeypatch) as client, request_root(tracer_provider):
        _plain_call(client)
        _streamed_call(client)
    flush(tracer_provider)
    assert [request.path for request in openai_server.requests] == ["/v1/messages", "/v1/messages"]

    spans = list(Span.objects.order_by("start_time"))
    root = next(span for span in spans if span.parent_span_id is None)
    plain, streamed = (span for span in spans if span.is_llm)
    assert len(spans) == 3

    # Attribution: neither package carries the tenant or feature; the application's root does.
    assert (root.tenant, root.feature, root.is_llm) == (TENANT, FEATURE, False)
    for span in (plain, streamed):
        assert (span.trace_id, span.parent_span_id) == (root.trace_id, root.span_id)
        assert (span.name, span.scope_name, span.service_name) == (package.span_name, package.scope_name, "support-api")
        assert (span.provider, span.operation) == ("anthropic", "chat")
        assert (span.request_model, span.response_model) == (MODEL, SNAPSHOT)
        assert span.reasoning_tokens is None
        assert span.finish_reasons == package.finish_reasons
        assert span.service_tier == package.service_tier
        assert span.error_type is None and span.status_code != 2
    assert (plain.response_id, streamed.response_id) == ("msg_observatory000001", "msg_observatory000002")

    # Tokens normalised once: input includes the cache read and write (200 + 1000 + 50).
    assert _tokens(plain) == (INPUT, CACHE_READ, CACHE_WRITE, OUTPUT)
    assert _tokens(streamed) == (INPUT, CACHE_READ, CACHE_WRITE, package.streamed_output_tokens)

    # Cost to 1e-9 USD, by hand from the catalog row's rates.
    assert plain.price_id is not None and plain.price_id == streamed.price_id
    price = Price.objects.get(pk=plain.price_id)
    assert plain.cost_usd is not None and abs(plain.cost_usd - _cost_by_hand(price, OUTPUT)) < Decimal("1e-9")
    streamed_cost = _cost_by_hand(price, package.streamed_output_tokens)
    assert streamed.cost_usd is not None and abs(streamed.cost_usd - streamed_cost) < Decimal("1e-9")

    # Streaming: flagged, and the time to first token lies inside the span where it is sent.
    assert (plain.is_streaming, streamed.is_streaming) == (None, True)
    assert plain.ttft_ms is None
    if package.streamed_ttft:
        assert streamed.ttft_ms is not None and 0 < streamed.ttft_ms <= streamed.duration_ms
    else:
        assert streamed.ttft_ms is None

    # Content: measured where it arrived, never stored.
    _assert_no_content_stored(spans)
    for span in (plain, streamed):
        if package.delivers_content:
            assert span.prompt_chars == len(SYSTEM_PROMPT) + len(PROMPT)
            assert span.completion_chars == len(COMPLETION_TEXT)
        else:
            assert (span.prompt_chars, span.completion_chars, span.prompt_hash) == (None, None, None)

    # Through the one query layer: both calls are the root's tenant's and feature's.
    (row,) = calls_by_tenant_and_feature(spans, ("requests", "cost_usd", "input_tokens", "cache_read_tokens"))
    assert (row["tenant"], row["feature"], row["requests"]) == (TENANT, FEATURE, 2)
    assert (row["input_tokens"], row["cache_read_tokens"]) == (2 * INPUT, 2 * CACHE_READ)
    assert abs(row["cost_usd"] - (_cost_by_hand(price, OUTPUT) + streamed_cost)) < Decimal("1e-9")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "package", [pytest.param(SDK, id="anthropic-sdk"), pytest.param(OPENLLMETRY, id="openllmetry-anthropic")]
)
def test_rate_limited_call_arrives_as_an_error_without_tokens_or_cost(
    package: Package,
    tracer_provider: TracerProvider,
    openai_server: OpenAITestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    openai_server.fail_next(429, retry_after=7)
    with (
        _client(package.wiring, tracer_provider, openai_server, monkeypatch) as client,
        request_root(tracer_provider),
        pytest.raises(anthropic.RateLimitError),
    ):
        _plain_call(client)
    flush(tracer_provider)
    assert len(openai_server.requests) == 1  # max_retries=0: the SDK did not retry

    llm = Span.objects.get(is_llm=True)
    assert (llm.status_code, llm.error_type) == (2, package.error_type)
    assert (llm.provider, llm.request_model, llm.response_model) == ("anthropic", MODEL, None)
    assert _tokens(llm) == (None, None, None, None)
    assert llm.cost_usd is None
    _assert_no_content_stored(list(Span.objects.all()))


@pytest.mark.django_db(transaction=True)
def test_sdk_and_openllmetry_together_store_two_sibling_spans_per_call(
    tracer_provider: TracerProvider, openai_server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _client(BOTH, tracer_provider, openai_server, monkeypatch) as client, request_root(tracer_provider):
        _plain_call(client)
        _streamed_call(client)
    flush(tracer_provider)
    assert len(openai_server.requests) == 2  # two provider calls ...

    spans = list(Span.objects.order_by("start_time"))
    root = next(span for span in spans if span.parent_span_id is None)
    llm_spans = [span for span in spans if span.is_llm]
    assert len(spans) == 5 and len(llm_spans) == 4  # ... four LLM spans

    by_response: dict[str | None, dict[str, Span]] = {}
    for span in llm_spans:
        by_response.setdefault(span.response_id, {})[span.scope_name or ""] = span
    assert set(by_response) == {"msg_observatory000001", "msg_observatory000002"}
    for pair in by_response.values():
        sdk, openllmetry = pair[SDK_SCOPE], pair[OPENLLMETRY_SCOPE]
        # Siblings, not nested: OpenLLMetry's span is not made current, so the SDK's span
        # is the root's child too. OpenLLMetry's wraps the SDK's call, so its span spans it.
        assert sdk.parent_span_id == openllmetry.parent_span_id == root.span_id
        assert sdk.trace_id == openllmetry.trace_id == root.trace_id
        assert openllmetry.start_time <= sdk.start_time and sdk.end_time <= openllmetry.end_time
        assert (sdk.request_model, sdk.response_model) == (openllmetry.request_model, openllmetry.response_model)
        assert sdk.cost_usd is not None and openllmetry.cost_usd is not None
        assert sdk.price_id == openllmetry.price_id

    plain, streamed = by_response["msg_observatory000001"], by_response["msg_observatory000002"]
    # The plain call: the same tokens and cost on both spans.
    assert _tokens(plain[SDK_SCOPE]) == _tokens(plain[OPENLLMETRY_SCOPE]) == (INPUT, CACHE_READ, CACHE_WRITE, OUTPUT)
    assert plain[SDK_SCOPE].cost_usd == plain[OPENLLMETRY_SCOPE].cost_usd
    # The streamed call: the SDK's span is the richer and the right one (the API's output
    # count, the time to first token, the service tier); OpenLLMetry's has only the sizes
    # of the content it captured.
    sdk, openllmetry = streamed[SDK_SCOPE], streamed[OPENLLMETRY_SCOPE]
    assert (sdk.output_tokens, openllmetry.output_tokens) == (OUTPUT, OUTPUT + 1)
    assert sdk.ttft_ms is not None and 0 < sdk.ttft_ms <= sdk.duration_ms
    assert openllmetry.ttft_ms is None
    assert (sdk.service_tier, openllmetry.service_tier) == ("standard", None)
    assert (sdk.prompt_chars, openllmetry.prompt_chars) == (None, len(SYSTEM_PROMPT) + len(PROMPT))
    _assert_no_content_stored(spans)


@pytest.mark.django_db(transaction=True)
def test_sdk_and_openllmetry_together_count_one_call(
    tracer_provider: TracerProvider, openai_server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _client(BOTH, tracer_provider, openai_server, monkeypatch) as client, request_root(tracer_provider):
        _plain_call(client)
    flush(tracer_provider)
    spans = list(Span.objects.all())
    llm_spans = [span for span in spans if span.is_llm]
    assert len(llm_spans) == 2 and len({span.response_id for span in llm_spans}) == 1
    assert llm_spans[0].price_id is not None
    price = Price.objects.get(pk=llm_spans[0].price_id)

    # One provider call: once in the requests and once in the cost, whichever span stands for it.
    (row,) = calls_by_tenant_and_feature(spans, ("requests", "cost_usd"))
    assert (row["tenant"], row["feature"], row["requests"]) == (TENANT, FEATURE, 1)
    assert abs(row["cost_usd"] - _cost_by_hand(price, OUTPUT)) < Decimal("1e-9")
