"""Every page answers a bad range or a NUL the way the API does: a 400 that says what was
wrong, with the filter bar still there, a log line, and never a 500 (an OverflowError from
a year-1 date, a DataError from a NUL reaching PostgreSQL)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client

from tests.otlp_helpers import make_traces, protobuf_body

pytestmark = pytest.mark.django_db

TRACE = "0af7651916cd43dd8448eb211c80319c"
PAGES = (
    "/",
    "/features/",
    "/tenants/",
    "/models/",
    "/features/support-chat/",
    "/tenants/acme/",
    "/models/openai/gpt-4o-mini/",
    "/compare/",
    "/compare/?kind=range&",
    "/prices/",
    "/traces/",
    f"/traces/{TRACE}/",
)
BAD_QUERIES = (
    ("start=0001-01-01&end=0001-01-02", "start must be between 2000-01-01 and 2200-01-01"),
    ("start=2026-11-01&end=9999-12-31", "end must be between 2000-01-01 and 2200-01-01"),
    ("start=0001-01-01T00:00:00%2B14:00", "start '0001-01-01T00:00:00+14:00' is out of range"),
    ("tenant=ac%00me", "tenant may not contain NUL characters"),
    ("feature=x%00y&range=24h", "feature may not contain NUL characters"),
    ("end=2026-11-01", "end needs a start"),
)


@pytest.fixture
def logged_in(client: Client, owner: Any, ingest_key: str) -> Client:
    body = protobuf_body(make_traces(2))
    response = client.post("/v1/traces", data=body, content_type="application/x-protobuf",
                           headers={"Authorization": f"Bearer {ingest_key}"})  # fmt: skip
    assert response.status_code == 200
    client.force_login(owner)
    return client


def _assert_400(response: Any, message: str) -> None:
    html = response.content.decode().replace("&#x27;", "'")
    assert response.status_code == 400, html[:2000]
    assert message in html
    # The filter bar is still there to pick a range from (the default one is shown).
    assert '<form class="filters"' in html and "range=24h" in html


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize(("query", "message"), BAD_QUERIES)
def test_every_page_answers_a_bad_range_or_filter_with_a_400(
    logged_in: Client, page: str, query: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    separator = "" if page.endswith("&") else "?"
    with caplog.at_level(logging.INFO, logger="apps.dashboard.views"):
        response = logged_in.get(f"{page}{separator}{query}")
    _assert_400(response, message)
    assert any(message in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/features/x%00y/", "name may not contain NUL characters"),
        ("/tenants/ac%00me/", "name may not contain NUL characters"),
        ("/models/open%00ai/gpt-4o/", "provider may not contain NUL characters"),
        ("/models/openai/gpt%004o/", "model may not contain NUL characters"),
        ("/compare/?kind=feature&a=support%00chat&b=search", "a may not contain NUL characters"),
        ("/compare/?kind=range&a_start=2026-01-01%00&a_end=2026-01-02&b_start=2026-01-02&b_end=2026-01-03",
         "a_start may not contain NUL characters"),
        ("/compare/?kind=range&a_start=0001-01-01&a_end=2026-01-02&b_start=2026-01-02&b_end=2026-01-03",
         "a_start must be between 2000-01-01 and 2200-01-01"),
        ("/compare/?kind=range&a_start=2026-01-01&a_end=9999-12-31&b_start=2026-01-02&b_end=2026-01-03",
         "a_end must be between 2000-01-01 and 2200-01-01"),
        ("/traces/?status=ok%00", "status may not contain NUL characters"),
        ("/prices/?provider=open%00ai", "provider may not contain NUL characters"),
        (f"/traces/{TRACE}%00/", "trace_hex may not contain NUL characters"),
    ],
)  # fmt: skip
def test_a_nul_in_a_path_or_a_pages_own_parameter_is_a_400(logged_in: Client, url: str, message: str) -> None:
    response = logged_in.get(url)
    _assert_400(response, message)
    if "%00/" in url:  # the path itself is unusable: the filter bar leads to the overview
        assert '<form class="filters" method="get" action="/">' in response.content.decode()


def test_the_same_parameters_are_a_400_in_the_api_with_the_same_message(
    logged_in: Client, caplog: pytest.LogCaptureFixture
) -> None:
    for query, message in BAD_QUERIES:
        with caplog.at_level(logging.INFO, logger="apps.api.auth"):
            response = logged_in.get(f"/api/v1/metrics?metrics=requests&{query}")
        assert response.status_code == 400, query
        assert message in response.json()["error"]
        assert any(message in record.getMessage() for record in caplog.records)


def test_a_good_query_on_the_same_pages_is_not_refused(logged_in: Client) -> None:
    for page in PAGES:
        separator = "" if page.endswith("&") else "?"
        response = logged_in.get(f"{page}{separator}range=24h&tenant=acme")
        assert response.status_code in (200, 404), page  # the made-up trace id is a 404


def test_anonymous_visitors_are_sent_to_log_in_first(client: Client) -> None:
    for page in PAGES:
        separator = "" if page.endswith("&") else "?"
        response = client.get(f"{page}{separator}tenant=ac%00me")
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], page
