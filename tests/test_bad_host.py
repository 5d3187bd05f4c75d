"""A request refused before any view (a Host header outside ALLOWED_HOSTS) is answered in
the format its client parses: JSON under /api/, an OTLP Status on the receiver, Django's
page elsewhere; always a 400 with a log line, never a 500, and nothing stored."""

from __future__ import annotations

import logging

import pytest
from django.test import Client
from google.rpc import status_pb2

from apps.telemetry.models import Span
from tests.otlp_helpers import json_body, make_traces, protobuf_body

pytestmark = pytest.mark.django_db

BAD_HOST = "attacker.example"
REFUSED = "the Host header names no host this server answers for (ALLOWED_HOSTS)"


def test_the_api_answers_a_bad_host_with_its_json_error(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="django.security"):
        response = client.get("/api/v1/metrics?metrics=requests", headers={"Host": BAD_HOST})
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": REFUSED}
    assert any(BAD_HOST in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("content_type", ["application/x-protobuf", "application/json"])
def test_the_receiver_answers_a_bad_host_with_an_otlp_status(
    client: Client, ingest_key: str, content_type: str
) -> None:
    spans = make_traces(2)
    body = protobuf_body(spans) if content_type == "application/x-protobuf" else json_body(spans)
    response = client.post(
        "/v1/traces", data=body, content_type=content_type,
        headers={"Host": BAD_HOST, "Authorization": f"Bearer {ingest_key}"},
    )  # fmt: skip
    assert response.status_code == 400
    assert response["Content-Type"] == content_type
    if content_type == "application/json":
        assert response.json() == {"code": 3, "message": REFUSED}  # INVALID_ARGUMENT
    else:
        status = status_pb2.Status.FromString(response.content)
        assert (status.code, status.message) == (3, REFUSED)
    assert Span.objects.count() == 0


def test_pages_keep_djangos_bad_request_page(client: Client) -> None:
    response = client.get("/accounts/login/", headers={"Host": BAD_HOST})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
