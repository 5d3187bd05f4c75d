"""Feature, tenant and model pages: lists, detail pages, their CSVs, and who sees what."""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from django.test import Client
from django.utils import timezone

from apps.dashboard.templatetags.humanize_cost import usd
from apps.metrics.distributions import coarsen, merged_distribution, merged_distributions
from apps.metrics.query import Filters, Query, Scope, run_query
from apps.rollups.runner import rollup_pending
from tests.otlp_helpers import LLM_ATTRIBUTES, make_traces, protobuf_body

pytestmark = pytest.mark.django_db

# Names as telemetry sends them: slashes and colons included.
SLASHED_FEATURE = "team/summarize:v2"
SLASHED_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA = {**LLM_ATTRIBUTES, "gen_ai.provider.name": "vllm", "gen_ai.request.model": SLASHED_MODEL}
LLAMA.pop("gen_ai.response.model")
EVERYTHING = Scope.everything()


def _ingest(client: Client, key: str, **kwargs: Any) -> None:
    body = protobuf_body(make_traces(**kwargs))
    response = client.post(
        "/v1/traces", data=body, content_type="application/x-protobuf", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200


@pytest.fixture
def traffic(client: Client, ingest_key: str) -> None:
    """acme: 3 calls of secret-acme-feature on gpt-4o-mini. globex: 2 calls of the slashed
    feature on gpt-4o-mini and 1 call of it on the self-hosted Llama (no price: cost unknown)."""
    _ingest(client, ingest_key, count=3, tenant="acme", feature="secret-acme-feature")
    _ingest(client, ingest_key, count=2, tenant="globex", feature=SLASHED_FEATURE)
    _ingest(client, ingest_key, count=1, tenant="globex", feature=SLASHED_FEATURE, llm_attributes=LLAMA)


def _totals(scope: Scope = EVERYTHING, **filters: tuple[str, ...]) -> dict[str, Any]:
    now = timezone.now()
    query = Query(("cost_usd", "requests", "e2e_ms_p50"), now - timedelta(hours=24), now, Filters(**filters))
    return run_query(query, scope).rows[0]


def _csv(client: Client, url: str) -> list[dict[str, str]]:
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def _html(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def test_pages_need_login(client: Client) -> None:
    for url in ("/features/", "/tenants/", "/models/", "/features/x/", "/tenants/x/", "/models/openai/gpt-4o/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/")


def test_empty_list_explains_how_to_send_data(client: Client, owner: Any) -> None:
    client.force_login(owner)
    html = _html(client, "/features/")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in html


def test_feature_list_shows_every_feature_with_its_numbers_and_links(client: Client, traffic: None, owner: Any) -> None:
    client.force_login(owner)
    html = _html(client, "/features/?range=24h")
    assert "Cost by hour, stacked by feature" in html
    assert "Every feature with calls" in html
    # Links to each detail page, the name percent-encoded where a URL needs it, the range kept.
    assert 'href="/features/secret-acme-feature/?range=24h"' in html
    assert 'href="/features/team/summarize:v2/?range=24h"' in html
    acme = _totals(features=("secret-acme-feature",))
    assert acme["requests"] == 3
    assert usd(acme["cost_usd"]) in html

    rows = _csv(client, "/features/?range=24h&csv=1")
    by_name = {row["Feature"]: row for row in rows}
    assert set(by_name) == {"secret-acme-feature", SLASHED_FEATURE}
    assert by_name["secret-acme-feature"]["Requests"] == "3"
    assert Decimal(by_name["secret-acme-feature"]["Cost (USD)"]) == acme["cost_usd"]
    assert Decimal(by_name["secret-acme-feature"]["Cost per 1,000 requests (USD)"]) == acme["cost_usd"] / 3 * 1000
    assert by_name[SLASHED_FEATURE]["Requests"] == "3"
    assert by_name[SLASHED_FEATURE]["Calls with unknown cost"] == "1"
    assert float(by_name[SLASHED_FEATURE]["Error rate"]) == 0.0
    assert float(by_name[SLASHED_FEATURE]["p50 latency (ms)"]) == pytest.approx(800, rel=0.01)
    assert by_name[SLASHED_FEATURE]["Latency samples"] == "3"
    # Highest cost first by default; ?sort= orders the page and the CSV alike.
    assert [row["Feature"] for row in rows] == ["secret-acme-feature", SLASHED_FEATURE]
    rows = _csv(client, "/features/?range=24h&csv=1&sort=name")
    assert [row["Feature"] for row in rows] == ["secret-acme-feature", SLASHED_FEATURE]
    rows = _csv(client, "/features/?range=24h&csv=1&sort=-name")
    assert [row["Feature"] for row in rows] == [SLASHED_FEATURE, "secret-acme-feature"]
    table = _html(client, "/features/?range=24h&sort=-name").split('<table class="breakdown">')[1]
    assert table.index(SLASHED_FEATURE) < table.index("secret-acme-feature")
    assert 'href="?range=24h&amp;sort=name">Feature ▼</a>' in table


def test_models_list_groups_by_provider_and_model(client: Client, traffic: None, owner: Any) -> None:
    client.force_login(owner)
    html = _html(client, "/models/?range=24h")
    assert 'href="/models/openai/gpt-4o-mini/?range=24h"' in html
    assert f'href="/models/vllm/{SLASHED_MODEL}/?range=24h"' in html
    rows = _csv(client, "/models/?range=24h&csv=1")
    assert [(row["Provider"], row["Model"], row["Requests"]) for row in rows] == [
        ("openai", "gpt-4o-mini", "5"),
        ("vllm", SLASHED_MODEL, "1"),
    ]
    # The vLLM call has no price: its cost is unknown (an empty cell), not $0.
    assert rows[1]["Cost (USD)"] == "" and rows[1]["Cost per 1,000 requests (USD)"] == ""
    assert rows[1]["Calls with unknown cost"] == "1"
    assert Decimal(rows[0]["Cost (USD)"]) > 0 and rows[0]["Calls with unknown cost"] == "0"


def test_tenant_list_and_its_csv(client: Client, traffic: None, teammate: Any) -> None:
    client.force_login(teammate)
    html = _html(client, "/tenants/?range=24h")
    assert 'href="/tenants/acme/?range=24h"' in html and 'href="/tenants/globex/?range=24h"' in html
    rows = _csv(client, "/tenants/?range=24h&csv=1")
    assert {row["Tenant"]: row["Requests"] for row in rows} == {"acme": "3", "globex": "3"}


def test_feature_detail_with_a_slashed_name(client: Client, traffic: None, owner: Any) -> None:
    client.force_login(owner)
    html = _html(client, "/features/team/summarize:v2/?range=24h")
    assert f"Feature: {SLASHED_FEATURE}" in html
    assert '<div class="value">3</div>' in html  # three calls of this feature, not six
    for title in (
        "Cost by hour, stacked by model",
        "Requests, errors and retries",
        "Token mix",
        "Cost per 1,000 requests",
        "Retry rate",
        "Latency percentiles",
        "Time to first token percentiles",
        "Latency distribution",
        "Cache hit rates",
        "By model",
    ):
        assert title in html, title
    # Captions carry unit, range and samples.
    assert "Unit: USD per 1,000 calls. Last 24h, 3 samples." in html
    assert "end-to-end over 3 calls" in html
    assert '"name":"input, not cached"' in html and '"name":"reasoning"' in html
    # The breakdown rows link to the model's page, filtered to this feature.
    assert 'href="/models/openai/gpt-4o-mini/?range=24h&amp;feature=team%2Fsummarize%3Av2"' in html

    rows = _csv(client, "/features/team/summarize:v2/?range=24h&csv=models")
    assert [(row["Provider"], row["Model"], row["Requests"]) for row in rows] == [
        ("openai", "gpt-4o-mini", "2"),
        ("vllm", SLASHED_MODEL, "1"),
    ]
    expected = _totals(features=(SLASHED_FEATURE,), models=("gpt-4o-mini",))
    assert Decimal(rows[0]["Cost (USD)"]) == expected["cost_usd"]


def test_percent_encoded_links_resolve(client: Client, ingest_key: str, owner: Any) -> None:
    _ingest(client, ingest_key, count=1, tenant="acme", feature="50% off? #launch")
    client.force_login(owner)
    html = _html(client, "/features/?range=24h")
    match = re.search(r'href="(/features/50[^"]*)"', html)
    assert match is not None
    assert match[1] == "/features/50%25%20off%3F%20%23launch/?range=24h"
    assert "Feature: 50% off? #launch" in _html(client, match[1])


def test_tenant_detail_breaks_down_by_feature(client: Client, traffic: None, owner: Any) -> None:
    client.force_login(owner)
    html = _html(client, "/tenants/globex/?range=24h")
    assert "Tenant: globex" in html and "By feature" in html
    assert "secret-acme-feature" not in html
    assert 'href="/features/team/summarize:v2/?range=24h&amp;tenant=globex"' in html
    rows = _csv(client, "/tenants/globex/?range=24h&csv=features")
    assert [(row["Feature"], row["Requests"], row["Calls with unknown cost"]) for row in rows] == [
        (SLASHED_FEATURE, "3", "1")
    ]


def test_model_detail_with_a_slashed_model_breaks_down_by_feature_and_tenant(
    client: Client, traffic: None, owner: Any
) -> None:
    client.force_login(owner)
    html = _html(client, f"/models/vllm/{SLASHED_MODEL}/?range=24h")
    assert f"Model: vllm / {SLASHED_MODEL}" in html
    assert "By feature" in html and "By tenant" in html
    assert '<div class="value">1</div>' in html
    html = _html(client, "/models/openai/gpt-4o-mini/?range=24h")
    assert '<div class="value">5</div>' in html
    assert "Cost by hour, stacked by feature" in html
    tenants = _csv(client, "/models/openai/gpt-4o-mini/?range=24h&csv=tenants")
    assert {row["Tenant"]: row["Requests"] for row in tenants} == {"acme": "3", "globex": "2"}
    features = _csv(client, "/models/openai/gpt-4o-mini/?range=24h&csv=features")
    assert {row["Feature"]: row["Requests"] for row in features} == {"secret-acme-feature": "3", SLASHED_FEATURE: "2"}
    # Another filter in the URL narrows the page; the page's own value wins over a filter on it.
    html = _html(client, "/models/openai/gpt-4o-mini/?range=24h&tenant=globex&model=gpt-4o")
    assert '<div class="value">2</div>' in html
    assert "chip" in html and "tenant: globex" in html and "model: gpt-4o<" not in html


def test_detail_of_something_without_calls_says_so(client: Client, traffic: None, owner: Any) -> None:
    client.force_login(owner)
    html = _html(client, "/features/never-seen/?range=24h")
    assert "No LLM calls of feature never-seen" in html
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in html


def test_outsider_never_sees_another_tenants_numbers_or_names(client: Client, traffic: None, outsider: Any) -> None:
    client.force_login(outsider)

    def visible(text: str) -> str:
        return text.replace("globex", "")

    for url in (
        "/features/?range=24h",
        "/tenants/?range=24h",
        "/models/?range=24h",
        "/features/team/summarize:v2/?range=24h",
        "/tenants/globex/?range=24h",
        "/models/openai/gpt-4o-mini/?range=24h",
    ):
        html = _html(client, url)
        assert "acme" not in visible(html), url
    for url in (
        "/features/?range=24h&csv=1",
        "/tenants/?range=24h&csv=1",
        "/models/?range=24h&csv=1",
        "/features/team/summarize:v2/?range=24h&csv=models",
        "/tenants/globex/?range=24h&csv=features",
        "/models/openai/gpt-4o-mini/?range=24h&csv=features",
        "/models/openai/gpt-4o-mini/?range=24h&csv=tenants",
    ):
        text = client.get(url).content.decode()
        assert "acme" not in visible(text), url

    # gpt-4o-mini carries 5 calls, 3 of them acme's: the outsider's page and CSVs count 2.
    html = _html(client, "/models/openai/gpt-4o-mini/?range=24h")
    assert '<div class="value">2</div>' in html and '<div class="value">5</div>' not in html
    rows = _csv(client, "/models/?range=24h&csv=1")
    assert [(row["Model"], row["Requests"]) for row in rows] == [("gpt-4o-mini", "2"), (SLASHED_MODEL, "1")]
    assert [row["Tenant"] for row in _csv(client, "/tenants/?range=24h&csv=1")] == ["globex"]
    # Another tenant's page does not exist for them, CSV included.
    assert client.get("/tenants/acme/?range=24h").status_code == 404
    assert client.get("/tenants/acme/?range=24h&csv=features").status_code == 404
    assert client.get("/tenants/nobody/").status_code == 404
    # Asking for acme's slice (echoed in the filter chip: it is what they typed) shows nothing.
    html = _html(client, "/models/openai/gpt-4o-mini/?range=24h&tenant=acme")
    assert "No LLM calls of model openai / gpt-4o-mini" in html and '<div class="value">' not in html
    assert "acme" not in _csv(client, "/features/?range=24h&csv=1&tenant=acme").__repr__().replace("globex", "")
    # A feature only acme uses: a page without numbers (the name is only what they typed).
    html = _html(client, "/features/secret-acme-feature/?range=24h")
    assert "No LLM calls of feature secret-acme-feature" in html
    assert '<div class="value">' not in html


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/features/?range=3y", "range must be one of 1h, 24h, 7d, 30d"),
        ("/tenants/?sort=bogus", "sort=&#x27;bogus&#x27; is not one of"),
        ("/models/?end=2026-01-02", "end needs a start"),
        ("/features/chat/?range=3y", "range must be one of 1h, 24h, 7d, 30d"),
        ("/models/openai/gpt-4o/?end=2026-01-01&start=2026-02-01", "end must be after start"),
        ("/features/chat/?csv=tenants", "csv=&#x27;tenants&#x27; is not one of models"),
    ],
)
def test_bad_parameters_are_a_400_with_the_reason(client: Client, owner: Any, url: str, message: str) -> None:
    client.force_login(owner)
    response = client.get(url)
    assert response.status_code == 400
    assert message in response.content.decode()


def test_merged_distribution_reads_rollups_and_the_open_edge_within_the_scope(client: Client, ingest_key: str) -> None:
    three_hours_ago = time.time_ns() - 3 * 3600 * 10**9
    _ingest(client, ingest_key, count=4, tenant="acme", feature="chat", start_ns=three_hours_ago)
    _ingest(client, ingest_key, count=2, tenant="globex", feature="chat", start_ns=three_hours_ago)
    assert rollup_pending() >= 1  # the closed hour now comes from RollupHour rows
    _ingest(client, ingest_key, count=1, tenant="globex", feature="chat")  # the open hour, from raw spans
    now = timezone.now()
    start, end = now - timedelta(hours=6), now + timedelta(minutes=1)

    values, counts = merged_distribution("e2e_ms", start, end, Filters(), EVERYTHING)
    assert int(counts.sum()) == 7
    assert np.all(np.diff(values) > 0)
    assert values[np.argmax(counts)] == pytest.approx(800, rel=0.01)
    query = Query(("e2e_ms_p50",), start, end, Filters(features=("chat",)))
    assert run_query(query, EVERYTHING).rows[0]["e2e_ms_p50_samples"] == 7

    globex_only = Scope(tenants=("globex",))
    assert int(merged_distribution("e2e_ms", start, end, Filters(), globex_only)[1].sum()) == 3
    asked_for_acme = merged_distribution("e2e_ms", start, end, Filters(tenants=("acme",)), globex_only)
    assert asked_for_acme[1].size == 0
    assert merged_distribution("e2e_ms", start, end, Filters(), Scope(tenants=()))[1].size == 0
    both = merged_distributions(("e2e_ms", "ttft_ms"), start, end, Filters(tenants=("acme",)), EVERYTHING)
    assert int(both["e2e_ms"][1].sum()) == 4 and both["ttft_ms"][1].size == 0
    with pytest.raises(ValueError, match="unknown distribution"):
        merged_distribution("latency", start, end, Filters(), EVERYTHING)


def test_coarsen_keeps_every_count() -> None:
    values = np.array([0.0, 100.0, 101.0, 102.0, 900.0])
    counts = np.array([2, 1, 1, 1, 5])
    wide_values, wide_counts = coarsen(values, counts, per_decade=10)
    assert wide_counts.sum() == counts.sum()
    assert wide_values[0] == 0.0 and wide_counts[0] == 2
    assert list(wide_counts[1:]) == [3, 5]
