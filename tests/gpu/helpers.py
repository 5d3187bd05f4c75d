"""OTLP metric payloads for tests: by hand (exact times, starts and values) and through the
real OpenTelemetry SDK and its encoders."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from apps.gpu.models import MetricPoint, MetricSeries

CUMULATIVE, DELTA = 2, 1
MINUTE_NS = 60 * 10**9


def now_ns() -> int:
    return time.time_ns() - 10 * MINUTE_NS


def kv(attributes: dict[str, Any]) -> list[KeyValue]:
    out = []
    for key, value in attributes.items():
        if isinstance(value, bool):
            out.append(KeyValue(key=key, value=AnyValue(bool_value=value)))
        elif isinstance(value, int):
            out.append(KeyValue(key=key, value=AnyValue(int_value=value)))
        elif isinstance(value, float):
            out.append(KeyValue(key=key, value=AnyValue(double_value=value)))
        else:
            out.append(KeyValue(key=key, value=AnyValue(string_value=str(value))))
    return out


def request_of(metrics: Iterable[metrics_pb2.Metric], resource: dict[str, Any] | None = None) -> bytes:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(kv(resource or {"service.name": "support-api", "host.name": "node-1"}))
    sm = rm.scope_metrics.add()
    sm.scope.name = "tests"
    sm.metrics.extend(metrics)
    return request.SerializeToString()


def gauge(
    name: str, points: Iterable[tuple[int, float]], attributes: dict[str, Any] | None = None
) -> metrics_pb2.Metric:
    metric = metrics_pb2.Metric(name=name, unit="1")
    for time_ns, value in points:
        metric.gauge.data_points.add(time_unix_nano=time_ns, as_double=value, attributes=kv(attributes or {}))
    return metric


def counter(
    name: str,
    points: Iterable[tuple[int, int, float]],
    *,
    temporality: int = CUMULATIVE,
    monotonic: bool = True,
    attributes: dict[str, Any] | None = None,
) -> metrics_pb2.Metric:
    """points: (start_ns, time_ns, value)."""
    metric = metrics_pb2.Metric(name=name, unit="{token}")
    metric.sum.aggregation_temporality = temporality  # type: ignore[assignment]  # the enum value as an int
    metric.sum.is_monotonic = monotonic
    for start_ns, time_ns, value in points:
        metric.sum.data_points.add(
            start_time_unix_nano=start_ns, time_unix_nano=time_ns, as_double=value, attributes=kv(attributes or {})
        )
    return metric


def histogram(
    name: str,
    points: Iterable[tuple[int, int, list[int], float]],
    bounds: list[float],
    *,
    temporality: int = CUMULATIVE,
    attributes: dict[str, Any] | None = None,
) -> metrics_pb2.Metric:
    """points: (start_ns, time_ns, bucket_counts, sum)."""
    metric = metrics_pb2.Metric(name=name, unit="s")
    metric.histogram.aggregation_temporality = temporality  # type: ignore[assignment]  # the enum value as an int
    for start_ns, time_ns, buckets, total in points:
        metric.histogram.data_points.add(
            start_time_unix_nano=start_ns, time_unix_nano=time_ns, count=sum(buckets), sum=total,
            bucket_counts=buckets, explicit_bounds=bounds, attributes=kv(attributes or {}),
        )  # fmt: skip
    return metric


def points_of(name: str) -> list[MetricPoint]:
    series = list(MetricSeries.objects.filter(name=name).values_list("series_id", flat=True))
    return list(MetricPoint.objects.filter(series_id__in=series).order_by("series_id", "time"))
