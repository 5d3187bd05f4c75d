"""Who may call the API: a session or a read key; anyone else gets a 401 JSON answer."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.models import ReadKey

pytestmark = pytest.mark.django_db

METRICS_URL = "/api/v1/metrics?metrics=requests"
PROTECTED = [METRICS_URL, "/api/v1/dimensions/tenant"]


@pytest.mark.parametrize("url", PROTECTED)
def test_anonymous_gets_401_json_not_a_login_redirect(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "authentication required" in response.json()["error"]


@pytest.mark.parametrize("url", PROTECTED)
def test_session_login_is_enough(owner_client: Client, url: str) -> None:
    assert owner_client.get(url).status_code == 200


def test_read_key_authenticates(client: Client, outsider_key: str) -> None:
    response = client.get(METRICS_URL, headers={"Authorization": f"Bearer {outsider_key}"})
    assert response.status_code == 200, response.content


def test_bearer_scheme_is_case_insensitive(client: Client, outsider_key: str) -> None:
    assert client.get(METRICS_URL, headers={"Authorization": f"bearer {outsider_key}"}).status_code == 200


def test_revoked_key_is_refused(client: Client, outsider: Any, outsider_key: str) -> None:
    ReadKey.objects.filter(user=outsider).update(revoked_at=timezone.now())
    response = client.get(METRICS_URL, headers={"Authorization": f"Bearer {outsider_key}"})
    assert response.status_code == 401
    assert "not recognised" in response.json()["error"]


def test_key_of_a_deactivated_user_is_refused(client: Client, outsider: Any, outsider_key: str) -> None:
    outsider.is_active = False
    outsider.save()
    assert client.get(METRICS_URL, headers={"Authorization": f"Bearer {outsider_key}"}).status_code == 401


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer obsr_wrong", "not recognised"),
        ("Bearer ", "not recognised"),
        ("Basic b3duZXI6cGFzc3dvcmQ=", "unsupported Authorization scheme"),
    ],
)
def test_bad_credentials_are_refused(client: Client, header: str, message: str) -> None:
    response = client.get(METRICS_URL, headers={"Authorization": header})
    assert response.status_code == 401
    assert message in response.json()["error"]


def test_an_ingest_key_is_not_a_read_key(client: Client, ingest_key: str) -> None:
    assert client.get(METRICS_URL, headers={"Authorization": f"Bearer {ingest_key}"}).status_code == 401


def test_a_wrong_key_is_refused_even_with_a_session(owner_client: Client) -> None:
    # Credentials that are presented are judged; the session does not paper over a bad key.
    assert owner_client.get(METRICS_URL, headers={"Authorization": "Bearer obsr_wrong"}).status_code == 401


def test_the_api_is_read_only(owner_client: Client) -> None:
    response = owner_client.post(METRICS_URL)
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert "read-only" in response.json()["error"]


def test_answers_are_private_to_the_caller(owner_client: Client) -> None:
    response = owner_client.get(METRICS_URL)
    assert "private" in response["Cache-Control"] and "no-store" in response["Cache-Control"]
    assert "Authorization" in response["Vary"] and "Cookie" in response["Vary"]


def test_openapi_document_needs_no_credentials(client: Client) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.json()["openapi"] == "3.1.0"
