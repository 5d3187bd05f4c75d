"""POST /v1/metrics: the OTLP/HTTP metrics receiver.

The trace receiver's pipeline (apps.telemetry.views.receive) with the metrics signal: the
same method, credential, media type and size checks, error answers and log lines. 2xx only
after the batch has committed; points that cannot be kept are counted in
partial_success.rejected_data_points and the rest are stored. Metric points are not counted
against a key's span rate limit.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

from apps.gpu.ingest import decoder_for, ingest_points, point_limits
from apps.telemetry.views import JSON, PROTOBUF, Signal, receive, rejection_message


def _decode_metrics(body: bytes, media_type: str) -> tuple[list[Any], list[str]]:
    return decoder_for(media_type)(body, point_limits())


def _metrics_success(rejected: list[str], media_type: str) -> HttpResponse:
    if media_type == PROTOBUF:
        response_pb = metrics_service_pb2.ExportMetricsServiceResponse()
        if rejected:
            response_pb.partial_success.rejected_data_points = len(rejected)
            response_pb.partial_success.error_message = rejection_message(rejected)
        return HttpResponse(response_pb.SerializeToString(), content_type=PROTOBUF)
    payload: dict[str, object] = {}
    if rejected:
        payload["partialSuccess"] = {"rejectedDataPoints": len(rejected), "errorMessage": rejection_message(rejected)}
    return HttpResponse(orjson.dumps(payload), content_type=JSON)


METRICS = Signal(
    items="data points", decode=_decode_metrics, ingest=ingest_points, success=_metrics_success, rate_limited=False
)


@csrf_exempt
def receive_metrics(request: HttpRequest) -> HttpResponse:
    return receive(request, METRICS)
