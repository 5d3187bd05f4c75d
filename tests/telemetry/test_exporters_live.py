"""The real OpenTelemetry SDK exporters (protobuf and JSON over HTTP) against a live server."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as JsonSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as ProtobufSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from apps.accounts.models import IngestKey, Project
from apps.telemetry.models import Span
from tests.otlp_helpers import LLM_ATTRIBUTES


def _send(exporter: object, traces: int) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout-api", "tenant.id": "globex"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64))  # type: ignore[arg-type]
    tracer = provider.get_tracer("live-test")
    for _ in range(traces):
        with (
            tracer.start_as_current_span("handle", kind=SpanKind.SERVER, attributes={"app.feature": "summarize"}),
            tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=LLM_ATTRIBUTES),
        ):
            pass
    assert provider.force_flush(30_000)
    provider.shutdown()
    trace.get_tracer_provider()  # the global provider is untouched


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("protocol", ["protobuf", "protobuf+gzip", "json"])
def test_real_exporter_to_live_server(live_server: object, price_catalog: None, protocol: str) -> None:
    _, key = IngestKey.issue(Project.objects.create(name="live"), "k")
    endpoint = f"{live_server.url}/v1/traces"  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {key}"}
    if protocol == "json":
        exporter = JsonSpanExporter(endpoint=endpoint, headers=headers, timeout=10)
    else:
        compression = Compression.Gzip if protocol.endswith("gzip") else Compression.NoCompression
        exporter = ProtobufSpanExporter(endpoint=endpoint, headers=headers, timeout=10, compression=compression)
    _send(exporter, traces=150)
    assert Span.objects.count() == 300
    llm = Span.objects.filter(is_llm=True)
    assert llm.count() == 150
    # The tenant sits on the resource, the feature on the root span.
    assert set(Span.objects.values_list("tenant", flat=True)) == {"globex"}
    assert set(Span.objects.filter(is_llm=False).values_list("feature", flat=True)) == {"summarize"}
    assert all(span.cost_usd and span.cost_usd > 0 for span in llm)
