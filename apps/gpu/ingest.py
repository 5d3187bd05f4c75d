"""From decoded OTLP metrics to stored points: the service behind POST /v1/metrics and the
gRPC MetricsService."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from apps.gpu.store import insert_points
from collectors.metric_records import MetricPoint
from collectors.otlp_metrics import PointLimits, decode_metrics_json, decode_metrics_protobuf, decode_metrics_request


@dataclass
class MetricsResult:
    accepted: int = 0
    inserted: int = 0
    rejected: list[str] = field(default_factory=list)


def point_limits(now_ns: int | None = None) -> PointLimits:
    now_ns = now_ns if now_ns is not None else time.time_ns()
    return PointLimits(
        now_ns=now_ns,
        max_future_ns=settings.METRIC_MAX_FUTURE_SECONDS * 10**9,
        # A day of slack inside retention: a point in a partition about to be dropped is lost anyway.
        oldest_ns=now_ns - (settings.METRIC_RETENTION_DAYS - 1) * 86_400 * 10**9,
        max_attribute_chars=settings.SPAN_ATTRIBUTE_MAX_CHARS,
        max_attributes_chars=settings.SPAN_ATTRIBUTES_MAX_CHARS,
    )


def ingest_points(project_id: int, points: Sequence[MetricPoint], rejected: Sequence[str]) -> MetricsResult:
    """Store one decoded batch. Database errors propagate: the receivers answer 503 / UNAVAILABLE."""
    result = MetricsResult(accepted=len(points), rejected=list(rejected))
    result.inserted = insert_points(project_id, points)
    return result


def decoder_for(media_type: str) -> Callable[[bytes, PointLimits], tuple[list[MetricPoint], list[str]]]:
    return decode_metrics_protobuf if media_type == "application/x-protobuf" else decode_metrics_json


def ingest_request(project_id: int, request: Any) -> MetricsResult:
    """An already parsed ExportMetricsServiceRequest (the gRPC path)."""
    points, rejected = decode_metrics_request(request, point_limits())
    return ingest_points(project_id, points, rejected)
