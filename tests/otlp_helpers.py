"""Build OTLP payloads with the real OpenTelemetry SDK and its real encoders."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_json
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_protobuf
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

LLM_ATTRIBUTES: dict[str, Any] = {
    "gen_ai.provider.name": "openai",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.cache_read.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 300,
    "gen_ai.response.finish_reasons": ["stop"],
}


def make_traces(
    count: int,
    *,
    tenant: str = "acme",
    feature: str = "support-chat",
    start_ns: int | None = None,
    llm_attributes: dict[str, Any] | None = None,
    service: str = "support-api",
) -> list[ReadableSpan]:
    """`count` traces of a root span (tenant, feature) with one LLM client span each."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    base = start_ns or time.time_ns() - 60 * 10**9
    for index in range(count):
        t0 = base + index * 1_000_000
        root = tracer.start_span("POST /chat", kind=SpanKind.SERVER, start_time=t0,
                                 attributes={"tenant.id": tenant, "app.feature": feature})  # fmt: skip
        from opentelemetry import trace

        with trace.use_span(root, end_on_exit=False):
            llm = tracer.start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, start_time=t0 + 1_000,
                                    attributes=llm_attributes or LLM_ATTRIBUTES)  # fmt: skip
            llm.end(end_time=t0 + 800_000_000)
        root.set_status(Status(StatusCode.OK))
        root.end(end_time=t0 + 900_000_000)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def protobuf_body(spans: Sequence[ReadableSpan]) -> bytes:
    return encode_protobuf(spans).SerializeToString()


def json_body(spans: Sequence[ReadableSpan]) -> bytes:
    return encode_json(spans).to_json().encode()
