"""POST /v1/metrics: the OTLP/HTTP metrics receiver.

Same checks, limits and answers as POST /v1/traces, by reusing its functions: method,
credentials (a header, before any body is read), media type, declared size, the body read and
decompressed with caps, then the points. 2xx only after the batch has committed; points that
cannot be kept are counted in partial_success.rejected_data_points and the rest are stored.
"""

from __future__ import annotations

import logging

import orjson
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

from apps.gpu.ingest import decoder_for, ingest_points, point_limits
from apps.telemetry.views import (
    JSON,
    PROTOBUF,
    Rejection,
    _check_media_type,
    _content_type,
    _error_response,
    _unavailable,
    authenticate,
    read_body,
)
from collectors.records import PayloadError

log = logging.getLogger("observatory.ingest")


def rejection_message(rejected: list[str]) -> str:
    return "; ".join(rejected[:20]) + (f"; and {len(rejected) - 20} more" if len(rejected) > 20 else "")


def _success_response(rejected: list[str], media_type: str) -> HttpResponse:
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


@csrf_exempt
def receive_metrics(request: HttpRequest) -> HttpResponse:
    media_type, charset = _content_type(request)
    remote = request.META.get("REMOTE_ADDR", "?")
    try:
        if request.method != "POST":
            raise Rejection(405, "use POST")
        try:
            caller = authenticate(request)
        except (OperationalError, InterfaceError) as exc:
            raise _unavailable(exc) from None
        _check_media_type(media_type, charset)
        body = read_body(request)
        try:
            points, rejected = decoder_for(media_type)(body, point_limits())
        except PayloadError as exc:
            raise Rejection(400, str(exc)) from None
        try:
            result = ingest_points(caller.project_id, points, rejected)
        except (OperationalError, InterfaceError) as exc:
            raise _unavailable(exc) from None
        except DatabaseError as exc:
            log.warning(
                "metrics rejected batch from %s key=%s: database refused it: %s", remote, caller.key_prefix, exc
            )
            raise Rejection(400, f"batch refused by the store: {str(exc).splitlines()[0]}") from None
    except Rejection as exc:
        response = _error_response(exc, media_type)
        if exc.status != 503:
            log.warning("metrics rejected %s from %s: %s", exc.status, remote, exc.message)
        return response
    if result.rejected:
        log.warning(
            "metrics partial success key=%s: kept %d, rejected %d: %s",
            caller.key_prefix,
            result.accepted,
            len(result.rejected),
            "; ".join(result.rejected[:5]),
        )
    return _success_response(result.rejected, media_type)
