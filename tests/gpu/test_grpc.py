"""OTLP/gRPC: the real opentelemetry-exporter-otlp-proto-grpc exporters (traces and metrics)
against the live gRPC receiver on a free loopback port, and every status it answers."""

from __future__ import annotations

import math
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from apps.accounts.models import IngestKey, Project
from apps.gpu.grpc_server import build_server
from apps.gpu.models import MetricSeries
from apps.telemetry.models import Span
from tests.gpu.helpers import gauge, now_ns, points_of, request_of
from tests.otlp_helpers import LLM_ATTRIBUTES

pytestmark = pytest.mark.django_db(transaction=True)

METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


@pytest.fixture
def grpc_receiver() -> Iterator[str]:
    server, port = build_server("127.0.0.1:0", threads=4, max_message_bytes=256 * 1024)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=5).wait()


@pytest.fixture
def key() -> str:
    _, plaintext = IngestKey.issue(Project.objects.create(name="grpc"), "k")
    return plaintext


def test_real_grpc_span_exporter(grpc_receiver: str, key: str) -> None:
    exporter = OTLPSpanExporter(endpoint=grpc_receiver, insecure=True, headers={"authorization": f"Bearer {key}"})
    provider = TracerProvider(resource=Resource.create({"service.name": "grpc-api", "tenant.id": "globex"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=50))
    tracer = provider.get_tracer("grpc-test")
    for _ in range(60):
        with (
            tracer.start_as_current_span("handle", kind=SpanKind.SERVER, attributes={"app.feature": "summarize"}),
            tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=LLM_ATTRIBUTES),
        ):
            pass
    assert provider.force_flush(30_000)
    provider.shutdown()
    assert Span.objects.count() == 120
    assert Span.objects.filter(is_llm=True).count() == 60
    assert set(Span.objects.values_list("tenant", flat=True)) == {"globex"}


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip])
def test_real_grpc_metric_exporter(grpc_receiver: str, key: str, compression: grpc.Compression) -> None:
    exporter = OTLPMetricExporter(
        endpoint=grpc_receiver, insecure=True, headers={"x-observatory-key": key}, compression=compression
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(resource=Resource.create({"service.name": "vllm-serving"}), metric_readers=[reader])
    meter = provider.get_meter("grpc-test")
    tokens = meter.create_counter("gen_ai.client.inference.usage.input_tokens", unit="{token}")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    tokens.add(1200, {"gen_ai.request.model": "llama-3.1-8b"})
    duration.record(0.8, {"gen_ai.request.model": "llama-3.1-8b"})
    assert provider.force_flush(30_000)
    tokens.add(300, {"gen_ai.request.model": "llama-3.1-8b"})
    provider.shutdown()  # a final export
    assert [(p.value, p.increase) for p in points_of("gen_ai.client.inference.usage.input_tokens")] == [
        (1200.0, 1200.0), (1500.0, 300.0),
    ]  # fmt: skip
    (first, second) = points_of("gen_ai.client.operation.duration")
    assert (first.interval_count, second.interval_count) == (1, 0)
    assert MetricSeries.objects.get(name="gen_ai.client.operation.duration").resource["service.name"] == "vllm-serving"


def _call(address: str, body: bytes, metadata: tuple[tuple[str, str], ...]) -> bytes:
    with grpc.insecure_channel(address) as channel:
        export = channel.unary_unary(METRICS_EXPORT)  # raw bytes both ways
        return export(body, metadata=metadata, timeout=10)  # type: ignore[no-any-return]


def test_unauthenticated(grpc_receiver: str) -> None:
    for metadata in ((), (("authorization", "Bearer obs_ingest_nope"),)):
        with pytest.raises(grpc.RpcError) as caught:
            _call(grpc_receiver, request_of([gauge("g", [(now_ns(), 1.0)])]), metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "ingest key" in caught.value.details()
    assert MetricSeries.objects.count() == 0


def test_undecodable_message_is_invalid_argument(grpc_receiver: str, key: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _call(grpc_receiver, b"\xff\xff\xff\xff", (("authorization", f"Bearer {key}"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an OTLP ExportMetricsServiceRequest" in caught.value.details()


def test_oversized_message_is_resource_exhausted(grpc_receiver: str, key: str) -> None:
    body = request_of([gauge("big", [(now_ns() + 1000 * i, float(i)) for i in range(20_000)])])
    assert len(body) > 256 * 1024
    with pytest.raises(grpc.RpcError) as caught:
        _call(grpc_receiver, body, (("authorization", f"Bearer {key}"),))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert MetricSeries.objects.count() == 0


def test_partial_success_over_grpc(grpc_receiver: str, key: str) -> None:
    t = now_ns()
    request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(
        request_of([gauge("g", [(t, 1.0), (t + 1000, math.nan), (t + 2000, 3.0)])])
    )
    with grpc.insecure_channel(grpc_receiver) as channel:
        stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
        response = stub.Export(request, metadata=(("authorization", f"Bearer {key}"),), timeout=10)
    assert response.partial_success.rejected_data_points == 1
    assert "value is nan" in response.partial_success.error_message
    assert [p.value for p in points_of("g")] == [1.0, 3.0]
