"""The receiver as a hostile client sees it: every malformed, oversized or absurd request
gets a precise 4xx or a per-span rejection in partial_success, never a 500, and what was
accepted before is still stored exactly once afterwards.

Each case runs against a live server (pytest-django's live_server: the real WSGI stack on
a socket, the real PostgreSQL): a good batch first, then the hostile request, then the good
batch again (a retry), and the stored rows are counted.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from apps.accounts.models import IngestKey, Project
from apps.telemetry.models import Span
from tests.otlp_helpers import LLM_ATTRIBUTES, json_body, make_traces, protobuf_body
from tests.support.receiver import JSON, PROTOBUF, assert_stored_once, post, span_keys

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Hostile:
    body: bytes
    status: int
    content_type: str | None = PROTOBUF
    headers: dict[str, str] = field(default_factory=dict)
    content_length: str | None = None
    # For a 200: spans rejected one by one, and rows the batch adds.
    rejected: int = 0
    stored: int = 0
    # In the answer's message (error body or partial_success).
    says: str = ""
    # Checked on the stored rows after the request.
    check: Callable[[], None] | None = None


HOSTILE_SERVICE = "hostile-client"


def _traces(count: int, **kwargs: Any) -> list[Any]:
    """The hostile request's spans: their own service, so checks tell them from the good batch."""
    return make_traces(count, service=HOSTILE_SERVICE, **kwargs)


def _hostile_spans() -> Any:
    return Span.objects.filter(service_name=HOSTILE_SERVICE)


def _pb(spans: list[Any]) -> Any:
    return encode_spans(spans)


def _first_span(request_pb: Any) -> Any:
    return request_pb.resource_spans[0].scope_spans[0].spans[0]


def _json_doc(spans: list[Any]) -> dict[str, Any]:
    return json.loads(json_body(spans))


def _json_first_span(document: dict[str, Any]) -> dict[str, Any]:
    return document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]


def _dumps(document: Any) -> bytes:
    return json.dumps(document).encode()


# --------------------------------------------------------------------------- the cases


def wrong_content_type() -> Hostile:
    return Hostile(protobuf_body(_traces(1)), 415, content_type="text/plain", says="Content-Type")


def no_content_type() -> Hostile:
    return Hostile(protobuf_body(_traces(1)), 415, content_type=None, says="Content-Type")


def json_in_latin1() -> Hostile:
    return Hostile(json_body(_traces(1)), 415, content_type=f"{JSON}; charset=latin-1", says="charset")


def json_with_utf8_charset_and_odd_case() -> Hostile:
    return Hostile(json_body(_traces(1)), 200, content_type='Application/JSON; Charset="UTF-8"', stored=2)


def protobuf_labelled_json() -> Hostile:
    return Hostile(protobuf_body(_traces(1)), 400, content_type=JSON, says="JSON")


def json_labelled_protobuf() -> Hostile:
    return Hostile(json_body(_traces(1)), 400, says="looks like JSON")


def empty_protobuf_body() -> Hostile:
    return Hostile(b"", 200)  # an empty ExportTraceServiceRequest is a valid, empty export


def empty_json_body() -> Hostile:
    return Hostile(b"", 400, content_type=JSON, says="not valid JSON")


def truncated_protobuf() -> Hostile:
    body = protobuf_body(_traces(3))
    return Hostile(body[: len(body) - 7], 400, says="protobuf")


def protobuf_length_beyond_the_body() -> Hostile:
    # Field 1 (resource_spans), length-delimited, declaring 2 GB.
    return Hostile(b"\x0a\xff\xff\xff\xff\x07" + b"x" * 20, 400, says="protobuf")


def non_utf8_string_in_protobuf() -> Hostile:
    body = protobuf_body(_traces(1))
    at = body.index(b"POST /chat")
    return Hostile(body[:at] + b"\xff\xfeST /chat" + body[at + 10 :], 400, says="UTF-8")


def json_nested_100k_deep() -> Hostile:
    return Hostile(b"[" * 100_000 + b"]" * 100_000, 400, content_type=JSON, says="JSON")


def json_attribute_nested_40_deep() -> Hostile:
    document = _json_doc(_traces(1))
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(40):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    _json_first_span(document)["attributes"].append({"key": "deep", "value": value})
    return Hostile(_dumps(document), 200, content_type=JSON, rejected=1, stored=1, says="deeper")


def json_number_beyond_double() -> Hostile:
    body = json_body(_traces(1)).replace(b'"resourceSpans"', b'"x": 1e400, "resourceSpans"', 1)
    return Hostile(body, 400, content_type=JSON, says="JSON")


def huge_attribute_array() -> Hostile:
    request_pb = _pb(_traces(1))
    attribute = _first_span(request_pb).attributes.add(key="huge.array")
    attribute.value.array_value.values.extend([type(attribute.value)(int_value=7)] * 300_000)

    def check() -> None:
        first = _hostile_spans().get(name="chat gpt-4o-mini")  # encode_spans puts the child first
        assert "huge.array" not in first.attributes or len(json.dumps(first.attributes)) < 20_000
        assert first.attributes.get("_truncated") is True

    return Hostile(request_pb.SerializeToString(), 200, stored=2, check=check)


def huge_finish_reasons_array() -> Hostile:
    spans = _traces(1, llm_attributes={**LLM_ATTRIBUTES, "gen_ai.response.finish_reasons": ["stop"] * 100_000})

    def check() -> None:
        llm = _hostile_spans().get(is_llm=True)
        assert llm.finish_reasons == ["stop"] * 16
        assert "finish_reasons" in llm.attributes["observatory.truncated"]

    return Hostile(protobuf_body(spans), 200, stored=2, check=check)


def tokens_1e308_as_double() -> Hostile:
    spans = _traces(1, llm_attributes={**LLM_ATTRIBUTES, "gen_ai.usage.input_tokens": 1e308})
    return Hostile(protobuf_body(spans), 200, rejected=1, stored=1, says="input_tokens")


def tokens_1e308_as_json_int_string() -> Hostile:
    document = _json_doc(_traces(1))
    llm = next(s for s in document["resourceSpans"][0]["scopeSpans"][0]["spans"] if s["name"].startswith("chat"))
    llm["attributes"].append({"key": "gen_ai.usage.output_tokens", "value": {"intValue": "1e308"}})
    return Hostile(_dumps(document), 200, content_type=JSON, rejected=1, stored=1, says="intValue")


def ttft_1e308_seconds() -> Hostile:
    spans = _traces(1, llm_attributes={**LLM_ATTRIBUTES, "gen_ai.response.time_to_first_chunk": 1e308})
    return Hostile(protobuf_body(spans), 200, rejected=1, stored=1, says="ttft_ms")


def negative_duration() -> Hostile:
    request_pb = _pb(_traces(1))
    span = _first_span(request_pb)
    span.end_time_unix_nano = span.start_time_unix_nano - 1
    return Hostile(request_pb.SerializeToString(), 200, rejected=1, stored=1, says="before start time")


def start_beyond_2262_in_json() -> Hostile:
    document = _json_doc(_traces(1))
    _json_first_span(document)["startTimeUnixNano"] = "99999999999999999999999"
    return Hostile(_dumps(document), 200, content_type=JSON, rejected=1, stored=1, says="2262")


def negative_start_in_json() -> Hostile:
    document = _json_doc(_traces(1))
    _json_first_span(document)["startTimeUnixNano"] = -5
    return Hostile(_dumps(document), 200, content_type=JSON, rejected=1, stored=1, says="negative")


def trace_id_of_15_bytes() -> Hostile:
    request_pb = _pb(_traces(1))
    _first_span(request_pb).trace_id = b"\x01" * 15
    return Hostile(request_pb.SerializeToString(), 200, rejected=1, stored=1, says="15 bytes")


def span_id_of_9_bytes() -> Hostile:
    request_pb = _pb(_traces(1))
    _first_span(request_pb).span_id = b"\x01" * 9
    return Hostile(request_pb.SerializeToString(), 200, rejected=1, stored=1, says="9 bytes")


def json_trace_id_of_5_bytes() -> Hostile:
    document = _json_doc(_traces(1))
    _json_first_span(document)["traceId"] = "0102030405"
    return Hostile(_dumps(document), 200, content_type=JSON, rejected=1, stored=1, says="5 bytes")


def json_trace_id_in_base64() -> Hostile:
    document = _json_doc(_traces(1))
    _json_first_span(document)["traceId"] = base64.b64encode(b"\x07" * 16).decode()
    return Hostile(_dumps(document), 200, content_type=JSON, rejected=1, stored=1, says="not hex")


def json_span_that_is_a_string() -> Hostile:
    document = _json_doc(_traces(1))
    document["resourceSpans"][0]["scopeSpans"][0]["spans"].append("a span?")
    return Hostile(_dumps(document), 200, content_type=JSON, rejected=1, stored=2, says="expected an object")


def json_absurd_kind_and_status() -> Hostile:
    document = _json_doc(_traces(1))
    span = _json_first_span(document)
    span["kind"] = 2**40
    span["status"] = {"code": 77, "message": "m"}

    def check() -> None:
        first = _hostile_spans().get(status_message="m")
        assert (first.kind, first.status_code) == (0, 0)

    return Hostile(_dumps(document), 200, content_type=JSON, stored=2, check=check)


def nul_characters_everywhere() -> Hostile:
    request_pb = _pb(_traces(1, tenant="ac\x00me", feature="\x00chat"))
    span = _first_span(request_pb)
    span.name = "chat\x00 /nul"
    span.status.message = "bad\x00"
    span.attributes.add(key="key\x00with.nul").value.string_value = "value\x00with nul"

    def check() -> None:
        llm = _hostile_spans().get(name="chat /nul")
        assert llm.status_message == "bad"
        assert llm.attributes["keywith.nul"] == "valuewith nul"
        root = _hostile_spans().get(parent_span_id__isnull=True)
        assert (root.tenant, root.feature) == ("acme", "chat")

    return Hostile(request_pb.SerializeToString(), 200, stored=2, check=check)


def retry_attempt_beyond_int4() -> Hostile:
    spans = _traces(1, llm_attributes={**LLM_ATTRIBUTES, "observatory.retry.attempt": 10**11})

    def check() -> None:
        llm = _hostile_spans().get(is_llm=True)
        assert llm.retry_attempt is None and llm.input_tokens == 1200

    return Hostile(protobuf_body(spans), 200, stored=2, check=check)


def attribute_key_of_100k_characters() -> Hostile:
    request_pb = _pb(_traces(1))
    _first_span(request_pb).attributes.add(key="k" * 100_000).value.string_value = "v"

    def check() -> None:
        assert all(len(key) < 20_000 for span in Span.objects.all() for key in span.attributes)

    return Hostile(request_pb.SerializeToString(), 200, stored=2, check=check)


def gzip_declared_but_not_gzip() -> Hostile:
    return Hostile(protobuf_body(_traces(1)), 400, headers={"Content-Encoding": "gzip"}, says="gzip")


def brotli_encoding() -> Hostile:
    return Hostile(b"\x0b\x02\x80", 415, headers={"Content-Encoding": "br"}, says="Content-Encoding")


def gzip_of_garbage() -> Hostile:
    return Hostile(gzip.compress(b"\xff" * 1000), 400, headers={"Content-Encoding": "gzip"}, says="protobuf")


def content_length_not_a_number() -> Hostile:
    return Hostile(b"", 400, content_length="twelve")


def content_length_negative() -> Hostile:
    return Hostile(b"", 400, content_length="-5")


def duplicate_spans_in_one_batch() -> Hostile:
    spans = _traces(1)
    return Hostile(protobuf_body(spans + spans), 200, stored=2)


CASES: list[Callable[[], Hostile]] = [
    wrong_content_type,
    no_content_type,
    json_in_latin1,
    json_with_utf8_charset_and_odd_case,
    protobuf_labelled_json,
    json_labelled_protobuf,
    empty_protobuf_body,
    empty_json_body,
    truncated_protobuf,
    protobuf_length_beyond_the_body,
    non_utf8_string_in_protobuf,
    json_nested_100k_deep,
    json_attribute_nested_40_deep,
    json_number_beyond_double,
    huge_attribute_array,
    huge_finish_reasons_array,
    tokens_1e308_as_double,
    tokens_1e308_as_json_int_string,
    ttft_1e308_seconds,
    negative_duration,
    start_beyond_2262_in_json,
    negative_start_in_json,
    trace_id_of_15_bytes,
    span_id_of_9_bytes,
    json_trace_id_of_5_bytes,
    json_trace_id_in_base64,
    json_span_that_is_a_string,
    json_absurd_kind_and_status,
    nul_characters_everywhere,
    retry_attempt_beyond_int4,
    attribute_key_of_100k_characters,
    gzip_declared_but_not_gzip,
    brotli_encoding,
    gzip_of_garbage,
    content_length_not_a_number,
    content_length_negative,
    duplicate_spans_in_one_batch,
]


def _message(answer_body: bytes, content_type: str | None, status: int) -> str:
    if status == 200:
        return ""
    if answer_body[:1] == b"{":
        return str(json.loads(answer_body).get("message", ""))
    from google.rpc import status_pb2

    try:
        return status_pb2.Status.FromString(answer_body).message
    except Exception:
        return answer_body.decode("utf-8", "replace")


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_hostile_request(live_server: Any, case: Callable[[], Hostile], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    _, key = IngestKey.issue(Project.objects.create(name="hostile"), "k")
    accepted = make_traces(2)
    assert post(live_server.url, protobuf_body(accepted), key).status == 200
    before = Span.objects.count()

    hostile = case()
    started = time.monotonic()
    answer = post(
        live_server.url, hostile.body, key, hostile.content_type, hostile.headers, content_length=hostile.content_length
    )
    elapsed = time.monotonic() - started
    assert answer.status == hostile.status, answer.body[:500]
    assert elapsed < 10, f"took {elapsed:.1f} s"
    if answer.status == 200:
        if answer.headers.get("content-type") == JSON:
            partial = json.loads(answer.body).get("partialSuccess", {})
            rejected, message = int(partial.get("rejectedSpans", 0)), partial.get("errorMessage", "")
        else:
            rejected, message = answer.partial()
        assert rejected == hostile.rejected, message
    else:
        message = _message(answer.body, hostile.content_type, answer.status)
        # Every refusal the receiver itself makes is logged (gunicorn-level refusals of a
        # malformed request never reach it).
        if hostile.content_length is None:
            assert any("ingest rejected" in r.getMessage() for r in caplog.records)
    assert hostile.says.lower() in message.lower(), message
    assert Span.objects.count() == before + hostile.stored
    if hostile.check is not None:
        hostile.check()

    # What was accepted before is there once, and a retry of it changes nothing.
    assert_stored_once(span_keys(accepted))
    assert post(live_server.url, protobuf_body(accepted), key).status == 200
    assert_stored_once(span_keys(accepted))
    assert Span.objects.count() == before + hostile.stored


def test_client_text_in_log_lines_is_escaped(live_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A span id carrying a newline and a NUL is rejected, and its log line stays one line."""
    caplog.set_level(logging.WARNING)
    _, key = IngestKey.issue(Project.objects.create(name="hostile"), "k")
    document = _json_doc(_traces(1))
    _json_first_span(document)["spanId"] = "zz\n2026-01-01 WARNING forged\x00"
    answer = post(live_server.url, _dumps(document), key, JSON)
    assert answer.status == 200
    assert json.loads(answer.body)["partialSuccess"]["rejectedSpans"] == 1
    lines = [r.getMessage() for r in caplog.records if "partial success" in r.getMessage()]
    assert len(lines) == 1
    assert "\n" not in lines[0] and "\x00" not in lines[0]
    assert "\\n2026-01-01 WARNING forged" in lines[0]
