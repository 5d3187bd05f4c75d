from __future__ import annotations

import csv
import io
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
from django.http import QueryDict
from django.test import Client

from apps.dashboard.compare_views import Option, _split_model, common_bins
from tests.otlp_helpers import make_traces, protobuf_body

pytestmark = pytest.mark.django_db

GPT = {
    "gen_ai.provider.name": "openai",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.cache_read.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 300,
    "gen_ai.response.time_to_first_chunk": 0.25,
}
CLAUDE = {
    "gen_ai.provider.name": "anthropic",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.response.model": "claude-sonnet-4-5-20250929",
    "gen_ai.usage.input_tokens": 2000,
    "gen_ai.usage.output_tokens": 500,
    "gen_ai.response.time_to_first_chunk": 0.5,
}
# Catalog rates (USD per 1M tokens): gpt-4o-mini 0.15 in, 0.075 cached, 0.6 out, so
# 200 x 0.15 + 1000 x 0.075 + 300 x 0.6 = 285 micro-USD a call; claude-sonnet-4-5 3 in,
# 15 out, so 2000 x 3 + 500 x 15 = 13,500 micro-USD a call.
GPT_CALL = Decimal("0.000285")
CLAUDE_CALL = Decimal("0.0135")
MODELS_URL = "/compare/?kind=model&a=openai/gpt-4o-mini&b=anthropic/claude-sonnet-4-5&range=24h"


def _ingest(client: Client, key: str, **kwargs: Any) -> None:
    body = protobuf_body(make_traces(**kwargs))
    response = client.post(
        "/v1/traces", data=body, content_type="application/x-protobuf", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200


def _two_models(client: Client, key: str, tenant: str = "acme") -> None:
    """4 gpt-4o-mini calls (feature summarize), 3 + 1 failed claude calls (feature support-chat)."""
    _ingest(client, key, count=4, tenant=tenant, feature="summarize", llm_attributes=GPT)
    _ingest(client, key, count=3, tenant=tenant, feature="support-chat", llm_attributes=CLAUDE)
    _ingest(
        client,
        key,
        count=1,
        tenant=tenant,
        feature="support-chat",
        llm_attributes={**CLAUDE, "error.type": "overloaded_error"},
    )


def _csv(client: Client, url: str) -> dict[str, dict[str, str]]:
    response = client.get(url + "&format=csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return {row["Figure"]: row for row in csv.DictReader(io.StringIO(response.content.decode()))}


def _rows(response: Any) -> dict[str, dict[str, Any]]:
    return {row["metric"]: row for row in response.context["rows"]}


def test_compare_needs_login(client: Client) -> None:
    response = client.get("/compare/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_two_models_side_by_side_match_known_data(client: Client, ingest_key: str, owner: Any) -> None:
    _two_models(client, ingest_key)
    client.force_login(owner)
    response = client.get(MODELS_URL)
    assert response.status_code == 200
    rows = _rows(response)
    assert (rows["requests"]["a"], rows["requests"]["b"], rows["requests"]["difference"]) == (4, 4, 0)
    assert (rows["errors"]["a"], rows["errors"]["b"]) == (0, 1)
    assert (rows["error_rate"]["a"], rows["error_rate"]["b"]) == (0.0, 0.25)
    assert rows["error_rate"]["verdict"] == "worse" and rows["error_rate"]["difference_text"] == "+25.0 pp"
    assert rows["cost_usd"]["a"] == 4 * GPT_CALL and rows["cost_usd"]["b"] == 4 * CLAUDE_CALL
    assert rows["cost_usd"]["difference"] == 4 * CLAUDE_CALL - 4 * GPT_CALL
    assert rows["cost_per_1k_requests"]["a"] == GPT_CALL * 1000
    assert rows["cost_per_1k_requests"]["b"] == CLAUDE_CALL * 1000
    # Cost per successful task: every root span succeeded, the failed call's cost included.
    assert rows["cost_per_successful_task"]["a"] == GPT_CALL
    assert rows["cost_per_successful_task"]["b"] == CLAUDE_CALL
    assert rows["cost_per_successful_task"]["a_text"] == "$0.000285"  # fractions of a cent keep 3 digits
    assert rows["ttft_ms_p50"]["a"] == pytest.approx(250, rel=0.01)
    assert rows["ttft_ms_p95"]["b"] == pytest.approx(500, rel=0.01)
    assert (rows["ttft_ms_p50"]["a_samples"], rows["ttft_ms_p50"]["b_samples"]) == (4, 4)
    assert rows["ttft_ms_p99"]["verdict"] == "worse"
    assert rows["e2e_ms_p50"]["a"] == pytest.approx(800, rel=0.01)

    html = response.content.decode()
    assert "A: openai/gpt-4o-mini" in html and "B: anthropic/claude-sonnet-4-5" in html
    assert "End-to-end latency distribution" in html and "Time to first token distribution" in html
    assert "Time to first token percentiles" in html
    assert "(A: 4, B: 4)" in html  # each histogram's caption names its sample counts
    assert html.count("<select") == 2  # the pickers list the models seen in range
    assert '<option value="openai/gpt-4o-mini" selected>' in html

    by_figure = _csv(client, MODELS_URL)
    cost = by_figure["Cost"]
    assert Decimal(cost["A: openai/gpt-4o-mini"]) == 4 * GPT_CALL
    assert Decimal(cost["B: anthropic/claude-sonnet-4-5"]) == 4 * CLAUDE_CALL
    assert Decimal(cost["Difference (B - A)"]) == 4 * CLAUDE_CALL - 4 * GPT_CALL
    assert by_figure["Error rate"]["B: anthropic/claude-sonnet-4-5"] == "0.25"
    assert by_figure["TTFT p50"]["A samples"] == "4"


def test_two_features_and_the_filters_apply_to_both_sides(client: Client, ingest_key: str, owner: Any) -> None:
    _two_models(client, ingest_key)
    _ingest(client, ingest_key, count=2, tenant="initech", feature="summarize", llm_attributes=GPT)
    client.force_login(owner)
    url = "/compare/?kind=feature&a=summarize&b=support-chat&range=24h"
    rows = _rows(client.get(url))
    assert (rows["requests"]["a"], rows["requests"]["b"]) == (6, 4)
    rows = _rows(client.get(url + "&tenant=acme"))
    assert (rows["requests"]["a"], rows["requests"]["b"]) == (4, 4)
    assert rows["cost_usd"]["a"] == 4 * GPT_CALL
    # A filter on the compared dimension itself gives way to the sides.
    rows = _rows(client.get(url + "&feature=summarize"))
    assert (rows["requests"]["a"], rows["requests"]["b"]) == (6, 4)


def test_shareable_urls_round_trip(client: Client, ingest_key: str, owner: Any) -> None:
    _two_models(client, ingest_key)
    client.force_login(owner)
    # No choice in the URL: the two busiest models, and a link that names them.
    response = client.get("/compare/?range=24h&provider=openai&provider=anthropic")
    share = QueryDict(response.context["share_qs"])
    assert share["kind"] == "model" and share["range"] == "24h"
    assert {share["a"], share["b"]} == {"openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5"}
    assert share.getlist("provider") == ["openai", "anthropic"]
    again = client.get(f"/compare/?{response.context['share_qs']}")
    assert _rows(again) == _rows(response)
    assert again.context["share_qs"] == response.context["share_qs"]

    # The swap link swaps the sides and nothing else.
    swapped = _rows(client.get(f"/compare/?{response.context['swap_qs']}"))
    assert swapped["requests"]["a"] == _rows(response)["requests"]["b"]

    # An explicit URL keeps its choice.
    response = client.get(MODELS_URL)
    assert QueryDict(response.context["share_qs"]) == QueryDict(MODELS_URL.split("?", 1)[1])

    # A time range comparison names its four moments.
    url = "/compare/?" + urlencode(
        {
            "kind": "range",
            "a_start": "2026-01-02T00:00:00+00:00",
            "a_end": "2026-01-03T00:00:00+00:00",
            "b_start": "2026-01-01",
            "b_end": "2026-01-02",
            "model": "gpt-4o-mini",
        }
    )
    response = client.get(url)
    assert response.status_code == 200
    share = QueryDict(response.context["share_qs"])
    assert share["a_start"] == "2026-01-02T00:00:00+00:00" and share["b_end"] == "2026-01-02T00:00:00+00:00"
    assert share["model"] == "gpt-4o-mini" and "range" not in share
    assert client.get(f"/compare/?{response.context['share_qs']}").context["share_qs"] == response.context["share_qs"]


def test_two_time_ranges(client: Client, ingest_key: str, owner: Any) -> None:
    now_ns = time.time_ns()
    _ingest(client, ingest_key, count=3, llm_attributes=GPT, start_ns=now_ns - 60 * 10**9)
    _ingest(client, ingest_key, count=2, llm_attributes=GPT, start_ns=now_ns - 30 * 3600 * 10**9)
    client.force_login(owner)
    # By default: the period before the range (A) against the range (B).
    response = client.get("/compare/?kind=range&range=24h")
    rows = _rows(response)
    assert (rows["requests"]["a"], rows["requests"]["b"]) == (2, 3)
    assert rows["cost_usd"]["a"] == 2 * GPT_CALL
    assert rows["requests"]["relative"] == pytest.approx(0.5)


def test_outsider_never_sees_acme_numbers_on_compare(client: Client, ingest_key: str, outsider: Any) -> None:
    _ingest(
        client,
        ingest_key,
        count=5,
        tenant="acme",
        feature="acme-secret",
        llm_attributes={**GPT, "gen_ai.request.model": "acme-secret-model"},
    )
    _ingest(client, ingest_key, count=2, tenant="globex", feature="globex-chat", llm_attributes=CLAUDE)
    client.force_login(outsider)

    # Only globex's one model is in range for them: nothing to compare, and no acme name.
    html = client.get("/compare/?kind=model&range=24h").content.decode()
    assert "Only one model" in html and "anthropic/claude-sonnet-4-5" in html
    assert "acme-secret" not in html

    # Naming acme's model or tenant outright gives that side no calls, not acme's figures.
    url = "/compare/?kind=model&a=openai/acme-secret-model&b=anthropic/claude-sonnet-4-5&range=24h"
    rows = _rows(client.get(url))
    assert (rows["requests"]["a"], rows["requests"]["b"]) == (0, 2)
    assert rows["cost_usd"]["a"] == 0
    assert _csv(client, url)["Requests"]["A: openai/acme-secret-model"] == "0"
    response = client.get("/compare/?kind=tenant&a=acme&b=globex&range=24h")
    rows = _rows(response)
    assert (rows["requests"]["a"], rows["requests"]["b"]) == (0, 2)
    assert [option.value for option in response.context["choice"].options if option.requests] == ["globex"]
    rows = _rows(client.get("/compare/?kind=feature&a=acme-secret&b=globex-chat&range=24h&tenant=acme"))
    assert (rows["requests"]["a"], rows["requests"]["b"]) == (0, 0)
    response = client.get("/compare/?kind=range&range=24h")
    assert _rows(response)["requests"]["b"] == 2


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("kind=tenants", "kind='tenants' is not one of"),
        ("kind=model&a=openai/gpt-4o&b=openai/gpt-4o", "the same model"),
        ("kind=range&a_start=2026-01-01&a_end=2026-01-02", "missing b_start, b_end"),
        (
            "kind=range&a_start=2026-01-02&a_end=2026-01-01&b_start=2026-01-01&b_end=2026-01-02",
            "a_end must be after a_start",
        ),
        ("kind=range&a_start=2026-01-01&a_end=2026-01-02&b_start=2026-01-01&b_end=2026-01-02", "the same time range"),
        (
            "kind=range&a_start=yesterday&a_end=2026-01-02&b_start=2026-01-01&b_end=2026-01-02",
            "a_start 'yesterday' is not an ISO 8601",
        ),
        ("kind=range&a_start=2024-01-01&a_end=2026-01-02&b_start=2026-01-01&b_end=2026-01-02", "at most 400 days"),
        ("kind=range&a=summarize", "a time-range comparison takes"),
        ("kind=feature&a_start=2026-01-01", "only apply with kind=range"),
        ("kind=model&range=3y", "range must be one of 1h, 24h, 7d, 30d"),
        ("kind=model&a=" + "x" * 301, "longer than 300 characters"),
    ],
)
def test_bad_parameters_are_a_400_with_the_reason(client: Client, owner: Any, query: str, reason: str) -> None:
    client.force_login(owner)
    response = client.get(f"/compare/?{query}")
    assert response.status_code == 400
    assert reason in response.content.decode().replace("&#x27;", "'")


def test_empty_state_when_nothing_to_compare(client: Client, owner: Any) -> None:
    client.force_login(owner)
    response = client.get("/compare/")
    assert response.status_code == 200
    assert b"OTEL_EXPORTER_OTLP_ENDPOINT" in response.content
    response = client.get("/compare/?kind=feature&a=nothing&b=none-either")
    assert response.status_code == 200
    assert b"Neither nothing nor none-either has calls" in response.content


def test_histograms_share_one_grid() -> None:
    a = (np.array([0.0, 100.0, 200.0]), np.array([1, 2, 3]))
    b = (np.array([400.0]), np.array([5]))
    binned = common_bins({"A": a, "B": b})
    assert np.array_equal(binned["A"][0], binned["B"][0])
    assert binned["A"][1].sum() == 6 and binned["B"][1].sum() == 5
    assert 100 / 1.2 < binned["A"][0][0] < 100 and binned["B"][1][binned["B"][1] > 0].tolist() == [5]
    assert 1 < binned["A"][0].size <= 48
    # Every call at one latency: a peak inside the frame, not a line on its edge.
    _, counts = common_bins({"A": (np.array([800.0]), np.array([4]))})["A"]
    assert counts.sum() == 4 and 0 < int(np.argmax(counts)) < counts.size - 1


def test_model_values_with_a_slash_resolve_to_their_pair() -> None:
    options = [
        Option("meta-llama/Llama-3.1-8B", "", 5, provider="", model="meta-llama/Llama-3.1-8B"),
        Option("vllm/Qwen/Qwen3-8B", "", 2, provider="vllm", model="Qwen/Qwen3-8B"),
    ]
    assert _split_model("meta-llama/Llama-3.1-8B", options) == ("", "meta-llama/Llama-3.1-8B")
    assert _split_model("vllm/Qwen/Qwen3-8B", options) == ("vllm", "Qwen/Qwen3-8B")
    assert _split_model("vllm/other/model", options) == ("vllm", "other/model")
    assert _split_model("openai/gpt-4o", []) == ("openai", "gpt-4o")
    assert _split_model("someone/some-model", []) == ("", "someone/some-model")
    assert _split_model("gpt-4o", options) == ("", "gpt-4o")
