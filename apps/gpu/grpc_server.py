"""OTLP/gRPC receiver (port 4317) for traces and metrics: `python manage.py otlp_grpc`.

grpcio serves the two OTLP services named by the stubs shipped in opentelemetry-proto. The
methods take the raw request bytes (no deserializer), so a malformed message is decoded by
the same decoders as OTLP/HTTP and answered INVALID_ARGUMENT with their precise message,
rather than grpcio's generic INTERNAL.

Answers mirror the HTTP receiver's: no or unknown key -> UNAUTHENTICATED (401); a message over
OTLP_GRPC_MAX_MESSAGE_BYTES -> RESOURCE_EXHAUSTED (413; grpcio enforces it before we see the
bytes); undecodable -> INVALID_ARGUMENT (400); database down -> UNAVAILABLE with
google.rpc.RetryInfo in the trailing metadata (503 + Retry-After), which the OTLP exporters
honour. Rejected spans / points are reported in partial_success, the rest are stored.

Each call runs in a pool thread with its own Django connection, opened for the call and
closed after it: a pool of idle threads holds no connections, and a call after a database
restart never starts on a broken one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from types import SimpleNamespace
from typing import Any

import grpc
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from apps.gpu.ingest import ingest_points, point_limits
from apps.telemetry.ingest import ingest_spans
from apps.telemetry.views import Caller, Rejection, authenticate, rejection_message
from collectors.otlp import decode_traces_protobuf
from collectors.otlp_metrics import decode_metrics_protobuf
from collectors.records import PayloadError

log = logging.getLogger("observatory.ingest")

TRACE_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
METRICS_SERVICE = metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


def authenticate_metadata(metadata: tuple[tuple[str, str | bytes], ...]) -> Caller:
    """The HTTP receiver's authenticate() for gRPC metadata (same headers, same key cache).

    Adapter: apps.telemetry.views.authenticate reads an HttpRequest's META, so the two
    headers it looks at are handed over in that shape.
    """
    headers = {key.lower(): value for key, value in metadata if isinstance(value, str)}
    meta = {
        "HTTP_AUTHORIZATION": headers.get("authorization", ""),
        "HTTP_X_OBSERVATORY_KEY": headers.get("x-observatory-key", ""),
    }
    try:
        return authenticate(SimpleNamespace(META=meta))  # type: ignore[arg-type]
    except Rejection as exc:
        raise _Abort(grpc.StatusCode.UNAUTHENTICATED, exc.message) from None


def _unavailable(exc: Exception) -> _Abort:
    connection.close_if_unusable_or_obsolete()
    log.warning("grpc ingest unavailable: database error: %s", str(exc).splitlines()[0] if str(exc) else exc)
    return _Abort(grpc.StatusCode.UNAVAILABLE, "database unavailable, retry later",
                  retry_after=settings.INGEST_RETRY_AFTER_SECONDS)  # fmt: skip


def _handle(kind: str, work: Callable[[Caller, bytes], Any]) -> Callable[[bytes, grpc.ServicerContext], Any]:
    def handler(body: bytes, context: grpc.ServicerContext) -> Any:
        close_old_connections()
        peer = context.peer()
        try:
            try:
                caller = authenticate_metadata(context.invocation_metadata())
            except (OperationalError, InterfaceError) as exc:
                raise _unavailable(exc) from None
            try:
                return work(caller, body)
            except PayloadError as exc:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            except (OperationalError, InterfaceError) as exc:
                raise _unavailable(exc) from None
            except DatabaseError as exc:
                log.warning("grpc %s batch from %s refused by the database: %s", kind, peer, exc)
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                             f"batch refused by the store: {str(exc).splitlines()[0]}") from None  # fmt: skip
        except _Abort as abort:
            if abort.retry_after is not None:
                info = RetryInfo(retry_delay=Duration(seconds=abort.retry_after))
                context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
            else:
                log.warning("grpc %s rejected %s from %s: %s", kind, abort.code.name, peer, abort.message)
            context.abort(abort.code, abort.message)
        finally:
            connection.close()

    return handler


def export_traces(caller: Caller, body: bytes) -> trace_service_pb2.ExportTraceServiceResponse:
    raw_spans, rejected = decode_traces_protobuf(body)
    result = ingest_spans(caller.project_id, raw_spans, rejected)
    response = trace_service_pb2.ExportTraceServiceResponse()
    if result.rejected:
        response.partial_success.rejected_spans = len(result.rejected)
        response.partial_success.error_message = rejection_message(result.rejected)
        log.warning("grpc traces partial success key=%s: rejected %d", caller.key_prefix, len(result.rejected))
    return response


def export_metrics(caller: Caller, body: bytes) -> metrics_service_pb2.ExportMetricsServiceResponse:
    points, rejected = decode_metrics_protobuf(body, point_limits())
    result = ingest_points(caller.project_id, points, rejected)
    response = metrics_service_pb2.ExportMetricsServiceResponse()
    if result.rejected:
        response.partial_success.rejected_data_points = len(result.rejected)
        response.partial_success.error_message = rejection_message(result.rejected)
        log.warning("grpc metrics partial success key=%s: rejected %d", caller.key_prefix, len(result.rejected))
    return response


def _service(name: str, kind: str, work: Callable[[Caller, bytes], Any], response_type: Any) -> grpc.GenericRpcHandler:
    method = grpc.unary_unary_rpc_method_handler(
        _handle(kind, work), request_deserializer=None, response_serializer=response_type.SerializeToString
    )
    return grpc.method_handlers_generic_handler(name, {"Export": method})


def build_server(
    address: str, *, threads: int | None = None, max_message_bytes: int | None = None
) -> tuple[grpc.Server, int]:
    """A server bound to `address` (host:port; port 0 picks a free one) and the port it got; call .start()."""
    limit = max_message_bytes or settings.OTLP_GRPC_MAX_MESSAGE_BYTES
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads or settings.OTLP_GRPC_THREADS, thread_name_prefix="otlp-grpc"),
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", 4 * 1024 * 1024)],
    )
    server.add_generic_rpc_handlers(
        (
            _service(TRACE_SERVICE, "traces", export_traces, trace_service_pb2.ExportTraceServiceResponse),
            _service(METRICS_SERVICE, "metrics", export_metrics, metrics_service_pb2.ExportMetricsServiceResponse),
        )
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind the OTLP/gRPC receiver to {address}")
    return server, port
