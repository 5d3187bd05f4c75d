"""OTLP decoding: real encoders in, exact RawSpans out; bad input rejected precisely."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_spans_json
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_spans_protobuf
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from collectors.otlp import decode_traces_json, decode_traces_protobuf
from collectors.records import MAX_EVENTS_READ, PayloadError, RawSpan

TRACE_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_HEX = "eee19b7ec3c1b174"
PARENT_HEX = "eee19b7ec3c1b173"
START_NS = 1_764_000_000_000_000_000
END_NS = START_NS + 1_500_000_000


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sdk_spans() -> list[ReadableSpan]:
    """A parent and a child LLM span from the real SDK, as an instrumentation would make them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "checkout", "deployment.environment.name": "prod"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2", "2.4b0")
    chat_attributes = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.request.temperature": 0.25,
        "gen_ai.is_streaming": False,
        "gen_ai.response.finish_reasons": ("stop", "length"),
        "gen_ai.request.stop_sequences": ["\n\n", "END"],
    }
    with (
        tracer.start_as_current_span("handle_request", attributes={"tenant.id": "acme", "app.feature": "search"}),
        tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=chat_attributes) as span,
    ):
        span.set_status(Status(StatusCode.ERROR, "upstream returned 529"))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _by_name(spans: list[RawSpan]) -> dict[str, RawSpan]:
    return {span.name: span for span in spans}


# --------------------------------------------------------------------------- protobuf


def test_protobuf_from_the_sdk_encoder(sdk_spans: list[ReadableSpan]) -> None:
    body = encode_spans_protobuf(sdk_spans).SerializeToString()

    spans, rejections = decode_traces_protobuf(body)

    assert rejections == []
    decoded = _by_name(spans)
    sdk = {span.name: span for span in sdk_spans}
    chat, root = decoded["chat gpt-4o-mini"], decoded["handle_request"]
    sdk_chat = sdk["chat gpt-4o-mini"]
    assert chat.trace_id == sdk_chat.context.trace_id.to_bytes(16, "big")
    assert chat.span_id == sdk_chat.context.span_id.to_bytes(8, "big")
    assert chat.parent_span_id == root.span_id
    assert root.parent_span_id is None
    assert chat.trace_id == root.trace_id
    assert (chat.start_ns, chat.end_ns) == (sdk_chat.start_time, sdk_chat.end_time)
    assert chat.kind == 3  # CLIENT
    assert root.kind == 1  # INTERNAL
    assert (chat.status_code, chat.status_message) == (2, "upstream returned 529")
    assert (root.status_code, root.status_message) == (0, "")
    assert chat.attributes == {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.request.temperature": 0.25,
        "gen_ai.is_streaming": False,
        "gen_ai.response.finish_reasons": ["stop", "length"],
        "gen_ai.request.stop_sequences": ["\n\n", "END"],
    }
    assert root.attributes == {"tenant.id": "acme", "app.feature": "search"}
    assert chat.resource["service.name"] == "checkout"
    assert chat.resource["deployment.environment.name"] == "prod"
    assert chat.resource["telemetry.sdk.language"] == "python"
    assert (chat.scope_name, chat.scope_version) == ("opentelemetry.instrumentation.openai_v2", "2.4b0")


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value={"values": [_any(item) for item in value]})
    if isinstance(value, dict):
        return AnyValue(kvlist_value={"values": [KeyValue(key=k, value=_any(v)) for k, v in value.items()]})
    return AnyValue(string_value=value)


def _pb_span(**overrides: Any) -> trace_pb2.Span:
    fields: dict[str, Any] = {
        "trace_id": bytes.fromhex(TRACE_HEX),
        "span_id": bytes.fromhex(SPAN_HEX),
        "parent_span_id": bytes.fromhex(PARENT_HEX),
        "name": "openai.chat",
        "kind": trace_pb2.Span.SPAN_KIND_CLIENT,
        "start_time_unix_nano": START_NS,
        "end_time_unix_nano": END_NS,
    }
    fields.update(overrides)
    return trace_pb2.Span(**fields)


def _pb_request(spans: list[trace_pb2.Span], resource: dict[str, Any] | None = None) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, value in (resource or {"service.name": "checkout"}).items():
        resource_spans.resource.attributes.add(key=key, value=_any(value))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "opentelemetry.instrumentation.openai"
    scope_spans.scope.version = "0.62.4"
    scope_spans.spans.extend(spans)
    return request.SerializeToString()


def test_protobuf_built_with_the_proto_classes_covers_every_value_type() -> None:
    span = _pb_span(status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_OK))
    attributes = {
        "text": "hello",
        "count": -7,
        "ratio": 0.5,
        "flag": True,
        "raw": b"\x00\xffA",
        "mixed": ["a", 1, 2.5, False],
        "nested": {"inner": {"deep": "x"}, "list": [1, 2]},
    }
    for key, value in attributes.items():
        span.attributes.add(key=key, value=_any(value))
    span.attributes.add(key="empty", value=AnyValue())  # no oneof set: nothing to keep

    spans, rejections = decode_traces_protobuf(_pb_request([span], {"service.name": "svc", "replicas": 3}))

    assert rejections == []
    assert spans == [
        RawSpan(
            trace_id=bytes.fromhex(TRACE_HEX),
            span_id=bytes.fromhex(SPAN_HEX),
            parent_span_id=bytes.fromhex(PARENT_HEX),
            name="openai.chat",
            kind=3,
            start_ns=START_NS,
            end_ns=END_NS,
            status_code=1,
            status_message="",
            attributes={
                "text": "hello",
                "count": -7,
                "ratio": 0.5,
                "flag": True,
                "raw": "00ff41",
                "mixed": ["a", 1, 2.5, False],
                "nested": {"inner": {"deep": "x"}, "list": [1, 2]},
            },
            resource={"service.name": "svc", "replicas": 3},
            scope_name="opentelemetry.instrumentation.openai",
            scope_version="0.62.4",
        )
    ]


# --------------------------------------------------------------------------- JSON


def _json_span(**overrides: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": TRACE_HEX,
        "spanId": SPAN_HEX,
        "parentSpanId": PARENT_HEX,
        "name": "openai.chat",
        "kind": 3,
        "startTimeUnixNano": str(START_NS),
        "endTimeUnixNano": str(END_NS),
        "attributes": [
            {"key": "text", "value": {"stringValue": "hello"}},
            {"key": "count", "value": {"intValue": "-7"}},
            {"key": "ratio", "value": {"doubleValue": 0.5}},
            {"key": "flag", "value": {"boolValue": True}},
            {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x00\xffA").decode()}},
            {
                "key": "mixed",
                "value": {
                    "arrayValue": {
                        "values": [{"stringValue": "a"}, {"intValue": 1}, {"doubleValue": 2.5}, {"boolValue": False}]
                    }
                },
            },
            {
                "key": "nested",
                "value": {
                    "kvlistValue": {
                        "values": [
                            {
                                "key": "inner",
                                "value": {"kvlistValue": {"values": [{"key": "deep", "value": {"stringValue": "x"}}]}},
                            },
                            {"key": "list", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"intValue": 2}]}}},
                        ]
                    }
                },
            },
            {"key": "empty", "value": {}},
        ],
        "status": {"code": 1},
    }
    span.update(overrides)
    return span


def _json_request(spans: list[Any], resource: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": resource
                    or {
                        "attributes": [
                            {"key": "service.name", "value": {"stringValue": "svc"}},
                            {"key": "replicas", "value": {"intValue": "3"}},
                        ]
                    },
                    "scopeSpans": [
                        {
                            "scope": {"name": "opentelemetry.instrumentation.openai", "version": "0.62.4"},
                            "spans": spans,
                        }
                    ],
                }
            ]
        }
    )


def test_hand_written_json_decodes_to_the_same_span_as_protobuf() -> None:
    pb_span = _pb_span(status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_OK))
    for key, value in {
        "text": "hello",
        "count": -7,
        "ratio": 0.5,
        "flag": True,
        "raw": b"\x00\xffA",
        "mixed": ["a", 1, 2.5, False],
        "nested": {"inner": {"deep": "x"}, "list": [1, 2]},
    }.items():
        pb_span.attributes.add(key=key, value=_any(value))
    from_protobuf, _ = decode_traces_protobuf(_pb_request([pb_span], {"service.name": "svc", "replicas": 3}))

    from_json, rejections = decode_traces_json(_json_request([_json_span()]))

    assert rejections == []
    assert from_json == from_protobuf
    assert from_json[0].trace_id == bytes.fromhex(TRACE_HEX)
    assert from_json[0].start_ns == START_NS
    assert from_json[0].attributes["nested"] == {"inner": {"deep": "x"}, "list": [1, 2]}


def test_json_accepts_snake_case_names_numbers_for_int64_and_enum_names() -> None:
    span = {
        "trace_id": TRACE_HEX.upper(),
        "span_id": SPAN_HEX,
        "name": "llm_request",
        "kind": "SPAN_KIND_SERVER",
        "start_time_unix_nano": START_NS,
        "end_time_unix_nano": END_NS,
        "attributes": [
            {"key": "gen_ai.usage.prompt_tokens", "value": {"int_value": 12}},
            {"key": "gen_ai.latency.e2e", "value": {"double_value": "1.5"}},
            {"key": "weird", "value": {"doubleValue": "NaN"}},
        ],
        "status": {"code": "STATUS_CODE_ERROR", "message": "aborted"},
    }
    body = orjson.dumps({"resource_spans": [{"scope_spans": [{"spans": [span]}]}]})

    (decoded,), rejections = decode_traces_json(body)

    assert rejections == []
    assert decoded.trace_id == bytes.fromhex(TRACE_HEX)
    assert decoded.parent_span_id is None
    assert (decoded.kind, decoded.status_code, decoded.status_message) == (2, 2, "aborted")
    assert (decoded.start_ns, decoded.end_ns) == (START_NS, END_NS)
    assert decoded.attributes["gen_ai.usage.prompt_tokens"] == 12
    assert decoded.attributes["gen_ai.latency.e2e"] == 1.5
    assert decoded.attributes["weird"] != decoded.attributes["weird"]  # NaN
    assert (decoded.resource, decoded.scope_name, decoded.scope_version) == ({}, "", "")


def test_json_from_the_otel_json_encoder_matches_protobuf(sdk_spans: list[ReadableSpan]) -> None:
    json_body = encode_spans_json(sdk_spans).to_json().encode()
    protobuf_body = encode_spans_protobuf(sdk_spans).SerializeToString()

    from_json, json_rejections = decode_traces_json(json_body)
    from_protobuf, protobuf_rejections = decode_traces_protobuf(protobuf_body)

    assert json_rejections == protobuf_rejections == []
    assert len(from_json) == 2
    assert from_json == from_protobuf
    chat = _by_name(from_json)["chat gpt-4o-mini"]
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["stop", "length"]
    assert chat.status_code == 2


def test_an_empty_request_is_valid() -> None:
    assert decode_traces_json(b"{}") == ([], [])
    assert decode_traces_json(b'{"resourceSpans": []}') == ([], [])
    assert decode_traces_protobuf(b"") == ([], [])


# --------------------------------------------------------------------------- bad payloads


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"resourceSpans": [}', "body is not valid JSON: unexpected character"),
        (b"", "body is not valid JSON: Input is a zero-length, empty document at byte 0"),
        (b"\xff\xfe{}", "body is not valid JSON: str is not valid UTF-8"),
        (b"[]", "body is a JSON array, not an OTLP ExportTraceServiceRequest object"),
        (b'"resourceSpans"', "body is a JSON string, not an OTLP ExportTraceServiceRequest object"),
        (b'{"resourceSpans": {"scopeSpans": []}}', "resourceSpans is a JSON object, expected an array"),
        (b'{"resourceSpans": "x"}', "resourceSpans is a JSON string, expected an array"),
    ],
)
def test_json_payload_errors_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        decode_traces_json(body)


def test_json_syntax_error_names_the_byte_offset_not_the_character() -> None:
    body = '{"name": "héllo", x}'.encode()  # the é is two bytes

    with pytest.raises(PayloadError) as error:
        decode_traces_json(body)

    assert str(error.value).startswith("body is not valid JSON: ")
    assert f"at byte {body.index(b'x')} " in str(error.value)


def test_protobuf_payload_errors(sdk_spans: list[ReadableSpan]) -> None:
    body = encode_spans_protobuf(sdk_spans).SerializeToString()

    with pytest.raises(PayloadError, match=r"^body is not an OTLP ExportTraceServiceRequest protobuf \(\d+ bytes\)"):
        decode_traces_protobuf(body[: len(body) // 2])
    with pytest.raises(PayloadError, match="it looks like JSON: send it with Content-Type: application/json"):
        decode_traces_protobuf(encode_spans_json(sdk_spans).to_json().encode())
    with pytest.raises(PayloadError, match="it looks gzip-compressed"):
        decode_traces_protobuf(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")


def test_json_bad_span_is_rejected_alone() -> None:
    good = _json_span(spanId="00000000000000aa")
    not_hex = _json_span(spanId="zz0000000000000b")
    base64_id = _json_span(traceId=base64.b64encode(bytes.fromhex(TRACE_HEX)).decode())
    zero_trace = _json_span(traceId="0" * 32)
    zero_span = _json_span(spanId="0" * 16)
    short_trace = _json_span(traceId=TRACE_HEX[:30])
    backwards = _json_span(endTimeUnixNano=str(START_NS - 1))
    no_start = _json_span(startTimeUnixNano="0")
    milliseconds = _json_span(startTimeUnixNano="1764000000000", endTimeUnixNano="1764000001000")
    bad_attribute = _json_span(attributes=[{"key": "n", "value": {"intValue": "many"}}])
    huge_attribute = _json_span(attributes=[{"key": "n", "value": {"intValue": str(2**64)}}])
    not_an_object = "span"
    body = _json_request(
        [
            good,
            not_hex,
            base64_id,
            zero_trace,
            zero_span,
            short_trace,
            backwards,
            no_start,
            milliseconds,
            bad_attribute,
            huge_attribute,
            not_an_object,
        ]
    )

    spans, rejections = decode_traces_json(body)

    assert [span.span_id.hex() for span in spans] == ["00000000000000aa"]
    where = "resourceSpans[0].scopeSpans[0].spans"
    assert rejections == [
        f"{where}[1] (span zz0000000000000b): span id 'zz0000000000000b' is not hex"
        " (OTLP/JSON encodes trace and span ids as hex, not base64)",
        f"{where}[2] (span {SPAN_HEX}): trace id {base64_id['traceId']!r} is not hex"
        " (OTLP/JSON encodes trace and span ids as hex, not base64)",
        f"{where}[3] (span {SPAN_HEX}): trace id is all zeros",
        f"{where}[4] (span 0000000000000000): span id is all zeros",
        f"{where}[5] (span {SPAN_HEX}): trace id is 15 bytes, expected 16",
        f"{where}[6] (span {SPAN_HEX}): end time {START_NS - 1} is before start time {START_NS}",
        f"{where}[7] (span {SPAN_HEX}): start time is missing (0)",
        f"{where}[8] (span {SPAN_HEX}): start time 1764000000000 is before 2000-01-01: OTLP times are unix nanoseconds",
        f"{where}[9] (span {SPAN_HEX}): attribute 'n': intValue 'many' is not an integer",
        f"{where}[10] (span {SPAN_HEX}): attribute 'n': intValue '18446744073709551616' does not fit 64 bits",
        f"{where}[11]: span is a JSON string, expected an object",
    ]


def test_json_bad_resource_rejects_each_of_its_spans() -> None:
    body = _json_request([_json_span(), _json_span()], resource={"attributes": "service.name=x"})

    spans, rejections = decode_traces_json(body)

    assert spans == []
    assert rejections == ["resourceSpans[0].resource: attributes is not an array"] * 2


def test_protobuf_bad_ids_and_times_reject_only_that_span() -> None:
    spans = [
        _pb_span(),
        _pb_span(trace_id=bytes(16)),
        _pb_span(span_id=b"\x01" * 7),
        _pb_span(parent_span_id=b"\x01" * 4),
        _pb_span(end_time_unix_nano=START_NS - 1),
        _pb_span(start_time_unix_nano=0),
        _pb_span(start_time_unix_nano=2**64 - 2, end_time_unix_nano=2**64 - 1),
        _pb_span(parent_span_id=bytes(8), span_id=b"\x02" * 8),  # all-zero parent: a root span
    ]

    decoded, rejections = decode_traces_protobuf(_pb_request(spans))

    assert [(span.span_id.hex(), span.parent_span_id) for span in decoded] == [
        (SPAN_HEX, bytes.fromhex(PARENT_HEX)),
        ("0202020202020202", None),
    ]
    where = "resourceSpans[0].scopeSpans[0].spans"
    assert rejections == [
        f"{where}[1] (span {SPAN_HEX}): trace id is all zeros",
        f"{where}[2] (span 01010101010101): span id is 7 bytes, expected 8",
        f"{where}[3] (span {SPAN_HEX}): parent span id is 4 bytes, expected 8 (or empty for a root span)",
        f"{where}[4] (span {SPAN_HEX}): end time {START_NS - 1} is before start time {START_NS}",
        f"{where}[5] (span {SPAN_HEX}): start time is missing (0)",
        f"{where}[6] (span {SPAN_HEX}): start or end time is beyond 2262"
        " (does not fit a signed 64-bit nanosecond count)",
    ]


def test_json_nesting_beyond_the_limit_rejects_the_span_not_the_process() -> None:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(60):  # orjson itself refuses to write much deeper
        value = {"arrayValue": {"values": [value]}}
    body = _json_request([_json_span(attributes=[{"key": "deep", "value": value}])])

    spans, rejections = decode_traces_json(body)

    assert spans == []
    assert rejections[0].endswith("attribute 'deep' nests deeper than 32 levels")


# --------------------------------------------------------------------------- fuzz


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 4 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 2**63, 2**64 + 5, START_NS, rng.randrange(-(10**6), 10**6)])
    if choice == 3:
        return rng.choice([0.5, -1e300, 1e-300, float(START_NS)])
    if choice in (4, 5):
        return rng.choice(["", "x", TRACE_HEX, SPAN_HEX, "NaN", str(START_NS), "zz", "SPAN_KIND_SERVER", "\u00e9"])
    if choice == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [
        "resourceSpans",
        "scopeSpans",
        "spans",
        "resource",
        "attributes",
        "key",
        "value",
        "stringValue",
        "intValue",
        "doubleValue",
        "boolValue",
        "bytesValue",
        "arrayValue",
        "kvlistValue",
        "values",
        "traceId",
        "spanId",
        "parentSpanId",
        "startTimeUnixNano",
        "endTimeUnixNano",
        "status",
        "code",
        "message",
        "kind",
        "name",
        "scope",
        "version",
    ]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def _mutations(document: Any, rng: random.Random) -> Iterator[Any]:
    """The document with one node replaced by random JSON, for a sample of its nodes."""
    paths: list[list[Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, [*path, key])
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, [*path, index])

    walk(document, [])
    for path in rng.sample(paths, min(len(paths), 150)):
        mutated = orjson.loads(orjson.dumps(document))
        if not path:
            yield _random_json(rng)
            continue
        parent = mutated
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = _random_json(rng)
        yield mutated


def _dumps(document: Any) -> bytes:
    # The standard library writes integers beyond 64 bits, which clients can send too.
    return json.dumps(document).encode()


def _decode_or_payload_error(decode: Any, body: bytes) -> None:
    try:
        spans, rejections = decode(body)
    except PayloadError as error:
        assert str(error)
        return
    assert all(isinstance(span, RawSpan) for span in spans)
    assert all(isinstance(message, str) and message for message in rejections)


def test_fuzz_json_never_raises_anything_but_payload_error() -> None:
    rng = random.Random(20261121)
    valid = orjson.loads(_json_request([_json_span(), _json_span(spanId="00000000000000bb")]))
    for mutated in _mutations(valid, rng):
        _decode_or_payload_error(decode_traces_json, _dumps(mutated))
    for _ in range(300):
        _decode_or_payload_error(decode_traces_json, _dumps(_random_json(rng)))
        _decode_or_payload_error(decode_traces_json, _dumps({"resourceSpans": [_random_json(rng)]}))
        _decode_or_payload_error(decode_traces_json, rng.randbytes(rng.randrange(64)))


def test_fuzz_protobuf_never_raises_anything_but_payload_error(sdk_spans: list[ReadableSpan]) -> None:
    rng = random.Random(20261122)
    valid = encode_spans_protobuf(sdk_spans).SerializeToString()
    for _ in range(400):
        mutated = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        _decode_or_payload_error(decode_traces_protobuf, bytes(mutated))
        _decode_or_payload_error(decode_traces_protobuf, rng.randbytes(rng.randrange(256)))


# --------------------------------------------------------------------------- span events


def _span_with_events() -> list[ReadableSpan]:
    """A streamed call as OpenInference records it: a first-token event, then a failure."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("openinference.instrumentation.openai")
    with tracer.start_as_current_span("ChatCompletion", record_exception=False, set_status_on_exception=False) as span:
        span.add_event("First Token Stream Event", timestamp=START_NS + 250_000_000)
        span.add_event("tagged", {"n": 3, "tags": ["a", "b"]}, timestamp=START_NS + 260_000_000)
        span.record_exception(TimeoutError("the stream stalled"), timestamp=START_NS + 900_000_000)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_span_events_decode_from_protobuf_and_json_alike() -> None:
    sdk_spans = _span_with_events()

    from_protobuf, protobuf_rejections = decode_traces_protobuf(encode_spans_protobuf(sdk_spans).SerializeToString())
    from_json, json_rejections = decode_traces_json(encode_spans_json(sdk_spans).to_json().encode())

    assert protobuf_rejections == json_rejections == []
    assert from_json == from_protobuf
    (span,) = from_protobuf
    assert [(event.name, event.time_unix_nano) for event in span.events] == [
        ("First Token Stream Event", START_NS + 250_000_000),
        ("tagged", START_NS + 260_000_000),
        ("exception", START_NS + 900_000_000),
    ]
    assert span.events[0].attributes == {}
    assert span.events[1].attributes == {"n": 3, "tags": ["a", "b"]}
    assert span.events[2].attributes["exception.type"] == "TimeoutError"
    assert span.events[2].attributes["exception.message"] == "the stream stalled"


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_a_span_with_100k_events_is_read_from_both_ends_only(encoding: str) -> None:
    # One event per streamed chunk, as OpenLLMetry records them, and an exception at the end:
    # the decoder keeps 16 from each end, so memory and time stay those of a small span.
    count = 100_000
    names = ["gen_ai.content.completion.chunk"] * (count - 1) + ["exception"]
    if encoding == "protobuf":
        events = [
            trace_pb2.Span.Event(name=name, time_unix_nano=START_NS + index, attributes=[_kv("i", index)])
            for index, name in enumerate(names)
        ]
        body = _pb_request([_pb_span(events=events)])
        spans, rejections = decode_traces_protobuf(body)
    else:
        json_events = [
            {"name": name, "timeUnixNano": str(START_NS + index), "attributes": [_json_kv("i", index)]}
            for index, name in enumerate(names)
        ]
        spans, rejections = decode_traces_json(_json_request([_json_span(events=json_events)]))

    assert rejections == []
    (span,) = spans
    assert len(span.events) == MAX_EVENTS_READ == 32
    kept = [event.attributes["i"] for event in span.events]
    assert kept == [*range(16), *range(count - 16, count)]
    assert span.events[0].time_unix_nano == START_NS
    assert span.events[-1].name == "exception"


def test_json_malformed_events_are_skipped_and_the_span_kept() -> None:
    events: list[Any] = [
        "not an object",
        {"name": 7, "timeUnixNano": str(START_NS)},
        {"name": "bad time", "timeUnixNano": "soon"},
        {"name": "bad attribute", "timeUnixNano": str(START_NS), "attributes": [{"key": "k", "value": 5}]},
        {"name": "First Token Stream Event", "time_unix_nano": START_NS + 5},
        {"name": "no time"},
    ]
    spans, rejections = decode_traces_json(_json_request([_json_span(events=events)]))

    assert rejections == []
    (span,) = spans
    assert span.attributes["text"] == "hello"
    assert [(event.name, event.time_unix_nano) for event in span.events] == [
        ("First Token Stream Event", START_NS + 5),
        ("no time", 0),
    ]
    # Not a list at all: no events, still the span.
    spans, rejections = decode_traces_json(_json_request([_json_span(events={"name": "x"})]))
    assert rejections == [] and spans[0].events == ()


def _kv(key: str, value: int) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(int_value=value))


def _json_kv(key: str, value: int) -> dict[str, Any]:
    return {"key": key, "value": {"intValue": str(value)}}
