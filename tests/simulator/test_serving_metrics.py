"""The simulated serving tier's metrics: every GPU reports in every sample period (busy or
not), utilisation follows the time requests spent in the model, and vLLM's counters add up
to the planned calls."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collectors.simulator import simulate
from collectors.simulator.catalog import VLLM_GPUS
from tests.simulator.conftest import END


class KeptMetrics(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, point) of every point of `name`."""
        return [
            (dict(rm.resource.attributes), point)
            for batch in self.batches
            for rm in batch.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


def run(requests: int = 400) -> tuple[KeptMetrics, InMemorySpanExporter, Any]:
    metrics, spans = KeptMetrics(), InMemorySpanExporter()
    summary = simulate(start=END - timedelta(hours=2), end=END, requests=requests, seed=9, exporter=spans,
                       metric_exporter=metrics)  # fmt: skip
    return metrics, spans, summary


def server_spans(spans: InMemorySpanExporter) -> Sequence[Any]:
    return [s for s in spans.get_finished_spans() if s.name == "llm_request"]


def test_every_gpu_reports_every_minute_and_utilisation_follows_the_load() -> None:
    metrics, spans, summary = run()
    utilisation = metrics.points("hw.gpu.utilization")
    gpus = sum(len(g) for g in VLLM_GPUS.values())
    assert len(utilisation) == 120 * gpus  # two hours of one-minute periods
    assert summary.metric_points > 0 and summary.failed_metric_exports == 0
    # Busy minutes (a request in the model on that instance) read above idle; idle minutes read 0.
    busy: dict[str, set[int]] = defaultdict(set)
    for span in server_spans(spans):
        attrs = span.attributes or {}
        start_ns = span.start_time + int(attrs.get("gen_ai.latency.time_in_queue", 0) * 1e9)
        if "gen_ai.latency.time_in_model_prefill" in attrs:
            busy[str(span.resource.attributes["service.instance.id"])].add(start_ns // (60 * 10**9))
    assert busy
    by_minute = {
        (resource["service.instance.id"], point.time_unix_nano // (60 * 10**9)): point.value
        for resource, point in utilisation
    }
    for instance, minutes in busy.items():
        for minute in minutes:
            assert by_minute[(instance, minute)] > 0
    assert any(value == 0 for value in by_minute.values())
    # The GPU sampler's conversion: fractions, with the GPU's identity on each point.
    assert all(0 <= point.value <= 1 and point.attributes["hw.id"].startswith("GPU-") for _, point in utilisation)


def test_vllm_counters_add_up_to_the_planned_calls() -> None:
    metrics, spans, _ = run()
    finals: dict[str, float] = defaultdict(float)
    latest: dict[str, tuple[int, float]] = {}
    for resource, point in metrics.points("vllm:generation_tokens"):
        instance = resource["service.instance.id"]
        if instance not in latest or point.time_unix_nano > latest[instance][0]:
            latest[instance] = (point.time_unix_nano, point.value)
    for instance, (_, value) in latest.items():
        finals[instance] = value
    planned: dict[str, float] = defaultdict(float)
    for span in server_spans(spans):
        planned[str(span.resource.attributes["service.instance.id"])] += (span.attributes or {})[
            "gen_ai.usage.completion_tokens"
        ]
    assert dict(finals) == {instance: planned.get(instance, 0.0) for instance in finals}
    assert sum(planned.values()) > 0


def test_an_injected_span_exporter_alone_sends_no_metrics() -> None:
    summary = simulate(start=END - timedelta(hours=1), end=END, requests=20, seed=1, exporter=InMemorySpanExporter())
    assert summary.metric_points == 0
