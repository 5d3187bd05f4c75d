"""Bad input is a 400 with a precise JSON message, never a 500 and never silently ignored."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "metrics is required"),
        ({"metrics": " , "}, "metrics has an empty entry"),
        ({"metrics": "requests,latency_p99"}, "unknown metric 'latency_p99'"),
        ({"metrics": "requests,,cost_usd"}, "metrics has an empty entry"),
        ({"metrics": "requests", "group_by": ""}, "group_by has an empty entry"),
        ({"metrics": "requests", "start": "yesterday"}, "start 'yesterday' is not an ISO 8601 date-time"),
        ({"metrics": "requests", "start": "2025-02-30T00:00:00Z", "end": "2025-03-02T00:00:00Z"}, "not an ISO 8601"),
        ({"metrics": "requests", "start": "2025-01-02T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "end must be after"),
        ({"metrics": "requests", "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "end must be after"),
        ({"metrics": "requests", "start": "2024-01-01T00:00:00Z", "end": "2025-03-01T00:00:00Z"}, "at most 400 days"),
        ({"metrics": "requests", "end": "2025-03-01T00:00:00Z"}, "end needs a start"),
        ({"metrics": "requests", "start": "0001-01-01T00:00:00+14:00"}, "out of range"),
        ({"metrics": "requests", "start": "1999-12-31T00:00:00Z"}, "between 2000-01-01 and 2200-01-01"),
        ({"metrics": "requests", "range": "90d"}, "range must be one of 1h, 24h, 7d, 30d"),
        ({"metrics": "requests", "range": "7d", "start": "2025-01-01T00:00:00Z"}, "either range or start/end"),
        ({"metrics": "requests", "range": ["7d", "1h"]}, "range may be given once"),
        ({"metrics": "requests", "granularity": "minute"}, "granularity must be one of hour, day, week"),
        ({"metrics": "requests", "group_by": "tenant,customer"}, "unknown dimension 'customer' in group_by"),
        ({"metrics": "requests", "format": "xlsx"}, "format must be one of json, csv"),
        ({"metrics": "requests", "project": "acme-prod"}, "project takes project ids"),
        ({"metrics": "requests", "project": str(2**63)}, "project takes project ids"),
        ({"metrics": "requests", "tenant": "acme\x00"}, "tenant may not contain NUL"),
        ({"metrics": "requests", "tenants": "acme"}, "unknown parameter 'tenants'"),
    ],
)
def test_bad_metrics_queries_are_400_with_a_precise_message(
    owner_client: Client, params: dict[str, str], message: str
) -> None:
    response = owner_client.get("/api/v1/metrics", params)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("url", "params", "message"),
    [
        ("/api/v1/dimensions/customer", {}, "unknown dimension 'customer'"),
        ("/api/v1/dimensions/project", {}, "unknown dimension 'project'"),
        ("/api/v1/dimensions/tenant", {"range": "1y"}, "range must be one of"),
        ("/api/v1/dimensions/tenant", {"metrics": "requests"}, "unknown parameter 'metrics'"),
        ("/api/v1/dimensions/tenant", {"start": "2025-01-01T00:00:00Z", "end": "2024-01-01"}, "end must be after"),
    ],
)
def test_bad_dimension_queries_are_400(owner_client: Client, url: str, params: dict[str, str], message: str) -> None:
    response = owner_client.get(url, params)
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]


def test_any_percentile_is_a_known_metric(owner_client: Client) -> None:
    response = owner_client.get("/api/v1/metrics", {"metrics": "ttft_ms_p975", "range": "1h"})
    assert response.status_code == 200, response.content
    assert response.json()["rows"][0]["ttft_ms_p975_samples"] == 0


@pytest.mark.parametrize("name", ["range", "start", "end", "granularity", "format"])
def test_an_empty_single_value_is_an_error_not_the_default(owner_client: Client, name: str) -> None:
    response = owner_client.get("/api/v1/metrics", {"metrics": "requests", name: ""})
    assert response.status_code == 400
    assert response.json()["error"] == f"{name} is empty; leave it out for the default"
