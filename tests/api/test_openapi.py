"""The OpenAPI document: a valid 3.1 description of every endpoint, and true of the live
views (schemathesis drives the Django WSGI app with generated requests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from django.urls import URLPattern, get_resolver
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.api import urls as api_urls
from apps.api.openapi import document
from apps.metrics.query import DIMENSIONS, METRICS

pytestmark = pytest.mark.django_db

CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 60


def test_document_is_valid_openapi_3_1(client: Client) -> None:
    served = client.get("/api/v1/openapi.json").json()
    assert served == document()
    validate(served)


def _documented_path(pattern: URLPattern) -> str:
    route = str(pattern.pattern)
    for converter in ("str:", "int:", "slug:"):
        route = route.replace(f"<{converter}", "{")
    return "/api/v1/" + route.replace("<", "{").replace(">", "}")


def test_document_lists_every_endpoint() -> None:
    routes = {_documented_path(pattern) for pattern in api_urls.urlpatterns}
    assert (
        routes
        == set(document()["paths"])
        == {
            "/api/v1/metrics",
            "/api/v1/dimensions/{dimension}",
            "/api/v1/openapi.json",
        }
    )
    # And each is reachable where the document says it is.
    resolver = get_resolver()
    for path in document()["paths"]:
        assert resolver.resolve(path.replace("{dimension}", "tenant")).app_name == "api"


def test_document_enumerates_metrics_and_dimensions() -> None:
    components = document()["components"]
    assert components["schemas"]["MetricName"]["anyOf"][0]["enum"] == list(METRICS)
    metrics = document()["paths"]["/api/v1/metrics"]["get"]
    by_name = {param["name"]: param for param in metrics["parameters"]}
    assert by_name["group_by"]["schema"]["items"]["enum"] == list(DIMENSIONS)
    assert set(by_name) >= {"metrics", "range", "start", "end", "granularity", "format", "project", *DIMENSIONS}
    assert set(metrics["responses"]) == {"200", "400", "401"}
    assert set(components["securitySchemes"]) == {"bearerAuth", "cookieAuth"}


@pytest.fixture
def wsgi_app() -> Iterator[WSGIHandler]:
    """Django's real WSGI handler, inside the test's transaction: like Django's test client,
    it must not close the connection between requests (that would end the transaction)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.mark.usefixtures("traffic")
@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_schemathesis_every_answer_conforms(wsgi_app: WSGIHandler, owner_key: str, mode: Any) -> None:
    """Generated requests (valid ones, then invalid ones) with a read key: no 5xx, and every
    status, media type, header and body is one the document describes. Invalid requests must
    be refused with a 4xx."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", wsgi_app)
    headers = {"Authorization": f"Bearer {owner_key}"}
    checks = [*CONFORMANCE, negative_data_rejection] if mode == schemathesis.GenerationMode.NEGATIVE else CONFORMANCE
    operations = [result.ok() for result in schema.get_all_operations()]
    # (schemathesis leaves out the operation that serves the schema itself)
    assert {operation.path for operation in operations} >= {"/api/v1/metrics", "/api/v1/dimensions/{dimension}"}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=checks, headers=headers)

        conforms()
