"""POST /v1/traces: the OTLP/HTTP trace receiver, and the pipeline every OTLP/HTTP signal shares
(`receive`: /v1/metrics in apps/gpu uses it too).

Order of checks follows the cost of each: method, credentials (a header, before any body
is read), the key's rate limit, media type, declared size, then the body itself, read with
a cap and decompressed with a cap. Client mistakes get a precise 4xx and a log line (one
per kind and client a minute: observatory.logthrottle); an unavailable database gets 503
with Retry-After, and so does a key over its rate limit (429): standard OTLP exporters
honour both.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from apps.accounts.models import IngestKey
from apps.telemetry import ratelimit
from apps.telemetry.ingest import forget_log_state, ingest_spans
from collectors.otlp import decode_traces_json, decode_traces_protobuf
from collectors.records import PayloadError
from observatory.logthrottle import ThrottledLog

log = logging.getLogger("observatory.ingest")
# Rejections are the client's to repeat: one line per (reason, client) a minute, then a count.
_throttled = ThrottledLog(log)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# google.rpc.Code values used in OTLP error bodies.
_RPC_CODES = {400: 3, 401: 16, 413: 8, 415: 3, 429: 8, 503: 14, 405: 12}
# A body with more gzip members than this is not an exporter's (each sends one).
MAX_GZIP_MEMBERS = 64


class Rejection(Exception):
    def __init__(self, status: int, message: str, *, reason: str = "", retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        # What kind of rejection this is, for the log throttle: messages carry sizes and
        # offsets that differ from one request to the next.
        self.reason = reason or str(status)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Caller:
    project_id: int
    # Names the key in shared counters (the rate limit in Redis): part of its hash, unique
    # across deployments that share one Redis, unlike the row id.
    key_ref: str
    key_prefix: str


def _content_type(request: HttpRequest) -> tuple[str, str]:
    """The media type and its charset parameter (lower case; "" when absent)."""
    media_type, _, parameters = request.META.get("CONTENT_TYPE", "").partition(";")
    charset = ""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return media_type.strip().lower(), charset


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


def refusal(request: HttpRequest, status: int, message: str) -> HttpResponse:
    """An OTLP error answer, in the request's encoding, for a refusal made outside the view
    (observatory.errors: a Host header outside ALLOWED_HOSTS)."""
    media_type, _ = _content_type(request)
    return _error_response(Rejection(status, message), media_type)


def _presented_key(request: HttpRequest) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.META.get("HTTP_X_OBSERVATORY_KEY", "").strip()


def authenticate(request: HttpRequest) -> Caller:
    """The key's project, looked up on every request: no cache, so a key revoked in admin
    is refused by every process from its next request on. The look-up is one probe of the
    unique index on the key's hash, about 0.07 ms (IngestKey.credentials)."""
    presented = _presented_key(request)
    if not presented:
        raise Rejection(
            401,
            "missing ingest key: send 'Authorization: Bearer <key>' or 'x-observatory-key: <key>'",
            reason="no-key",
        )
    key = IngestKey.credentials(presented)
    if key is None:
        raise Rejection(401, "ingest key not recognised or revoked", reason="bad-key")
    return Caller(project_id=key.project_id, key_ref=key.key_hash[:24], key_prefix=key.prefix)


def forget_cached_keys() -> None:
    """Forget this process's ingest state (log throttles, the rate-limit client); tests
    call it between tests. Keys themselves are never cached."""
    _throttled.forget()
    ratelimit.forget()
    forget_log_state()


def read_body(request: HttpRequest) -> bytes:
    limit = settings.INGEST_MAX_BODY_BYTES
    declared = request.META.get("CONTENT_LENGTH")
    if declared:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise Rejection(400, f"Content-Length {declared[:40]!r} is not a number", reason="length") from None
        if declared_bytes < 0:
            raise Rejection(400, f"Content-Length {declared_bytes} is negative", reason="length")
        if declared_bytes > limit:
            raise Rejection(413, f"body of {declared_bytes} bytes exceeds the {limit}-byte limit", reason="too-large")
    # Read one byte past the limit so a body without Content-Length is still capped. Django
    # reads nothing when Content-Length is absent (chunked uploads), so read the WSGI stream
    # itself then; gunicorn de-chunks it.
    stream = request if declared else request.META["wsgi.input"]
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise Rejection(413, f"body exceeds the {limit}-byte limit", reason="too-large")
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise Rejection(415, f"unsupported Content-Encoding {encoding[:40]!r}: send gzip or none", reason="encoding")
    return gunzip(body, settings.INGEST_MAX_DECOMPRESSED_BYTES)


def gunzip(body: bytes, cap: int) -> bytes:
    """Every member of a gzip body (RFC 1952 allows several, one after another, and
    `cat a.gz b.gz` makes such a body), at most `cap` bytes in all."""
    parts: list[bytes] = []
    total = 0
    rest = body
    members = 0
    try:
        while True:
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise Rejection(400, f"gzip body has more than {MAX_GZIP_MEMBERS} members", reason="bad-gzip")
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            # max_length stops a gzip bomb after cap+1 bytes in all, however it is split
            # into members, instead of inflating all of it.
            data = inflater.decompress(rest, cap + 1 - total)
            total += len(data)
            if total > cap:
                raise Rejection(413, f"decompressed body exceeds the {cap}-byte limit", reason="too-large")
            if not inflater.eof:
                raise Rejection(400, "gzip body is truncated", reason="bad-gzip")
            parts.append(data)
            rest = inflater.unused_data
            if not rest:
                break
    except zlib.error as exc:
        raise Rejection(400, f"body is not valid gzip: {exc}", reason="bad-gzip") from None
    return parts[0] if len(parts) == 1 else b"".join(parts)


def rejection_message(rejected: list[str]) -> str:
    """The first reasons of a partial success, for OTLP's error_message."""
    return "; ".join(rejected[:20]) + (f"; and {len(rejected) - 20} more" if len(rejected) > 20 else "")


def _trace_success(rejected: list[str], media_type: str) -> HttpResponse:
    if media_type == PROTOBUF:
        response_pb = trace_service_pb2.ExportTraceServiceResponse()
        if rejected:
            response_pb.partial_success.rejected_spans = len(rejected)
            response_pb.partial_success.error_message = rejection_message(rejected)
        return HttpResponse(response_pb.SerializeToString(), content_type=PROTOBUF)
    payload: dict[str, object] = {}
    if rejected:
        payload["partialSuccess"] = {"rejectedSpans": len(rejected), "errorMessage": rejection_message(rejected)}
    return HttpResponse(orjson.dumps(payload), content_type=JSON)


def _unavailable(exc: Exception) -> Rejection:
    # Drop the broken connection so the next request reconnects once the database is back.
    connection.close_if_unusable_or_obsolete()
    _throttled.warning(
        ("db-unavailable",),
        "ingest unavailable: database error: %s",
        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
    )
    return Rejection(
        503, "database unavailable, retry later", reason="unavailable", retry_after=settings.INGEST_RETRY_AFTER_SECONDS
    )


def _loggable(text: str) -> str:
    """Client text (span ids, attribute keys) with control characters escaped: a newline
    in a span id must not forge a log line, and a NUL must not reach the log at all."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _rate_limited(retry_after: int) -> Rejection:
    return Rejection(
        429, f"ingest key over its rate limit of {settings.INGEST_RATE_LIMIT_SPANS_PER_S} spans/s, retry later",
        reason="rate-limited", retry_after=retry_after,
    )  # fmt: skip


def _check_media_type(media_type: str, charset: str) -> None:
    if media_type not in (PROTOBUF, JSON):
        raise Rejection(
            415, f"unsupported Content-Type {media_type[:60] or '(none)'!r}: send {PROTOBUF} or {JSON}",
            reason="media-type",
        )  # fmt: skip
    # OTLP/JSON is UTF-8 (RFC 8259); a body declared in another charset would be misread.
    if media_type == JSON and charset not in ("", "utf-8", "utf8"):
        raise Rejection(415, f"unsupported charset {charset[:40]!r}: OTLP/JSON must be utf-8", reason="charset")


class Ingested(Protocol):
    accepted: int
    rejected: list[str]


@dataclass(frozen=True)
class Signal:
    """One OTLP signal over HTTP: how its body is decoded, stored and answered. Everything
    else (method, key, rate limit, media type, size caps, error answers, log lines) is the
    same for every signal: `receive`."""

    items: str  # what the batch holds, for messages: "spans", "data points"
    decode: Callable[[bytes, str], tuple[list[Any], list[str]]]  # (body, media type)
    ingest: Callable[[int, list[Any], list[str]], Ingested]  # (project, items, rejected)
    success: Callable[[list[str], str], HttpResponse]  # (rejected, media type)
    # Counted against the key's rate limit (INGEST_RATE_LIMIT_SPANS_PER_S is about spans;
    # metric points arrive at a steady rate set by their exporters' intervals).
    rate_limited: bool = True


def _decode_traces(body: bytes, media_type: str) -> tuple[list[Any], list[str]]:
    spans, rejected = decode_traces_protobuf(body) if media_type == PROTOBUF else decode_traces_json(body)
    return list(spans), rejected


TRACES = Signal(items="spans", decode=_decode_traces, ingest=ingest_spans, success=_trace_success)


def receive(request: HttpRequest, signal: Signal) -> HttpResponse:
    media_type, charset = _content_type(request)
    remote = request.META.get("REMOTE_ADDR", "?")
    try:
        if request.method != "POST":
            raise Rejection(405, "use POST", reason="method")
        try:
            caller = authenticate(request)
        except (OperationalError, InterfaceError) as exc:
            raise _unavailable(exc) from None
        limit = ratelimit.span_rate_limit() if signal.rate_limited else None
        if limit is not None:
            # A key already over its limit is turned away before its body is read.
            verdict = limit.has_room(caller.key_ref)
            if not verdict.allowed:
                raise _rate_limited(verdict.retry_after)
        _check_media_type(media_type, charset)
        body = read_body(request)
        try:
            items, rejected = signal.decode(body, media_type)
        except PayloadError as exc:
            raise Rejection(400, str(exc), reason="bad-payload") from None
        if limit is not None and items:
            if len(items) > limit.burst:
                raise Rejection(
                    413, f"batch of {len(items)} {signal.items} exceeds the rate limit's burst of {limit.burst}: "
                    "send smaller batches", reason="batch-over-burst",
                )  # fmt: skip
            verdict = limit.take(caller.key_ref, len(items))
            if not verdict.allowed:
                raise _rate_limited(verdict.retry_after)
        try:
            result = signal.ingest(caller.project_id, items, rejected)
        except (OperationalError, InterfaceError) as exc:
            raise _unavailable(exc) from None
        except DatabaseError as exc:
            # A value PostgreSQL refused that validation let through: the client's data,
            # so 400 rather than 500, and nothing of the batch was stored.
            # A gap in validation, so ERROR; throttled, since the exporter will re-send it.
            _throttled.log(
                logging.ERROR, ("refused", caller.key_prefix),
                "ingest rejected batch from %s key=%s: database refused it: %s", remote, caller.key_prefix, exc,
            )  # fmt: skip
            raise Rejection(400, f"batch refused by the store: {str(exc).splitlines()[0]}", reason="refused") from None
    except Rejection as exc:
        response = _error_response(exc, media_type)
        if exc.status != 503:
            _throttled.warning(
                (exc.reason, remote), "ingest rejected %s from %s: %s", exc.status, remote, _loggable(exc.message[:500])
            )
        # Logged above, once per kind: Django's request logger would add a second WARNING
        # for every 4xx, unthrottled.
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response
    if result.rejected:
        _throttled.warning(
            ("partial", caller.key_prefix),
            "ingest partial success key=%s: kept %d %s, rejected %d: %s",
            caller.key_prefix,
            result.accepted,
            signal.items,
            len(result.rejected),
            _loggable("; ".join(reason[:200] for reason in result.rejected[:5])),
        )
    return signal.success(result.rejected, media_type)


@csrf_exempt
def receive_traces(request: HttpRequest) -> HttpResponse:
    return receive(request, TRACES)
