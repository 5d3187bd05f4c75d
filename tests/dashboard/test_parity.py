"""A page and the JSON API asked the same question give the same answer: the overview's
headline figures equal /api/v1/metrics for the same query string, for a preset and for a
custom start/end, with time frozen. Traffic sits where the two windows would differ if the
API still ended at "now" and started at now - 7 d: just inside the hour-aligned start, and
between the last 10-second boundary and now."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.test import Client

from apps.dashboard.templatetags.humanize_cost import ms, usd
from apps.rollups.runner import rollup_pending
from tests.otlp_helpers import LLM_ATTRIBUTES, make_traces, protobuf_body

pytestmark = pytest.mark.django_db

# Frozen at 37 min 23.5 s past an hour: the preset's start (on the hour) and end (the last
# 10-second boundary, :37:20) both differ from "now minus 7 days" and "now".
NOW = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=37, second=23, microsecond=500_000)
HEADLINE = ("requests", "cost_usd", "e2e_ms_p95", "e2e_ms_p99", "error_rate", "ttft_ms_p95")


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


def _ingest(client: Client, key: str, count: int, at: datetime, **attributes: Any) -> None:
    spans = make_traces(count, start_ns=_ns(at), llm_attributes={**LLM_ATTRIBUTES, **attributes})
    response = client.post("/v1/traces", data=protobuf_body(spans), content_type="application/x-protobuf",
                           headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert response.status_code == 200, response.content


@pytest.fixture
def frozen(ingest_key: str) -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        client = Client()
        # Closed hours, rolled up: plain calls, streamed calls with a TTFT, failures, an unpriced model.
        _ingest(client, ingest_key, 6, NOW - timedelta(hours=3))
        _ingest(client, ingest_key, 3, NOW - timedelta(hours=5), **{"gen_ai.response.time_to_first_chunk": 0.12})
        _ingest(client, ingest_key, 2, NOW - timedelta(days=2), **{"error.type": "429"})
        unpriced = {"gen_ai.request.model": "mystery-model", "gen_ai.response.model": "mystery-model-1"}
        _ingest(client, ingest_key, 1, NOW - timedelta(hours=4), **unpriced)
        # Inside the page's 7d (it starts on the hour), outside now - 7 d.
        _ingest(client, ingest_key, 2, NOW - timedelta(days=7, minutes=20))
        # Before the 7d window and in the 30d one.
        _ingest(client, ingest_key, 1, NOW - timedelta(days=9))
        assert rollup_pending() >= 1
        # The current hour, read raw: calls before the 10-second boundary, and one after it.
        _ingest(client, ingest_key, 2, NOW - timedelta(minutes=9), **{"gen_ai.response.time_to_first_chunk": 0.4})
        _ingest(client, ingest_key, 1, NOW - timedelta(seconds=2))
        yield


def _api(client: Client, query: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/metrics?{query}&metrics={','.join(HEADLINE)}")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.usefixtures("frozen")
@pytest.mark.parametrize(
    "query",
    [
        "range=7d",
        "range=24h&tenant=acme",
        # The default range is the same on pages and in the API.
        "",
        # A custom window: the same instants, whatever the form.
        f"start={(NOW - timedelta(days=3)).strftime('%Y-%m-%dT%H:%M:%S')}"
        f"&end={(NOW - timedelta(minutes=9, seconds=-30)).strftime('%Y-%m-%dT%H:%M:%SZ')}",
    ],
)
def test_the_overview_headline_equals_the_api(client: Client, owner: Any, query: str) -> None:
    client.force_login(owner)
    with time_machine.travel(NOW, tick=False):
        page = client.get(f"/?{query}")
        document = _api(client, query)
    assert page.status_code == 200
    params, figures = page.context["params"], page.context["head"].values
    echoed = document["query"]
    assert (echoed["start"], echoed["end"]) == (
        params.start.isoformat().replace("+00:00", "Z"),
        params.end.isoformat().replace("+00:00", "Z"),
    )
    [row] = document["rows"]
    assert figures["requests"] == row["requests"]
    assert figures["cost_usd"] == Decimal(row["cost_usd"])
    assert figures["cost_unknown_requests"] == row["cost_unknown_requests"]
    for name in ("e2e_ms_p95", "e2e_ms_p99", "error_rate", "ttft_ms_p95"):
        assert figures[name] == row[name], name
    # And what the page prints is those figures.
    html = page.content.decode()
    assert f'<div class="value">{row["requests"]}</div>' in html
    assert usd(Decimal(row["cost_usd"])) in html
    assert f"{ms(row['e2e_ms_p95'])} / {ms(row['e2e_ms_p99'])}" in html
    # Partly priced: the known sum, and the call it leaves out.
    assert row["cost_unknown_requests"] == 1 and ">+ 1 unpriced call</span>" in html


@pytest.mark.usefixtures("frozen")
def test_the_windows_are_the_pages(client: Client, owner: Any) -> None:
    """The traffic placed at the windows' edges lands where the pages' windows put it."""
    client.force_login(owner)
    with time_machine.travel(NOW, tick=False):
        week = _api(client, "range=7d")
        month = _api(client, "range=30d")
        custom = _api(client, f"start={(NOW - timedelta(days=3)).isoformat()}")
    current_hour = NOW.replace(minute=0, second=0, microsecond=0)
    boundary = NOW.replace(second=20, microsecond=0)
    assert week["query"]["start"] == (current_hour - timedelta(days=7)).isoformat().replace("+00:00", "Z")
    assert week["query"]["end"] == boundary.isoformat().replace("+00:00", "Z")
    # 6 + 3 + 2 + 1 in closed hours, 2 just inside the hour-aligned start, 2 this hour; not
    # the call after the boundary.
    assert week["rows"][0]["requests"] == 16
    assert month["rows"][0]["requests"] == 17
    # A start alone ends at the same boundary.
    assert custom["query"]["end"] == week["query"]["end"]
    assert custom["rows"][0]["requests"] == 6 + 3 + 2 + 1 + 2
    # One call of an unpriced model: the known sum travels with it.
    assert week["rows"][0]["cost_unknown_requests"] == 1
