"""Talking to a live receiver the way a client would: raw HTTP, counted rows."""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import ReadableSpan

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def partial(self) -> tuple[int, str]:
        """(rejected spans, error message) of a protobuf 200 answer."""
        parsed = trace_service_pb2.ExportTraceServiceResponse.FromString(self.body)
        return parsed.partial_success.rejected_spans, parsed.partial_success.error_message


def post(
    base_url: str,
    body: bytes,
    key: str | None,
    content_type: str | None = PROTOBUF,
    headers: dict[str, str] | None = None,
    *,
    content_length: str | None = None,
) -> Answer:
    """POST /v1/traces over a fresh connection (so gunicorn may hand it to any worker)."""
    url = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
    try:
        conn.putrequest("POST", "/v1/traces", skip_accept_encoding=True)
        if content_type is not None:
            conn.putheader("Content-Type", content_type)
        if key is not None:
            conn.putheader("Authorization", f"Bearer {key}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", content_length if content_length is not None else str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def span_keys(spans: Sequence[ReadableSpan]) -> set[tuple[str, int]]:
    """(trace id hex, signed span id) of SDK spans, as telemetry_span stores them."""
    keys = set()
    for span in spans:
        context = span.get_span_context()
        assert context is not None
        keys.add((f"{context.trace_id:032x}", int.from_bytes(context.span_id.to_bytes(8, "big"), "big", signed=True)))
    return keys


def stored_times(keys: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """How many rows each (trace id, span id) has in telemetry_span (0 when absent)."""
    counts = dict.fromkeys(keys, 0)
    with connection.cursor() as cur:
        cur.execute("SELECT replace(trace_id::text, '-', ''), span_id, count(*) FROM telemetry_span GROUP BY 1, 2")
        for trace_id, span_id, count in cur.fetchall():
            if (trace_id, span_id) in counts:
                counts[(trace_id, span_id)] = count
    return counts


def assert_stored_once(keys: set[tuple[str, int]]) -> None:
    counts = stored_times(keys)
    wrong = {key: count for key, count in counts.items() if count != 1}
    assert not wrong, f"spans not stored exactly once: {wrong}"
