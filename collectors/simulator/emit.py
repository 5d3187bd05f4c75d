"""Turn request plans into spans with the real OpenTelemetry SDK.

Each application service and the vLLM serving tier get their own TracerProvider (their own
resource, as separate processes would have), all feeding one BatchSpanProcessor. Spans carry
explicit start and end times, so a backfill of last week looks like last week. The vLLM server
span joins its caller's trace the way a real HTTP hop does: the client span's context is
injected into a header carrier with the W3C propagator and extracted on the "server" side.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from collectors.simulator.catalog import (
    GENAI_LEGACY,
    OPENINFERENCE,
    SERVICES,
    VLLM_INSTANCES,
    VLLM_SERVICE,
    VLLM_VERSION,
)
from collectors.simulator.plan import AppStep, CallPlan, RequestPlan
from collectors.simulator.traffic import NS_PER_S

ENVIRONMENT = "demo"
APP_SCOPE_VERSION = "0.1.0"
Attributes = dict[str, AttributeValue]
SERVER_SCOPE = "opentelemetry.instrumentation.fastapi"
OPENINFERENCE_SCOPE = "openinference.instrumentation.openai"
# vLLM's tracer is initialised under this name (vllm/tracing.py: init_tracer).
VLLM_SCOPE = "vllm.llm_engine"

# Canned, harmless prompts for the few calls that capture content: Observatory must keep only
# their length and hash, so something has to be there to strip.
_SAMPLE_PROMPTS = (
    "Where is my order #{n}? It was due on Monday.",
    "Summarise the attached meeting notes in five bullet points.",
    "Extract the invoice number, total and due date as JSON.",
    "Why does my export fail with error E{n}?",
)


class SeededIdGenerator(IdGenerator):
    """Trace and span ids from a Random the emitter reseeds per request: same seed, same ids."""

    def __init__(self) -> None:
        self._rng = random.Random(0)

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        while not (span_id := self._rng.getrandbits(64)):
            pass
        return span_id

    def generate_trace_id(self) -> int:
        while not (trace_id := self._rng.getrandbits(128)):
            pass
        return trace_id


@dataclass(slots=True)
class TraceCounts:
    """What one request emitted, for the run's summary."""

    spans: int = 0
    llm_spans: int = 0  # spans carrying model usage: client calls and vLLM server spans
    vllm_server_spans: int = 0
    error_spans: int = 0


class SpanEmitter:
    def __init__(self, processor: SpanProcessor) -> None:
        self._ids = SeededIdGenerator()
        self._propagator = TraceContextTextMapPropagator()
        self._providers: list[TracerProvider] = []
        self._app_tracers: dict[tuple[str, str], trace.Tracer] = {}
        self._app_providers: dict[str, TracerProvider] = {}
        for service in SERVICES.values():
            resource = Resource.create(
                {
                    "service.name": service.name,
                    "service.version": service.version,
                    "service.instance.id": f"{service.name}-0",
                    "deployment.environment.name": ENVIRONMENT,
                }
            )
            self._app_providers[service.name] = self._provider(resource, processor)
        self._vllm_tracers: dict[str, trace.Tracer] = {}
        for instance, _ in VLLM_INSTANCES:
            resource = Resource.create(
                {
                    "service.name": VLLM_SERVICE,
                    "service.version": VLLM_VERSION,
                    "service.instance.id": instance,
                    "deployment.environment.name": ENVIRONMENT,
                }
            )
            self._vllm_tracers[instance] = self._provider(resource, processor).get_tracer(VLLM_SCOPE, VLLM_VERSION)

    def _provider(self, resource: Resource, processor: SpanProcessor) -> TracerProvider:
        # shutdown_on_exit=False: the runner owns the processor's lifecycle and flushes it once.
        provider = TracerProvider(resource=resource, id_generator=self._ids, shutdown_on_exit=False)
        provider.add_span_processor(processor)
        self._providers.append(provider)
        return provider

    def _tracer(self, service: str, scope: str) -> trace.Tracer:
        key = (service, scope)
        if key not in self._app_tracers:
            self._app_tracers[key] = self._app_providers[service].get_tracer(scope, APP_SCOPE_VERSION)
        return self._app_tracers[key]

    def emit(self, req: RequestPlan) -> TraceCounts:
        self._ids.reseed(req.id_seed)
        counts = TraceCounts()
        feature = req.feature
        service = feature.service
        root_attrs: Attributes = {
            "tenant.id": req.tenant.name,
            "app.feature": feature.name,
            "user.id": req.user_id,
            "session.id": req.session_id,
        }
        if feature.root_is_server:
            root_tracer = self._tracer(service, SERVER_SCOPE)
            root_attrs |= {"http.request.method": "POST", "http.route": feature.http_route or "/"}
            root_attrs["http.response.status_code"] = req.http_status
        else:
            root_tracer = self._tracer(service, f"{service.replace('-', '_')}.jobs")
        root = root_tracer.start_span(
            feature.root_name,
            kind=SpanKind.SERVER if feature.root_is_server else SpanKind.INTERNAL,
            attributes=root_attrs,
            start_time=req.start_ns,
        )
        ctx = trace.set_span_in_context(root)
        for step in req.steps:
            if isinstance(step, AppStep):
                self._emit_app_step(req, step, ctx)
                counts.spans += 1
            else:
                self._emit_call(req, step, ctx, counts)
        if req.error_type is not None:
            root.set_attribute("error.type", req.error_type)
            root.set_status(Status(StatusCode.ERROR, req.error_message))
            counts.error_spans += 1
        root.end(end_time=req.end_ns)
        counts.spans += 1
        return counts

    def _emit_app_step(self, req: RequestPlan, step: AppStep, ctx: Context) -> None:
        span = self._tracer(req.feature.service, f"{req.feature.service.replace('-', '_')}.app").start_span(
            step.name,
            context=ctx,
            kind=SpanKind.INTERNAL,
            attributes=step.attributes,
            start_time=_at(req, step.offset_s),
        )
        span.end(end_time=_at(req, step.offset_s + step.duration_s))

    def _emit_call(self, req: RequestPlan, call: CallPlan, ctx: Context, counts: TraceCounts) -> None:
        start_ns = _at(req, call.offset_s)
        end_ns = _at(req, call.offset_s + call.duration_s)
        # Self-hosted calls are traced by the app's own client instrumentation in current
        # GenAI terms whatever the service uses for hosted calls.
        convention = "genai" if call.provider.self_hosted else call.convention
        if convention == OPENINFERENCE:
            name, kind, scope = "ChatCompletion", SpanKind.INTERNAL, OPENINFERENCE_SCOPE
            attrs = _openinference_attributes(call)
        else:
            name, kind, scope = f"chat {call.model.name}", SpanKind.CLIENT, call.provider.instrumentation_scope
            attrs = _legacy_attributes(call) if convention == GENAI_LEGACY else _genai_attributes(req, call)
        if call.resend_count:
            attrs["http.request.resend_count"] = call.resend_count
        if call.validation_attempt:
            attrs["observatory.retry.attempt"] = call.validation_attempt
        span = self._tracer(req.feature.service, scope).start_span(
            name, context=ctx, kind=kind, attributes=attrs, start_time=start_ns
        )
        counts.spans += 1
        if call.failed:
            counts.error_spans += 1
            span.set_attribute("error.type", call.error_type or "")
            span.add_event(
                "exception",
                {"exception.type": call.error_type or "", "exception.message": call.error_message},
                timestamp=end_ns,
            )
            span.set_status(Status(StatusCode.ERROR, call.error_message))
        else:
            counts.llm_spans += 1
        if call.vllm is not None:
            self._emit_vllm_server(call, span, start_ns, counts)
        span.end(end_time=end_ns)

    def _emit_vllm_server(self, call: CallPlan, client: Span, client_start_ns: int, counts: TraceCounts) -> None:
        vllm = call.vllm
        assert vllm is not None
        # The HTTP hop: traceparent goes into the request headers and comes out in vLLM.
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(client))
        parent = self._propagator.extract(carrier)
        arrival_ns = vllm_arrival_ns(client_start_ns)
        e2e_s = vllm.queue_s + vllm.prefill_s + vllm.decode_s
        attrs: Attributes = {
            "gen_ai.latency.time_in_queue": vllm.queue_s,
            "gen_ai.latency.e2e": e2e_s,
            "gen_ai.usage.prompt_tokens": call.input_tokens,
            "gen_ai.usage.completion_tokens": call.output_tokens,
            "gen_ai.request.id": call.response_id,
            "gen_ai.response.finish_reasons": json.dumps(["abort" if vllm.aborted else call.finish_reason]),
            "gen_ai.request.max_tokens": call.max_tokens,
            "gen_ai.request.n": 1,
        }
        # vLLM sets these only when the request had the stage (an abort in the queue had none).
        if not vllm.aborted:
            attrs |= {
                "gen_ai.latency.time_to_first_token": vllm.queue_s + vllm.prefill_s,
                "gen_ai.latency.time_in_model_prefill": vllm.prefill_s,
                "gen_ai.latency.time_in_model_decode": vllm.decode_s,
                "gen_ai.latency.time_in_model_inference": vllm.prefill_s + vllm.decode_s,
            }
        if call.temperature:  # vLLM skips falsy sampling parameters
            attrs["gen_ai.request.temperature"] = call.temperature
        if vllm.sets_response_model:
            attrs["gen_ai.response.model"] = call.response_model
        span = self._vllm_tracers[vllm.instance].start_span(
            "llm_request", context=parent, kind=SpanKind.SERVER, attributes=attrs, start_time=arrival_ns
        )
        counts.spans += 1
        counts.vllm_server_spans += 1
        if vllm.aborted:
            span.set_status(Status(StatusCode.ERROR, "request aborted"))
            counts.error_spans += 1
        else:
            counts.llm_spans += 1
        span.end(end_time=arrival_ns + int(e2e_s * NS_PER_S))


def _genai_attributes(req: RequestPlan, call: CallPlan) -> Attributes:
    attrs: Attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": call.provider.name,
        "gen_ai.request.model": call.model.name,
        "gen_ai.request.max_tokens": call.max_tokens,
        "gen_ai.request.temperature": call.temperature,
        "server.address": call.provider.server_address,
        "server.port": call.provider.server_port,
    }
    if call.stream:
        attrs["gen_ai.request.stream"] = True
    if req.feature.conversational:
        attrs["gen_ai.conversation.id"] = req.session_id
    if call.capture_content:
        attrs["gen_ai.input.messages"] = _sample_messages(req)
    if call.failed:
        return attrs
    attrs |= {
        "gen_ai.response.model": call.response_model,
        "gen_ai.response.id": call.response_id,
        "gen_ai.response.finish_reasons": [call.finish_reason],
        "gen_ai.usage.input_tokens": call.input_tokens,
        "gen_ai.usage.output_tokens": call.output_tokens,
    }
    provider = call.provider.name
    if provider == "anthropic":
        # The Anthropic API always reports both cache counters, zero or not.
        attrs["gen_ai.usage.cache_read.input_tokens"] = call.cache_read_tokens
        attrs["gen_ai.usage.cache_creation.input_tokens"] = call.cache_write_tokens
    elif call.cache_read_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = call.cache_read_tokens
    if call.model.reasoning:
        attrs["gen_ai.usage.reasoning.output_tokens"] = call.reasoning_tokens
    if call.ttft_s is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = round(call.ttft_s, 6)
    if call.system_fingerprint:
        attrs["openai.response.system_fingerprint"] = call.system_fingerprint
    if call.service_tier:
        attrs["openai.response.service_tier"] = call.service_tier
    return attrs


def _legacy_attributes(call: CallPlan) -> Attributes:
    """openai-v2 in its default (pre-opt-in) mode: deprecated names, no cache or reasoning counts."""
    attrs: Attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": call.provider.name,
        "gen_ai.request.model": call.model.name,
        "gen_ai.request.max_tokens": call.max_tokens,
        "gen_ai.request.temperature": call.temperature,
        "server.address": call.provider.server_address,
        "server.port": call.provider.server_port,
    }
    if call.failed:
        return attrs
    attrs |= {
        "gen_ai.response.model": call.response_model,
        "gen_ai.response.id": call.response_id,
        "gen_ai.response.finish_reasons": [call.finish_reason],
        "gen_ai.usage.prompt_tokens": call.input_tokens,
        "gen_ai.usage.completion_tokens": call.output_tokens,
    }
    if call.system_fingerprint:
        attrs["gen_ai.openai.response.system_fingerprint"] = call.system_fingerprint
    if call.service_tier:
        attrs["gen_ai.openai.response.service_tier"] = call.service_tier
    return attrs


def _openinference_attributes(call: CallPlan) -> Attributes:
    """OpenInference's OpenAI instrumentation: llm.* keys, model_name = the responded model."""
    attrs: Attributes = {
        "openinference.span.kind": "LLM",
        "llm.system": call.provider.name,
        "llm.provider": call.provider.name,
        "llm.invocation_parameters": json.dumps(
            {"model": call.model.name, "max_tokens": call.max_tokens, "temperature": call.temperature}
        ),
    }
    if call.failed:
        attrs["llm.model_name"] = call.model.name
        return attrs
    attrs |= {
        "llm.model_name": call.response_model,
        "llm.token_count.prompt": call.input_tokens,
        "llm.token_count.completion": call.output_tokens,
        "llm.token_count.total": call.input_tokens + call.output_tokens,
    }
    if call.cache_read_tokens:
        attrs["llm.token_count.prompt_details.cache_read"] = call.cache_read_tokens
    if call.model.reasoning:
        attrs["llm.token_count.completion_details.reasoning"] = call.reasoning_tokens
    return attrs


def _sample_messages(req: RequestPlan) -> str:
    n = zlib.crc32(req.key.encode()) % 9000 + 1000
    prompt = _SAMPLE_PROMPTS[n % len(_SAMPLE_PROMPTS)].format(n=n)
    return json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompt}]}])


def vllm_arrival_ns(client_start_ns: int) -> int:
    """When a self-hosted call reaches vLLM: ~2 ms on the wire inside the cluster."""
    return client_start_ns + 2_000_000


def call_start_ns(req: RequestPlan, call: CallPlan) -> int:
    return _at(req, call.offset_s)


def _at(req: RequestPlan, offset_s: float) -> int:
    return req.start_ns + int(offset_s * NS_PER_S)
