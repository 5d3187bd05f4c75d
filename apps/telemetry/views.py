"""POST /v1/traces: the OTLP/HTTP trace receiver.

Order of checks follows the cost of each: method, credentials (a header, before any body
is read), media type, declared size, then the body itself, read with a cap and
decompressed with a cap. Client mistakes get a precise 4xx and a log line; an
unavailable database gets 503 with Retry-After, which standard OTLP exporters honour.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from apps.accounts.models import IngestKey
from apps.telemetry.ingest import ingest_spans
from collectors.otlp import decode_traces_json, decode_traces_protobuf
from collectors.records import PayloadError

log = logging.getLogger("observatory.ingest")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# google.rpc.Code values used in OTLP error bodies.
_RPC_CODES = {400: 3, 401: 16, 413: 8, 415: 3, 503: 14, 405: 12}

# Ingest keys seen recently, so a busy exporter does not cost a key lookup per batch. A
# revoked key stops working within this many seconds.
_KEY_CACHE_SECONDS = 30.0
_key_cache: dict[str, tuple[float, int, str]] = {}


class Rejection(Exception):
    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Caller:
    project_id: int
    key_prefix: str


def _media_type(request: HttpRequest) -> str:
    return request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()


def _error_response(exc: Rejection, media_type: str) -> HttpResponse:
    if media_type == PROTOBUF:
        body = status_pb2.Status(code=_RPC_CODES.get(exc.status, 2), message=exc.message).SerializeToString()
        response = HttpResponse(body, status=exc.status, content_type=PROTOBUF)
    else:
        body = orjson.dumps({"code": _RPC_CODES.get(exc.status, 2), "message": exc.message})
        response = HttpResponse(body, status=exc.status, content_type=JSON)
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="observatory-ingest"'
    return response


def _presented_key(request: HttpRequest) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.META.get("HTTP_X_OBSERVATORY_KEY", "").strip()


def authenticate(request: HttpRequest) -> Caller:
    presented = _presented_key(request)
    if not presented:
        raise Rejection(401, "missing ingest key: send 'Authorization: Bearer <key>' or 'x-observatory-key: <key>'")
    now = time.monotonic()
    cached = _key_cache.get(presented)
    if cached and now - cached[0] < _KEY_CACHE_SECONDS:
        return Caller(project_id=cached[1], key_prefix=cached[2])
    key = IngestKey.authenticate(presented)
    if key is None:
        raise Rejection(401, "ingest key not recognised or revoked")
    _key_cache[presented] = (now, key.project_id, key.prefix)
    return Caller(project_id=key.project_id, key_prefix=key.prefix)


def forget_cached_keys() -> None:
    _key_cache.clear()


def read_body(request: HttpRequest) -> bytes:
    limit = settings.INGEST_MAX_BODY_BYTES
    declared = request.META.get("CONTENT_LENGTH")
    if declared:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise Rejection(400, f"Content-Length {declared!r} is not a number") from None
        if declared_bytes > limit:
            raise Rejection(413, f"body of {declared_bytes} bytes exceeds the {limit}-byte limit")
    # Read one byte past the limit so a body without Content-Length is still capped. Django
    # reads nothing when Content-Length is absent (chunked uploads), so read the WSGI stream
    # itself then; gunicorn de-chunks it.
    stream = request if declared else request.META["wsgi.input"]
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise Rejection(413, f"body exceeds the {limit}-byte limit")
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise Rejection(415, f"unsupported Content-Encoding {encoding!r}: send gzip or none")
    cap = settings.INGEST_MAX_DECOMPRESSED_BYTES
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        # max_length stops a gzip bomb after cap+1 bytes instead of inflating all of it.
        data = inflater.decompress(body, cap + 1)
        if len(data) > cap:
            raise Rejection(413, f"decompressed body exceeds the {cap}-byte limit")
        if not inflater.eof:
            raise Rejection(400, "gzip body is truncated")
    except zlib.error as exc:
        raise Rejection(400, f"body is not valid gzip: {exc}") from None
    return data


def _success_response(rejected: list[str], media_type: str) -> HttpResponse:
    message = "; ".join(rejected[:20]) + (f"; and {len(rejected) - 20} more" if len(rejected) > 20 else "")
    if media_type == PROTOBUF:
        response_pb = trace_service_pb2.ExportTraceServiceResponse()
        if rejected:
            response_pb.partial_success.rejected_spans = len(rejected)
            response_pb.partial_success.error_message = message
        return HttpResponse(response_pb.SerializeToString(), content_type=PROTOBUF)
    payload: dict[str, object] = {}
    if rejected:
        payload["partialSuccess"] = {"rejectedSpans": len(rejected), "errorMessage": message}
    return HttpResponse(orjson.dumps(payload), content_type=JSON)


def _unavailable(exc: Exception) -> Rejection:
    # Drop the broken connection so the next request reconnects once the database is back.
    connection.close_if_unusable_or_obsolete()
    log.warning("ingest unavailable: database error: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return Rejection(503, "database unavailable, retry later", retry_after=settings.INGEST_RETRY_AFTER_SECONDS)


@csrf_exempt
def receive_traces(request: HttpRequest) -> HttpResponse:
    media_type = _media_type(request)
    remote = request.META.get("REMOTE_ADDR", "?")
    try:
        if request.method != "POST":
            raise Rejection(405, "use POST")
        try:
            caller = authenticate(request)
        except (OperationalError, InterfaceError) as exc:
            raise _unavailable(exc) from None
        if media_type not in (PROTOBUF, JSON):
            raise Rejection(415, f"unsupported Content-Type {media_type or '(none)'!r}: send {PROTOBUF} or {JSON}")
        body = read_body(request)
        try:
            raw_spans, rejected = decode_traces_protobuf(body) if media_type == PROTOBUF else decode_traces_json(body)
        except PayloadError as exc:
            raise Rejection(400, str(exc)) from None
        try:
            result = ingest_spans(caller.project_id, raw_spans, rejected)
        except (OperationalError, InterfaceError) as exc:
            raise _unavailable(exc) from None
        except DatabaseError as exc:
            # A value PostgreSQL refused that validation let through: the client's data,
            # so 400 rather than 500, and nothing of the batch was stored.
            log.warning("ingest rejected batch from %s key=%s: database refused it: %s", remote, caller.key_prefix, exc)
            raise Rejection(400, f"batch refused by the store: {str(exc).splitlines()[0]}") from None
    except Rejection as exc:
        response = _error_response(exc, media_type)
        if exc.status != 503:
            log.warning("ingest rejected %s from %s: %s", exc.status, remote, exc.message)
        return response
    if result.rejected:
        log.warning(
            "ingest partial success key=%s: kept %d, rejected %d: %s",
            caller.key_prefix,
            result.accepted,
            len(result.rejected),
            "; ".join(result.rejected[:5]),
        )
    return _success_response(result.rejected, media_type)
