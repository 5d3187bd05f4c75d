"""The soak's traffic: good OTLP batches made with the real OpenTelemetry SDK and encoders, and
the bad tenth drawn from the hostile catalogue (tests/hostile) plus the refusals that need a
server's own state (keys, size caps).

Good traffic looks like instrumented applications: a server root span carrying tenant and
feature, a database span, one or two LLM client calls (a failed call is retried), a vLLM
`llm_request` server span beneath a call to the self-hosted tier (exported by vLLM itself,
joined through the trace context), and now and then the anthropic SDK's own span nested in
OpenLLMetry's for the same call (one call seen twice). Each batch records the (trace id, span
id) keys it carries and how many LLM calls (docs/metrics.md: counted once) it holds, so the
soak can check what the receiver acknowledged against what was stored and rolled up.

Importing this module needs Django set up (the hostile catalogue imports the models).
"""

from __future__ import annotations

import functools
import gzip
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_json
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_protobuf
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.hostile import test_receiver_hostile as catalogue
from tests.otlp_helpers import make_traces, protobuf_body

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

TENANTS = [f"tenant-{i:02d}" for i in range(8)]
TENANT_WEIGHTS = [1 / (i + 1) for i in range(len(TENANTS))]
# feature -> the service that serves it
FEATURES = {"support-chat": "support-api", "summarize": "docs-api", "search-rerank": "search-api",
            "agent": "agent-worker"}  # fmt: skip
# (provider, request model, response model, median ms, weight)
HOSTED_MODELS = [
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 700.0, 30),
    ("openai", "gpt-4.1", "gpt-4.1-2025-04-14", 1400.0, 10),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", 1800.0, 15),
    ("anthropic", "claude-haiku-4-5", "claude-haiku-4-5-20251001", 600.0, 10),
]
VLLM_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
OPENAI_V2 = "opentelemetry.instrumentation.openai_v2"
OPENLLMETRY = "opentelemetry.instrumentation.anthropic"
ANTHROPIC_SDK = "com.anthropic.sdk.python"

Key = tuple[str, int]  # (trace id hex, signed span id), as telemetry_span stores them


def span_key(span: ReadableSpan) -> Key:
    context = span.get_span_context()
    assert context is not None  # finished SDK spans always have one
    return f"{context.trace_id:032x}", int.from_bytes(context.span_id.to_bytes(8, "big"), "big", signed=True)


@dataclass
class Request:
    """One POST /v1/traces: what to send and what the soak expects back."""

    kind: str  # "good", "retry" (a good body sent again) or the hostile case's name
    body: bytes
    content_type: str | None = PROTOBUF
    headers: dict[str, str] = field(default_factory=dict)
    content_length: str | None = None
    key: str | None = None  # the ingest key to present; None: none at all
    # good and retry: every span key in the body, and the LLM calls among them
    keys: list[Key] = field(default_factory=list)
    calls: int = 0
    # hostile: the catalogue's expected answer
    status: int = 200
    rejected: int = 0
    stored: int = 0


class GoodTraffic:
    """One client's applications: a tracer provider per service (each its own resource, as
    separate processes would be), spans collected in memory and encoded per batch."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.exporter = InMemorySpanExporter()
        self.providers: dict[str, TracerProvider] = {}
        for service in [*set(FEATURES.values()), "vllm-serving"]:
            provider = TracerProvider(resource=Resource.create({"service.name": service, "host.name": f"soak-{seed}"}))
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
            self.providers[service] = provider

    def batch(self, traces: int, key: str) -> Request:
        """`traces` traces that ended in the last few minutes, encoded like an exporter would:
        protobuf mostly, some gzip-compressed, some OTLP/JSON."""
        self.exporter.clear()
        calls = sum(self._trace() for _ in range(traces))
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        keys = [span_key(span) for span in spans]
        roll = self.rng.random()
        if roll < 0.1:
            body = encode_json(spans).to_json().encode()
            return Request("good", body, JSON, key=key, keys=keys, calls=calls)
        body = encode_protobuf(spans).SerializeToString()
        if roll < 0.35:
            return Request("good", gzip.compress(body, 6), PROTOBUF, {"Content-Encoding": "gzip"}, key=key,
                           keys=keys, calls=calls)  # fmt: skip
        return Request("good", body, PROTOBUF, key=key, keys=keys, calls=calls)

    def _trace(self) -> int:
        """One trace; returns the LLM calls in it."""
        rng = self.rng
        feature = rng.choice(list(FEATURES))
        service = FEATURES[feature]
        tracer = self.providers[service].get_tracer("app")
        # Exported once ended: started far enough back that a few slow calls and retries
        # still end before now (the query layer's ranges end at now).
        t0 = time.time_ns() - rng.randrange(120, 180) * 10**9
        attributes: dict[str, Any] = {"http.request.method": "POST", "user.id": f"u-{rng.randrange(50)}"}
        if rng.random() < 0.95:
            attributes["tenant.id"] = rng.choices(TENANTS, TENANT_WEIGHTS)[0]
        if rng.random() < 0.9:
            attributes["app.feature"] = feature  # else the service.name fallback
        root = tracer.start_span(f"POST /v1/{feature}", kind=SpanKind.SERVER, start_time=t0, attributes=attributes)
        cursor = t0 + 1_000_000
        calls = 0
        failed = False
        with trace.use_span(root, end_on_exit=False):
            db = tracer.start_span("SELECT documents", kind=SpanKind.CLIENT, start_time=cursor,
                                   attributes={"db.system.name": "postgresql"})  # fmt: skip
            cursor += int(rng.lognormvariate(15, 0.5))
            db.end(end_time=cursor)
            for _ in range(1 if rng.random() < 0.75 else 2):
                attempt = 0
                while True:
                    cursor, error = self._call(service, cursor, attempt)
                    calls += 1
                    if error and attempt < 2 and rng.random() < 0.8:
                        attempt += 1
                        continue
                    failed = failed or error
                    break
        root.set_status(Status(StatusCode.ERROR if failed else StatusCode.OK))
        root.end(end_time=cursor + 1_000_000)
        return calls

    def _call(self, service: str, start: int, attempt: int) -> tuple[int, bool]:
        """One LLM client call and what lies beneath it; returns its end and whether it failed."""
        rng = self.rng
        error = rng.random() < 0.03
        streaming = rng.random() < 0.5
        vllm = rng.random() < 0.15
        if vllm:
            provider, request_model, response_model, median_ms = "openai", VLLM_MODEL, VLLM_MODEL, 500.0
        else:
            provider, request_model, response_model, median_ms, _ = rng.choices(
                HOSTED_MODELS, [m[4] for m in HOSTED_MODELS]
            )[0]
        duration = int(rng.lognormvariate(0, 0.6) * median_ms * 1_000_000)
        if error:
            duration = duration // 4
        prompt = int(rng.lognormvariate(7, 0.8)) + 1
        completion = 0 if error else int(rng.lognormvariate(5, 0.7)) + 1
        attributes: dict[str, Any] = {
            "gen_ai.provider.name": provider,
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": request_model,
            "gen_ai.usage.input_tokens": prompt,
            "gen_ai.usage.output_tokens": completion,
            "gen_ai.response.id": f"resp-{rng.getrandbits(64):x}",
        }
        if rng.random() < 0.4:
            attributes["gen_ai.usage.cache_read.input_tokens"] = int(prompt * rng.uniform(0.3, 0.9))
        if error:
            attributes["error.type"] = rng.choice(["429", "timeout", "APIConnectionError"])
        else:
            attributes["gen_ai.response.model"] = response_model
            attributes["gen_ai.response.finish_reasons"] = ["stop"]
        if streaming and not error:
            attributes["gen_ai.response.time_to_first_chunk"] = duration / 1e9 * rng.uniform(0.1, 0.4)
        if attempt:
            attributes["observatory.retry.attempt"] = attempt
        twice = provider == "anthropic" and rng.random() < 0.1
        tracer = self.providers[service].get_tracer(OPENLLMETRY if provider == "anthropic" else OPENAI_V2)
        span = tracer.start_span(f"chat {request_model}", kind=SpanKind.CLIENT, start_time=start, attributes=attributes)
        if error:
            span.set_status(Status(StatusCode.ERROR, "provider call failed"))
        with trace.use_span(span, end_on_exit=False):
            if vllm and not error:
                self._vllm_server_span(start + 1_000_000, duration - 2_000_000, prompt, completion)
            elif twice:
                # The anthropic SDK's own span inside OpenLLMetry's: the same call, counted once.
                sdk = self.providers[service].get_tracer(ANTHROPIC_SDK)
                inner = sdk.start_span("anthropic.messages.create", kind=SpanKind.CLIENT, start_time=start + 200_000,
                                       attributes=attributes)  # fmt: skip
                inner.end(end_time=start + duration - 200_000)
        span.end(end_time=start + duration)
        return start + duration + 1_000_000, error

    def _vllm_server_span(self, start: int, duration: int, prompt: int, completion: int) -> None:
        rng = self.rng
        queue_s = rng.lognormvariate(-4, 1.0)
        tracer = self.providers["vllm-serving"].get_tracer("vllm.tracing")
        server = tracer.start_span("llm_request", kind=SpanKind.SERVER, start_time=start, attributes={
            "gen_ai.usage.prompt_tokens": prompt, "gen_ai.usage.completion_tokens": completion,
            "gen_ai.request.id": f"cmpl-{rng.getrandbits(48):x}", "gen_ai.latency.time_in_queue": queue_s,
            "gen_ai.latency.time_to_first_token": queue_s + duration / 1e9 * 0.1,
            "gen_ai.latency.e2e": duration / 1e9, "gen_ai.response.finish_reasons": '["stop"]',
        })  # fmt: skip
        server.end(end_time=start + max(duration, 1_000_000))


@dataclass(frozen=True)
class Keys:
    good: str  # the good traffic's project
    hostile: str  # the hostile requests' project: what they store is counted apart
    revoked: str


CLEF = "\U0001d11e"  # four bytes of UTF-8


def _from_catalogue(make: Callable[[], catalogue.Hostile], key: str) -> Request:
    """A catalogue case built afresh (new ids), sent with the hostile project's key."""
    case = make()
    return Request(make.__name__, case.body, case.content_type, dict(case.headers), case.content_length, key,
                   status=case.status, rejected=case.rejected, stored=case.stored)  # fmt: skip


class BadTraffic:
    """The hostile catalogue's cases (tests/hostile/test_receiver_hostile.py CASES), each
    built afresh per request (new ids), plus refusals that depend on keys and caps, and
    values too big to be keys that must be capped (issue 9 item 1: they used to stop every
    rollup)."""

    def __init__(self, seed: int, keys: Keys, max_body_bytes: int, max_decompressed_bytes: int) -> None:
        self.rng = random.Random(seed)
        self.keys = keys
        # Built once: 8 MB of body and a 32 MB bomb cost seconds to make, nothing to resend.
        self.oversize = b"\0" * (max_body_bytes + 1)
        self.bomb = gzip.compress(b"\0" * (max_decompressed_bytes + 1024 * 1024), compresslevel=9)
        extra: dict[str, Callable[[], Request]] = {
            "no_key": lambda: Request("no_key", protobuf_body(make_traces(1)), key=None, status=401),
            "wrong_key": lambda: Request("wrong_key", protobuf_body(make_traces(1)), key="obs_not_a_key", status=401),
            "revoked_key": lambda: Request("revoked_key", protobuf_body(make_traces(1)), key=keys.revoked, status=401),
            "body_over_the_cap": lambda: Request("body_over_the_cap", self.oversize, key=keys.hostile, status=413),
            "gzip_bomb": lambda: Request(
                "gzip_bomb", self.bomb, headers={"Content-Encoding": "gzip"}, key=keys.hostile, status=413
            ),
            "tenant_of_4_byte_characters": lambda: self._capped(
                "tenant_of_4_byte_characters", tenant=CLEF * 1024, feature="f"
            ),
            "service_of_3000_characters": lambda: self._capped("service_of_3000_characters", service="s" * 3000),
            "tenant_and_feature_of_1024": lambda: self._capped(
                "tenant_and_feature_of_1024", tenant="t" * 1024, feature="f" * 1024
            ),
            "gzip_of_two_members": self._two_members,
        }
        self.cases: list[tuple[str, Callable[[], Request]]] = [
            (case.__name__, functools.partial(_from_catalogue, case, keys.hostile)) for case in catalogue.CASES
        ]
        self.cases.extend(extra.items())

    def _capped(self, name: str, **kwargs: Any) -> Request:
        return Request(name, protobuf_body(make_traces(2, **kwargs)), key=self.keys.hostile, status=200, stored=4)

    def _two_members(self) -> Request:
        whole = protobuf_body(make_traces(2))
        body = gzip.compress(whole[: len(whole) // 2]) + gzip.compress(whole[len(whole) // 2 :])
        return Request("gzip_of_two_members", body, headers={"Content-Encoding": "gzip"}, key=self.keys.hostile,
                       status=200, stored=4)  # fmt: skip

    def request(self) -> Request:
        _, make = self.rng.choice(self.cases)
        return make()
