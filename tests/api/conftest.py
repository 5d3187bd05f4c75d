"""API fixtures: traffic for two tenants, ingested through the real receiver, and clients
that act as each of the base users."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.accounts.models import ReadKey
from tests.otlp_helpers import make_traces, protobuf_body

# Calls per tenant in the `traffic` fixture, and the feature each tenant's calls carry.
ACME_CALLS, GLOBEX_CALLS = 3, 2
FEATURES = {"acme": "support-chat", "globex": "search"}


def ingest(client: Client, ingest_key: str, count: int, tenant: str, feature: str | None = None) -> None:
    body = protobuf_body(make_traces(count, tenant=tenant, feature=feature or FEATURES[tenant]))
    response = client.post(
        "/v1/traces",
        data=body,
        content_type="application/x-protobuf",
        headers={"Authorization": f"Bearer {ingest_key}"},
    )
    assert response.status_code == 200, response.content


@pytest.fixture
def traffic(ingest_key: str) -> None:
    """Three calls of tenant acme and two of globex, a few minutes ago (read from raw spans)."""
    client = Client()
    ingest(client, ingest_key, ACME_CALLS, "acme")
    ingest(client, ingest_key, GLOBEX_CALLS, "globex")


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner_client(owner: Any) -> Client:
    return client_for(owner)


@pytest.fixture
def outsider_client(outsider: Any) -> Client:
    return client_for(outsider)


@pytest.fixture
def outsider_key(outsider: Any) -> str:
    _, plaintext = ReadKey.issue(outsider, "script")
    return plaintext


@pytest.fixture
def owner_key(owner: Any) -> str:
    _, plaintext = ReadKey.issue(owner, "script")
    return plaintext
