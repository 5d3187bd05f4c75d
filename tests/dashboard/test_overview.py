from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.otlp_helpers import make_traces, protobuf_body

pytestmark = pytest.mark.django_db


def test_overview_needs_login(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_overview_empty_state_explains_how_to_send_data(client: Client) -> None:
    client.force_login(User.objects.create_user("lead", password="pw-12345678"))
    response = client.get("/")
    assert response.status_code == 200
    assert b"OTEL_EXPORTER_OTLP_ENDPOINT" in response.content


def test_overview_shows_cost_by_feature_inherited_from_the_trace(client: Client, ingest_key: str) -> None:
    body = protobuf_body(make_traces(4, feature="summarize"))
    assert client.post("/v1/traces", data=body, content_type="application/x-protobuf",
                       headers={"Authorization": f"Bearer {ingest_key}"}).status_code == 200  # fmt: skip
    client.force_login(User.objects.create_user("lead", password="pw-12345678"))
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Cost by day, stacked by feature" in html
    # The LLM spans carry no feature; their root span's "summarize" is used, not the service name.
    assert '"name":"summarize"' in html
    assert '"name":"support-api"' not in html
    assert ">4<" in html  # four LLM requests


def test_plotly_is_served_locally(client: Client) -> None:
    response = client.get("/vendor/plotly.min.js")
    assert response.status_code == 200
    assert b"plotly" in b"".join(response.streaming_content)[:2000].lower()
