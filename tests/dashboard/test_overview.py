from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.otlp_helpers import make_traces, protobuf_body

pytestmark = pytest.mark.django_db


def _ingest(client: Client, key: str, **kwargs: Any) -> None:
    body = protobuf_body(make_traces(**kwargs))
    response = client.post(
        "/v1/traces", data=body, content_type="application/x-protobuf", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200


def test_overview_needs_login(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_overview_empty_state_explains_how_to_send_data(client: Client, owner: Any) -> None:
    client.force_login(owner)
    response = client.get("/")
    assert response.status_code == 200
    assert b"OTEL_EXPORTER_OTLP_ENDPOINT" in response.content


def test_overview_shows_cost_by_feature_inherited_from_the_trace(client: Client, ingest_key: str, owner: Any) -> None:
    _ingest(client, ingest_key, count=4, feature="summarize")
    client.force_login(owner)
    response = client.get("/?range=24h")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Cost by hour, stacked by feature" in html
    # The LLM spans carry no feature; their root span's "summarize" is used, not the service name.
    assert '"name":"summarize"' in html
    assert '"name":"support-api"' not in html
    assert '<div class="value">4</div>' in html  # four LLM requests


def test_tenant_limited_user_sees_only_their_tenant_on_the_overview_and_its_csv(
    client: Client, ingest_key: str, outsider: Any
) -> None:
    _ingest(client, ingest_key, count=3, tenant="acme", feature="secret-acme-feature")
    _ingest(client, ingest_key, count=2, tenant="globex", feature="globex-chat")
    client.force_login(outsider)
    html = client.get("/?range=24h").content.decode()
    assert "globex-chat" in html
    assert "secret-acme-feature" not in html and "acme" not in html.replace("globex", "")
    assert '<div class="value">2</div>' in html  # the total counts globex's calls only
    csv_text = client.get("/?range=24h&csv=tenants").content.decode()
    assert "globex" in csv_text and "acme" not in csv_text
    csv_text = client.get("/?range=24h&csv=features&tenant=acme").content.decode()
    assert "secret-acme-feature" not in csv_text


def test_bad_range_is_a_400_with_the_reason(client: Client, owner: Any) -> None:
    client.force_login(owner)
    response = client.get("/?range=3y")
    assert response.status_code == 400
    assert b"range must be one of 1h, 24h, 7d, 30d" in response.content


def test_plotly_is_served_locally(client: Client) -> None:
    response = client.get("/vendor/plotly.min.js")
    assert response.status_code == 200
    assert b"plotly" in b"".join(response.streaming_content)[:2000].lower()
