"""POST /v1/traces through Django's test client: every status the receiver can answer."""

from __future__ import annotations

import gzip
import json
import logging
import time

import pytest
from django.test import Client
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from apps.accounts.models import IngestKey
from apps.telemetry.models import Span
from tests.otlp_helpers import json_body, make_traces, protobuf_body

pytestmark = pytest.mark.django_db

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def post(client: Client, body: bytes, key: str | None, content_type: str = PROTOBUF, **headers: str):
    if key is not None:
        headers.setdefault("Authorization", f"Bearer {key}")
    return client.post("/v1/traces", data=body, content_type=content_type, headers=headers)


def test_protobuf_batch_is_stored_with_mapping_and_price(client: Client, ingest_key: str) -> None:
    spans = make_traces(3)
    response = post(client, protobuf_body(spans), ingest_key)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == PROTOBUF
    parsed = trace_service_pb2.ExportTraceServiceResponse.FromString(response.content)
    assert parsed.partial_success.rejected_spans == 0
    assert Span.objects.count() == 6
    llm = Span.objects.filter(is_llm=True)
    assert llm.count() == 3
    one = llm.first()
    assert one is not None
    assert (one.provider, one.request_model, one.response_model) == ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert (one.input_tokens, one.cache_read_tokens, one.output_tokens) == (1200, 1000, 300)
    assert one.cost_usd is not None and one.cost_usd > 0
    assert one.price_id is not None
    root = Span.objects.get(is_llm=False, trace_id=one.trace_id)
    assert (root.tenant, root.feature, root.service_name) == ("acme", "support-chat", "support-api")


def test_json_batch_is_stored(client: Client, ingest_key: str) -> None:
    response = post(client, json_body(make_traces(2)), ingest_key, content_type=JSON)
    assert response.status_code == 200, response.content
    assert response.json() == {}
    assert Span.objects.count() == 4


def test_gzip_body_and_x_observatory_key_header(client: Client, ingest_key: str) -> None:
    body = gzip.compress(protobuf_body(make_traces(2)))
    response = client.post(
        "/v1/traces",
        data=body,
        content_type=PROTOBUF,
        headers={"x-observatory-key": ingest_key, "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.content
    assert Span.objects.count() == 4


def test_resent_batch_is_not_double_counted(client: Client, ingest_key: str) -> None:
    body = protobuf_body(make_traces(5))
    assert post(client, body, ingest_key).status_code == 200
    assert post(client, body, ingest_key).status_code == 200
    assert Span.objects.count() == 10
    assert Span.objects.filter(is_llm=True).count() == 5


@pytest.mark.parametrize(
    ("key", "message"),
    [(None, "missing ingest key"), ("obs_wrong", "not recognised"), ("", "missing ingest key")],
)
def test_bad_credentials_get_401_before_the_body_is_read(
    client: Client, ingest_key: str, key: str | None, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="observatory.ingest")
    # An undecodable body: a 401 (not a 400) proves the key was checked first.
    response = post(client, b"\xff\xfe not protobuf", key)
    assert response.status_code == 401
    assert message in status_pb2.Status.FromString(response.content).message
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "401" in caplog.text
    assert Span.objects.count() == 0


def test_revoked_key_is_refused(client: Client, ingest_key: str) -> None:
    IngestKey.objects.update(revoked_at="2026-01-01T00:00:00Z")
    assert post(client, protobuf_body(make_traces(1)), ingest_key).status_code == 401


def test_keys_are_stored_hashed(ingest_key: str) -> None:
    key = IngestKey.objects.get()
    assert ingest_key not in (key.key_hash, key.prefix)
    assert len(key.key_hash) == 64 and ingest_key.startswith(key.prefix)


@pytest.mark.parametrize("content_type", ["text/plain", "application/grpc", ""])
def test_unsupported_media_type_is_415(client: Client, ingest_key: str, content_type: str) -> None:
    response = post(client, protobuf_body(make_traces(1)), ingest_key, content_type=content_type)
    assert response.status_code == 415
    assert Span.objects.count() == 0


def test_unsupported_content_encoding_is_415(client: Client, ingest_key: str) -> None:
    response = post(client, b"xx", ingest_key, **{"Content-Encoding": "br"})
    assert response.status_code == 415


def test_get_is_405(client: Client) -> None:
    assert client.get("/v1/traces").status_code == 405


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (PROTOBUF, b"\x0a\xff\xff\xff\xff\x0f garbage", "protobuf"),
        (JSON, b"{not json", "JSON"),
        (JSON, b"[1, 2, 3]", "object"),
        (JSON, b'{"resourceSpans": 7}', "resourceSpans"),
    ],
)
def test_undecodable_body_is_400_with_reason(
    client: Client, ingest_key: str, content_type: str, body: bytes, message: str
) -> None:
    response = post(client, body, ingest_key, content_type=content_type)
    assert response.status_code == 400
    text = (
        response.json()["message"] if content_type == JSON else status_pb2.Status.FromString(response.content).message
    )
    assert message.lower() in text.lower()


def test_body_over_the_cap_is_413(client: Client, ingest_key: str, settings: object) -> None:
    settings.INGEST_MAX_BODY_BYTES = 2048  # type: ignore[attr-defined]
    response = post(client, protobuf_body(make_traces(40)), ingest_key)
    assert response.status_code == 413
    assert Span.objects.count() == 0


def test_gzip_bomb_is_413_without_inflating_it(client: Client, ingest_key: str, settings: object) -> None:
    settings.INGEST_MAX_DECOMPRESSED_BYTES = 1024 * 1024  # type: ignore[attr-defined]
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 300 * 1024
    started = time.monotonic()
    response = post(client, bomb, ingest_key, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "decompressed" in status_pb2.Status.FromString(response.content).message
    assert time.monotonic() - started < 2


def test_corrupt_gzip_is_400(client: Client, ingest_key: str) -> None:
    response = post(client, b"\x1f\x8b\x08\x00garbage", ingest_key, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400


def test_one_bad_span_is_rejected_and_the_rest_kept(client: Client, ingest_key: str) -> None:
    payload = json.loads(json_body(make_traces(3)))
    spans = payload["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["traceId"] = "zz-not-hex"
    response = post(client, json.dumps(payload).encode(), ingest_key, content_type=JSON)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1
    assert "trace" in partial["errorMessage"].lower()
    assert Span.objects.count() == 5


def test_absurd_values_are_rejected_per_span(client: Client, ingest_key: str) -> None:
    far_future = time.time_ns() + 400 * 86_400 * 10**9
    spans = make_traces(1, start_ns=far_future) + make_traces(1)
    spans += make_traces(1, llm_attributes={"gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": -5})
    response = post(client, protobuf_body(spans), ingest_key)
    assert response.status_code == 200
    partial = trace_service_pb2.ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 3  # the future trace's two spans and the negative-token span
    assert "future" in partial.error_message
    assert "input_tokens" in partial.error_message
    assert Span.objects.count() == 3


def test_unknown_model_is_stored_with_unknown_cost(client: Client, ingest_key: str) -> None:
    attributes = dict(
        {"gen_ai.provider.name": "openai", "gen_ai.request.model": "ft:acme-secret-model"},
        **{"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5},
    )
    assert post(client, protobuf_body(make_traces(1, llm_attributes=attributes)), ingest_key).status_code == 200
    span = Span.objects.get(is_llm=True)
    assert span.cost_usd is None and span.price_id is None
