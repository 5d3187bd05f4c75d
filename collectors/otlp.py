"""Decode OTLP trace exports (protobuf and OTLP/JSON) into RawSpans.

Both decoders return the spans they could keep plus one message per span they could not
(the OTLP partial-success answer counts rejected spans). Only a body that cannot be read as
an ExportTraceServiceRequest at all raises PayloadError; nothing else escapes for client
input, because this runs on every ingest request.

This is the ingest hot path: spans are read straight off the upb message objects (no
json_format, no intermediate dicts), and each AnyValue's oneof is looked up once.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collectors.records import (
    EVENTS_READ_FROM_EACH_END,
    MAX_EVENTS_READ,
    SPAN_KIND_NAMES,
    PayloadError,
    RawEvent,
    RawSpan,
    SpanRejected,
)

__all__ = ["decode_traces_json", "decode_traces_protobuf"]

_MAX_INT64 = (1 << 63) - 1
# Spans before 2000-01-01 are not real LLM traffic: they are clients sending micro- or
# milliseconds where OTLP wants nanoseconds, and a 1970 row would also miss every partition.
_MIN_PLAUSIBLE_NS = 946_684_800 * 1_000_000_000
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)
# orjson nests up to 1024 levels; walking that recursively would hit Python's recursion
# limit, and no real attribute nests anywhere near this deep.
_MAX_VALUE_DEPTH = 32

_SCALAR_ONEOFS = frozenset({"string_value", "int_value", "double_value", "bool_value"})


# --------------------------------------------------------------------------- protobuf


def decode_traces_protobuf(body: bytes) -> tuple[list[RawSpan], list[str]]:
    """Decode an `application/x-protobuf` ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # upb raises DecodeError, but any failure here is the client's bytes
        raise PayloadError(
            f"body is not an OTLP ExportTraceServiceRequest protobuf ({len(body)} bytes){_body_hint(body)}: {exc}"
        ) from None

    spans: list[RawSpan] = []
    rejections: list[str] = []
    for ri, resource_spans in enumerate(request.resource_spans):
        # One dict shared by all the spans of this resource (decoded once): read-only.
        resource = _pb_attributes(resource_spans.resource.attributes)
        for si, scope_spans in enumerate(resource_spans.scope_spans):
            scope = scope_spans.scope
            scope_name = scope.name
            scope_version = scope.version
            for pi, span in enumerate(scope_spans.spans):
                trace_id = span.trace_id
                span_id = span.span_id
                parent = span.parent_span_id
                start_ns = span.start_time_unix_nano
                end_ns = span.end_time_unix_nano
                problem = _check_ids_and_times(trace_id, span_id, parent, start_ns, end_ns)
                if problem is not None:
                    rejections.append(f"{_where(ri, si, pi, span_id.hex())}: {problem}")
                    continue
                kind = span.kind
                status = span.status
                code = status.code
                spans.append(
                    RawSpan(
                        trace_id=trace_id,
                        span_id=span_id,
                        parent_span_id=parent if parent and parent != _ZERO_SPAN_ID else None,
                        name=span.name,
                        kind=kind if kind in SPAN_KIND_NAMES else 0,
                        start_ns=start_ns,
                        end_ns=end_ns,
                        status_code=code if 0 <= code <= 2 else 0,
                        status_message=status.message,
                        attributes=_pb_attributes(span.attributes),
                        resource=resource,
                        scope_name=scope_name,
                        scope_version=scope_version,
                        events=_pb_events(span.events) if len(span.events) else (),
                    )
                )
    return spans, rejections


def _pb_events(events: Any) -> tuple[RawEvent, ...]:
    return tuple(
        RawEvent(event.name, event.time_unix_nano, _pb_attributes(event.attributes))
        for event in (events[index] for index in _event_indexes(len(events)))
    )


def _event_indexes(count: int) -> range | list[int]:
    """The events read of `count`: all of a few, else the first and the last few.

    The middle of a long list is chunk after chunk of one stream; skipping it keeps a span
    with 100k events as cheap as one with 32, without missing the first token or the error.
    """
    if count <= MAX_EVENTS_READ:
        return range(count)
    return [*range(EVENTS_READ_FROM_EACH_END), *range(count - EVENTS_READ_FROM_EACH_END, count)]


def _pb_attributes(key_values: Iterable[Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for kv in key_values:
        value = kv.value
        # Most attributes are non-empty strings: one upb access instead of two.
        text = value.string_value
        if text:
            attributes[kv.key] = text
            continue
        which = value.WhichOneof("value")
        if which in _SCALAR_ONEOFS:
            attributes[kv.key] = getattr(value, which)
        elif which is not None:  # an empty AnyValue carries nothing worth a key
            attributes[kv.key] = _pb_value(value, which)
    return attributes


def _pb_value(value: Any, which: str | None) -> Any:
    if which in _SCALAR_ONEOFS:
        return getattr(value, which)
    if which == "array_value":
        return [_pb_value(item, item.WhichOneof("value")) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _pb_value(kv.value, kv.value.WhichOneof("value")) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value.hex()
    return None


def _body_hint(body: bytes) -> str:
    head = bytes(body[:2])
    if head[:1] in (b"{", b"["):
        return " (it looks like JSON: send it with Content-Type: application/json)"
    if head == b"\x1f\x8b":
        return " (it looks gzip-compressed: declare it with Content-Encoding: gzip)"
    return ""


# --------------------------------------------------------------------------- shared checks


def _check_ids_and_times(trace_id: bytes, span_id: bytes, parent: bytes, start_ns: int, end_ns: int) -> str | None:
    """Why this span cannot be stored, or None. The ids are the table's key; the times its partition."""
    if not trace_id:
        return "trace id is missing"
    if len(trace_id) != 16:
        return f"trace id is {len(trace_id)} bytes, expected 16"
    if trace_id == _ZERO_TRACE_ID:
        return "trace id is all zeros"
    if not span_id:
        return "span id is missing"
    if len(span_id) != 8:
        return f"span id is {len(span_id)} bytes, expected 8"
    if span_id == _ZERO_SPAN_ID:
        return "span id is all zeros"
    if parent and len(parent) != 8:
        return f"parent span id is {len(parent)} bytes, expected 8 (or empty for a root span)"
    if start_ns == 0:
        return "start time is missing (0)"
    if start_ns < _MIN_PLAUSIBLE_NS:
        return f"start time {start_ns} is before 2000-01-01: OTLP times are unix nanoseconds"
    if start_ns > _MAX_INT64 or end_ns > _MAX_INT64:
        return "start or end time is beyond 2262 (does not fit a signed 64-bit nanosecond count)"
    if end_ns < start_ns:
        return f"end time {end_ns} is before start time {start_ns}"
    return None


def _where(ri: int, si: int, pi: int, span_id: str) -> str:
    where = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
    return f"{where} (span {span_id})" if span_id else where


# --------------------------------------------------------------------------- OTLP/JSON


def decode_traces_json(body: bytes) -> tuple[list[RawSpan], list[str]]:
    """Decode an `application/json` ExportTraceServiceRequest (the OTLP/JSON mapping).

    Field names in lowerCamelCase or snake_case; trace and span ids as hex (not base64);
    64-bit integers as strings or numbers; enums as integers (or their names).
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(
            f"body is not valid JSON: {exc.msg} at byte {_byte_offset(body, exc.pos)} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from None
    if type(document) is not dict:
        raise PayloadError(f"body is a JSON {_json_type(document)}, not an OTLP ExportTraceServiceRequest object")
    resource_spans_list = _get(document, "resourceSpans", "resource_spans")
    if resource_spans_list is None:
        return [], []
    if type(resource_spans_list) is not list:
        raise PayloadError(f"resourceSpans is a JSON {_json_type(resource_spans_list)}, expected an array")

    spans: list[RawSpan] = []
    rejections: list[str] = []
    for ri, resource_spans in enumerate(resource_spans_list):
        if type(resource_spans) is not dict:
            rejections.append(f"resourceSpans[{ri}] is a JSON {_json_type(resource_spans)}, expected an object")
            continue
        scope_spans_list = _get(resource_spans, "scopeSpans", "scope_spans") or []
        if type(scope_spans_list) is not list:
            rejections.append(f"resourceSpans[{ri}].scopeSpans is not an array")
            continue
        try:
            # One dict shared by all the spans of this resource (decoded once): read-only.
            resource = _json_resource(resource_spans)
        except SpanRejected as exc:
            _reject_all(rejections, f"resourceSpans[{ri}].resource", exc, scope_spans_list)
            continue
        for si, scope_spans in enumerate(scope_spans_list):
            where = f"resourceSpans[{ri}].scopeSpans[{si}]"
            if type(scope_spans) is not dict:
                rejections.append(f"{where} is a JSON {_json_type(scope_spans)}, expected an object")
                continue
            span_list = scope_spans.get("spans") or []
            if type(span_list) is not list:
                rejections.append(f"{where}.spans is not an array")
                continue
            try:
                scope_name, scope_version = _json_scope(scope_spans)
            except SpanRejected as exc:
                _reject_all(rejections, f"{where}.scope", exc, [scope_spans])
                continue
            for pi, span in enumerate(span_list):
                try:
                    spans.append(_json_span(span, resource, scope_name, scope_version))
                except SpanRejected as exc:
                    span_id = _get(span, "spanId", "span_id") if type(span) is dict else None
                    label = span_id[:32] if type(span_id) is str else ""
                    rejections.append(f"{_where(ri, si, pi, label)}: {exc}")
    return spans, rejections


def _json_span(span: Any, resource: dict[str, Any], scope_name: str, scope_version: str) -> RawSpan:
    if type(span) is not dict:
        raise SpanRejected(f"span is a JSON {_json_type(span)}, expected an object")
    get = span.get
    trace_id = _json_id(get("traceId") or get("trace_id"), "trace id")
    span_id = _json_id(get("spanId") or get("span_id"), "span id")
    parent = _json_id(get("parentSpanId") or get("parent_span_id"), "parent span id")
    start_ns = _json_uint64(get("startTimeUnixNano") or get("start_time_unix_nano"), "startTimeUnixNano")
    end_ns = _json_uint64(get("endTimeUnixNano") or get("end_time_unix_nano"), "endTimeUnixNano")
    problem = _check_ids_and_times(trace_id, span_id, parent, start_ns, end_ns)
    if problem is not None:
        raise SpanRejected(problem)

    name = span.get("name", "")
    if type(name) is not str:
        raise SpanRejected("name is not a string")
    kind = _json_enum(span.get("kind"), _SPAN_KIND_BY_NAME, "kind")
    status = span.get("status")
    code, message = 0, ""
    if status is not None:
        if type(status) is not dict:
            raise SpanRejected("status is not an object")
        code = _json_enum(status.get("code"), _STATUS_CODE_BY_NAME, "status.code")
        message = status.get("message", "")
        if type(message) is not str:
            raise SpanRejected("status.message is not a string")
    return RawSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent if parent and parent != _ZERO_SPAN_ID else None,
        name=name,
        kind=kind if kind in SPAN_KIND_NAMES else 0,
        start_ns=start_ns,
        end_ns=end_ns,
        status_code=code if 0 <= code <= 2 else 0,
        status_message=message,
        attributes=_json_attributes(span.get("attributes")),
        resource=resource,
        scope_name=scope_name,
        scope_version=scope_version,
        events=_json_events(span.get("events")),
    )


def _json_events(events: Any) -> tuple[RawEvent, ...]:
    """The span's events, leniently: they are never stored, and only refine what the mapping
    derives (TTFT, error type), so a malformed event is skipped rather than costing the span."""
    if type(events) is not list or not events:
        return ()
    decoded: list[RawEvent] = []
    for index in _event_indexes(len(events)):
        event = events[index]
        if type(event) is not dict:
            continue
        name = event.get("name", "")
        if type(name) is not str:
            continue
        try:
            time_ns = _json_uint64(_get(event, "timeUnixNano", "time_unix_nano"), "event timeUnixNano")
            attributes = _json_attributes(event.get("attributes"))
        except SpanRejected:
            continue
        decoded.append(RawEvent(name, time_ns, attributes))
    return tuple(decoded)


def _json_resource(resource_spans: dict[str, Any]) -> dict[str, Any]:
    resource = resource_spans.get("resource")
    if resource is None:
        return {}
    if type(resource) is not dict:
        raise SpanRejected("resource is not an object")
    return _json_attributes(resource.get("attributes"))


def _json_scope(scope_spans: dict[str, Any]) -> tuple[str, str]:
    scope = scope_spans.get("scope")
    if scope is None:
        return "", ""
    if type(scope) is not dict:
        raise SpanRejected("scope is not an object")
    name = scope.get("name", "")
    version = scope.get("version", "")
    if type(name) is not str or type(version) is not str:
        raise SpanRejected("scope name and version must be strings")
    return name, version


def _reject_all(rejections: list[str], where: str, exc: SpanRejected, scope_spans_list: list[Any]) -> None:
    """One message per span lost, so the partial-success count stays true."""
    count = 0
    for scope_spans in scope_spans_list:
        span_list = scope_spans.get("spans") if type(scope_spans) is dict else None
        count += len(span_list) if type(span_list) is list else 0
    rejections.extend([f"{where}: {exc}"] * count)


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    # The OTLP/JSON spec asks receivers to accept the proto field names as well.
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _json_id(value: Any, what: str) -> bytes:
    if type(value) is str:
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise SpanRejected(
                f"{what} {value[:48]!r} is not hex (OTLP/JSON encodes trace and span ids as hex, not base64)"
            ) from None
    if not value:  # absent or null
        return b""
    raise SpanRejected(f"{what} is a JSON {_json_type(value)}, expected a hex string")


def _json_uint64(value: Any, what: str) -> int:
    kind = type(value)
    if kind is int:
        result: int = value
    elif kind is str:
        try:
            result = int(value)
        except ValueError:
            raise SpanRejected(f"{what} {value[:32]!r} is not an integer") from None
    elif value is None:
        return 0
    elif kind is float and value.is_integer():
        result = int(value)
    else:
        raise SpanRejected(f"{what} is a JSON {_json_type(value)}, expected an integer or a string of digits")
    if result < 0:
        raise SpanRejected(f"{what} is negative")
    return result


def _json_enum(value: Any, by_name: dict[str, int], what: str) -> int:
    if value is None:
        return 0
    if type(value) is int:
        return value
    if type(value) is str and value in by_name:
        return by_name[value]
    raise SpanRejected(f"{what} {str(value)[:40]!r} is not a valid enum value")


_SPAN_KIND_BY_NAME = {f"SPAN_KIND_{name.upper()}": number for number, name in SPAN_KIND_NAMES.items()}
_STATUS_CODE_BY_NAME = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def _json_attributes(key_values: Any) -> dict[str, Any]:
    if not key_values:
        return {}
    if type(key_values) is not list:
        raise SpanRejected("attributes is not an array")
    attributes: dict[str, Any] = {}
    for kv in key_values:
        if type(kv) is not dict:
            raise SpanRejected("an attribute is not an object with key and value")
        key = kv.get("key")
        if type(key) is not str:
            raise SpanRejected("an attribute key is not a string")
        value = kv.get("value")
        if value is None:
            continue
        # Fast path for the common shape {"stringValue": "..."}; everything else, and every
        # malformed value, goes through the general decoder.
        if type(value) is dict and len(value) == 1:
            text = value.get("stringValue")
            if type(text) is str:
                attributes[key] = text
                continue
        decoded = _json_any_value(value, key, 0)
        if decoded is not _EMPTY:
            attributes[key] = decoded
    return attributes


_EMPTY: Any = object()


def _json_any_value(value: Any, key: str, depth: int) -> Any:
    if type(value) is not dict:
        raise SpanRejected(f"attribute {key!r}: value is a JSON {_json_type(value)}, expected an AnyValue object")
    for field, inner in value.items():
        decode = _ANY_VALUE_DECODERS.get(field)
        if decode is not None:
            return decode(inner, key, depth)
    return _EMPTY


def _any_string(inner: Any, key: str, depth: int) -> Any:
    if type(inner) is not str:
        raise SpanRejected(f"attribute {key!r}: stringValue is not a string")
    return inner


def _any_bool(inner: Any, key: str, depth: int) -> Any:
    if type(inner) is not bool:
        raise SpanRejected(f"attribute {key!r}: boolValue is not true or false")
    return inner


def _any_int(inner: Any, key: str, depth: int) -> Any:
    kind = type(inner)
    try:
        if kind is int:
            number: int = inner
        elif kind is str or (kind is float and inner.is_integer()):
            number = int(inner)
        else:
            raise ValueError
    except ValueError:
        raise SpanRejected(f"attribute {key!r}: intValue {str(inner)[:32]!r} is not an integer") from None
    if not -_MAX_INT64 - 1 <= number <= _MAX_INT64:
        raise SpanRejected(f"attribute {key!r}: intValue {str(inner)[:32]!r} does not fit 64 bits")
    return number


def _any_double(inner: Any, key: str, depth: int) -> Any:
    if type(inner) is float:
        return inner
    if type(inner) is int:
        return float(inner)
    if type(inner) is str:
        # Proto3 JSON writes NaN and the infinities as strings, and allows numbers as strings.
        try:
            result = float(inner)
        except ValueError:
            pass
        else:
            if math.isfinite(result) or inner in ("NaN", "Infinity", "-Infinity"):
                return result
    raise SpanRejected(f"attribute {key!r}: doubleValue {str(inner)[:32]!r} is not a number")


def _any_bytes(inner: Any, key: str, depth: int) -> Any:
    # Only trace/span ids are hex in OTLP/JSON; bytesValue keeps the proto3 base64.
    if type(inner) is str:
        try:
            return base64.b64decode(inner, validate=True).hex()
        except (binascii.Error, ValueError):
            try:
                return base64.urlsafe_b64decode(inner).hex()
            except (binascii.Error, ValueError):
                pass
    raise SpanRejected(f"attribute {key!r}: bytesValue is not base64")


def _any_array(inner: Any, key: str, depth: int) -> Any:
    if depth >= _MAX_VALUE_DEPTH:
        raise SpanRejected(f"attribute {key!r} nests deeper than {_MAX_VALUE_DEPTH} levels")
    if type(inner) is not dict:
        raise SpanRejected(f"attribute {key!r}: arrayValue is not an object")
    items = inner.get("values") or []
    if type(items) is not list:
        raise SpanRejected(f"attribute {key!r}: arrayValue.values is not an array")
    result = []
    for item in items:
        decoded = _json_any_value(item, key, depth + 1)
        result.append(None if decoded is _EMPTY else decoded)
    return result


def _any_kvlist(inner: Any, key: str, depth: int) -> Any:
    if depth >= _MAX_VALUE_DEPTH:
        raise SpanRejected(f"attribute {key!r} nests deeper than {_MAX_VALUE_DEPTH} levels")
    if type(inner) is not dict:
        raise SpanRejected(f"attribute {key!r}: kvlistValue is not an object")
    items = inner.get("values") or []
    if type(items) is not list:
        raise SpanRejected(f"attribute {key!r}: kvlistValue.values is not an array")
    result = {}
    for kv in items:
        if type(kv) is not dict or type(kv.get("key")) is not str:
            raise SpanRejected(f"attribute {key!r}: a kvlistValue entry has no string key")
        value = kv.get("value")
        decoded = _EMPTY if value is None else _json_any_value(value, key, depth + 1)
        result[kv["key"]] = None if decoded is _EMPTY else decoded
    return result


_ANY_VALUE_DECODERS = {
    "stringValue": _any_string,
    "string_value": _any_string,
    "intValue": _any_int,
    "int_value": _any_int,
    "doubleValue": _any_double,
    "double_value": _any_double,
    "boolValue": _any_bool,
    "bool_value": _any_bool,
    "arrayValue": _any_array,
    "array_value": _any_array,
    "kvlistValue": _any_kvlist,
    "kvlist_value": _any_kvlist,
    "bytesValue": _any_bytes,
    "bytes_value": _any_bytes,
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


def _byte_offset(body: bytes, char_pos: int) -> int:
    # orjson reports a character offset; clients look at bytes.
    try:
        return len(bytes(body).decode("utf-8", "replace")[:char_pos].encode("utf-8"))
    except Exception:  # the offset is a courtesy; never fail the error path over it
        return char_pos
