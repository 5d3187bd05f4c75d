"""Pages never show an unknown cost as $0: "unknown" (with a hint) when no call is priced,
"$X + N unpriced calls" when some are; CSV cells are empty; the trace page shows token
counts a span did not report as "?" and shows cache writes."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.test import Client

from tests.otlp_helpers import LLM_ATTRIBUTES, make_traces, protobuf_body

pytestmark = pytest.mark.django_db

UNPRICED = {**LLM_ATTRIBUTES, "gen_ai.request.model": "mystery-model", "gen_ai.response.model": "mystery-model-1"}


def _ingest(client: Client, key: str, count: int, **kwargs: Any) -> list[Any]:
    spans = make_traces(count, **kwargs)
    response = client.post("/v1/traces", data=protobuf_body(spans), content_type="application/x-protobuf",
                           headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert response.status_code == 200
    return spans


@pytest.fixture
def traffic(client: Client, ingest_key: str, owner: Any) -> Client:
    _ingest(client, ingest_key, 3, feature="support-chat")
    _ingest(client, ingest_key, 2, feature="mystery-feature", llm_attributes=UNPRICED)
    client.force_login(owner)
    return client


def test_overview_says_unknown_when_no_call_is_priced(traffic: Client) -> None:
    response = traffic.get("/?range=24h&model=mystery-model")
    head = response.context["head"].values
    assert head["requests"] == 2 and head["cost_usd"] is None and head["cost_unknown_requests"] == 2
    html = response.content.decode()
    card = html.split('<div class="label">LLM cost</div>')[1].split("</div>")[0]
    assert ">unknown</span>" in card and "$" not in card
    assert "None of these calls has a price (2 unpriced calls)" in card
    per_task = html.split('<div class="label">Cost per successful task</div>')[1].split("</div>")[0]
    assert "unknown" in per_task and "$" not in per_task


def test_overview_shows_the_known_sum_plus_the_unpriced_calls(traffic: Client) -> None:
    html = traffic.get("/?range=24h").content.decode()
    card = html.split('<div class="label">LLM cost</div>')[1].split("</div>")[0]
    assert card.count("$") == 1 and ">+ 2 unpriced calls</span>" in card


def test_lists_and_their_csv_leave_unknown_costs_unknown(traffic: Client) -> None:
    html = traffic.get("/features/?range=24h").content.decode()
    row = html.split("mystery-feature</a>")[1].split("</tr>")[0]
    assert ">unknown</span>" in row and "$0" not in row
    rows = {
        r["Feature"]: r for r in csv.DictReader(io.StringIO(traffic.get("/features/?range=24h&csv=1").content.decode()))
    }
    assert rows["mystery-feature"]["Cost (USD)"] == "" and rows["mystery-feature"]["Calls with unknown cost"] == "2"
    assert rows["support-chat"]["Cost (USD)"] != ""


def test_compare_says_unknown_for_an_unpriced_side(traffic: Client) -> None:
    response = traffic.get("/compare/?kind=feature&a=mystery-feature&b=support-chat&range=24h")
    rows = {row["metric"]: row for row in response.context["rows"]}
    assert rows["cost_usd"]["a_text"] == "unknown" and rows["cost_usd"]["b_text"].startswith("$")
    assert rows["cost_usd"]["difference_text"] == "n/a" or rows["cost_usd"]["difference"] is None


def test_trace_page_shows_unreported_tokens_as_unknown_and_cache_writes(
    client: Client, ingest_key: str, owner: Any
) -> None:
    reported = {**LLM_ATTRIBUTES, "gen_ai.usage.cache_creation.input_tokens": 50,
                "gen_ai.usage.reasoning.output_tokens": 100}  # fmt: skip
    [_, plain] = _ingest(client, ingest_key, 1)
    [_, full] = _ingest(client, ingest_key, 1, llm_attributes=reported)
    client.force_login(owner)

    def tokens_cell(span: Any) -> str:
        html = client.get(f"/traces/{span.context.trace_id:032x}/").content.decode()
        return html.split("chat gpt-4o-mini<br>")[1].split("</tr>")[0]

    assert "1200 / 1000 / 300 / ?" in tokens_cell(plain) and "cache write ?" in tokens_cell(plain)
    assert "1200 / 1000 / 300 / 100" in tokens_cell(full) and "cache write 50" in tokens_cell(full)
