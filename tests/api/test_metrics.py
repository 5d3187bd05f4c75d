"""GET /api/v1/metrics and /api/v1/dimensions: the numbers, scoped to the caller, in JSON
and CSV. Spans go in through the real receiver; the query layer reads them raw."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.accounts.models import Project
from tests.api.conftest import ACME_CALLS, GLOBEX_CALLS, client_for, ingest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("traffic")]

TOTAL_CALLS = ACME_CALLS + GLOBEX_CALLS
# The LLM span of make_traces lasts 800 ms less 1 us.
E2E_MS = 800.0


def get(client: Client, **params: Any) -> dict[str, Any]:
    params = {key: value for key, value in {"range": "24h", **params}.items() if value is not None}
    response = client.get("/api/v1/metrics", params)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    return response.json()


def get_csv(client: Client, **params: Any) -> list[dict[str, str]]:
    response = client.get("/api/v1/metrics", {"range": "24h", "format": "csv", **params})
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def totals(document: dict[str, Any]) -> dict[str, Any]:
    assert len(document["rows"]) == 1, document["rows"]
    return document["rows"][0]


def test_owner_totals_cover_every_tenant(owner_client: Client) -> None:
    row = totals(get(owner_client, metrics="requests,errors,input_tokens,cost_usd"))
    assert row["time"] is None
    assert (row["requests"], row["errors"], row["input_tokens"]) == (TOTAL_CALLS, 0, TOTAL_CALLS * 1200)
    assert Decimal(row["cost_usd"]) > 0


def test_document_echoes_the_query_and_describes_the_metrics(owner_client: Client) -> None:
    before = datetime.now(UTC)
    document = get(owner_client, metrics="requests,cost_usd,e2e_ms_p99,error_rate", tenant="acme,globex")
    query = document["query"]
    assert query["metrics"] == ["requests", "cost_usd", "e2e_ms_p99", "error_rate"]
    assert (query["range"], query["granularity"], query["group_by"]) == ("24h", None, [])
    assert query["filters"] == {"tenants": ["acme", "globex"]}
    # A preset ends at the last 10-second boundary and starts on the hour, as on the pages.
    end = datetime.fromisoformat(query["end"])
    assert query["end"].endswith("Z") and before - timedelta(seconds=10) < end <= datetime.now(UTC)
    assert end.second % 10 == 0 and end.microsecond == 0
    assert datetime.fromisoformat(query["start"]) == end.replace(minute=0, second=0) - timedelta(hours=24)
    assert document["metrics"]["cost_usd"]["unit"] == "USD"
    assert document["metrics"]["e2e_ms_p99"]["unit"] == "ms"
    # A money metric brings the count of calls whose cost is unknown along.
    assert set(document["metrics"]) == {*query["metrics"], "cost_unknown_requests"}
    row = totals(document)
    # USD as an exact fixed-point string; a percentile with its sample count.
    assert isinstance(row["cost_usd"], str) and "E" not in row["cost_usd"]
    assert row["e2e_ms_p99"] == pytest.approx(E2E_MS, rel=0.01)
    assert row["e2e_ms_p99_samples"] == TOTAL_CALLS
    assert row["error_rate"] == 0.0


def test_outsider_gets_only_globex_totals(owner_client: Client, outsider_client: Client) -> None:
    everything = totals(get(owner_client, metrics="requests,cost_usd,e2e_ms_p50"))
    mine = totals(get(outsider_client, metrics="requests,cost_usd,e2e_ms_p50"))
    assert mine["requests"] == GLOBEX_CALLS
    assert mine["e2e_ms_p50_samples"] == GLOBEX_CALLS
    # Every call is priced alike, so globex's share of the cost is its share of the calls.
    assert Decimal(mine["cost_usd"]) * TOTAL_CALLS == Decimal(everything["cost_usd"]) * GLOBEX_CALLS


def test_outsider_filtering_on_another_tenant_gets_no_data_not_an_error(outsider_client: Client) -> None:
    row = totals(get(outsider_client, metrics="requests,cost_usd,e2e_ms_p99", tenant="acme"))
    assert (row["requests"], Decimal(row["cost_usd"]), row["e2e_ms_p99"], row["e2e_ms_p99_samples"]) == (0, 0, None, 0)
    both = totals(get(outsider_client, metrics="requests", tenant=["acme", "globex"]))
    assert both["requests"] == GLOBEX_CALLS


def test_outsider_grouping_by_tenant_sees_only_globex(owner_client: Client, outsider_client: Client) -> None:
    owner_rows = get(owner_client, metrics="requests", group_by="tenant")["rows"]
    assert [(row["tenant"], row["requests"]) for row in owner_rows] == [("acme", ACME_CALLS), ("globex", GLOBEX_CALLS)]
    rows = get(outsider_client, metrics="requests", group_by="tenant,feature", tenant="acme,globex")["rows"]
    assert [(row["tenant"], row["feature"], row["requests"]) for row in rows] == [("globex", "search", GLOBEX_CALLS)]


def test_outsider_csv_is_scoped_too(outsider_client: Client) -> None:
    assert [row["requests"] for row in get_csv(outsider_client, metrics="requests")] == [str(GLOBEX_CALLS)]
    assert [row["requests"] for row in get_csv(outsider_client, metrics="requests", tenant="acme")] == ["0"]
    grouped = get_csv(outsider_client, metrics="requests", group_by="tenant")
    assert [(row["tenant"], row["requests"]) for row in grouped] == [("globex", str(GLOBEX_CALLS))]


def test_read_key_acts_with_its_users_scope(client: Client, outsider_key: str, outsider_client: Client) -> None:
    params = {"metrics": "requests,cost_usd", "group_by": "tenant", "range": "24h"}
    by_key = client.get("/api/v1/metrics", params, headers={"Authorization": f"Bearer {outsider_key}"})
    by_session = outsider_client.get("/api/v1/metrics", params)
    assert by_key.status_code == 200
    assert [row["tenant"] for row in by_key.json()["rows"]] == ["globex"]
    assert by_key.json()["rows"] == by_session.json()["rows"]


def test_teammate_sees_every_tenant_and_a_user_without_access_nothing(teammate: Any) -> None:
    assert totals(get(client_for(teammate), metrics="requests"))["requests"] == TOTAL_CALLS
    newcomer = get_user_model().objects.create_user("newcomer")
    assert totals(get(client_for(newcomer), metrics="requests"))["requests"] == 0
    assert get(client_for(newcomer), metrics="requests", group_by="tenant")["rows"] == []


def test_hourly_buckets_cover_the_range(owner_client: Client) -> None:
    rows = get(owner_client, metrics="requests", granularity="hour")["rows"]
    # 24 hours that do not start on the hour touch 25 hourly buckets (first and last partial).
    assert len(rows) in (24, 25)
    times = [datetime.fromisoformat(row["time"]) for row in rows]
    assert times == sorted(times) and all(moment.minute == 0 for moment in times)
    assert sum(row["requests"] for row in rows) == TOTAL_CALLS


def test_filters_by_feature_and_project(owner_client: Client, project: Project) -> None:
    assert totals(get(owner_client, metrics="requests", feature="search"))["requests"] == GLOBEX_CALLS
    assert totals(get(owner_client, metrics="requests", project=str(project.pk)))["requests"] == TOTAL_CALLS
    other = Project.objects.create(name="other")
    assert totals(get(owner_client, metrics="requests", project=str(other.pk)))["requests"] == 0


@pytest.mark.parametrize(
    "offset_start",
    [
        lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S"),  # naive: UTC
        lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S"),
        lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        lambda moment: (moment + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"),
        # "+02:00" sent unencoded arrives as " 02:00".
        lambda moment: (moment + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S 02:00"),
    ],
)
def test_start_and_end_in_any_iso_form(owner_client: Client, offset_start: Any) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    document = get(owner_client, metrics="requests", range=None, start=offset_start(start))
    assert datetime.fromisoformat(document["query"]["start"]) == start
    assert document["query"]["range"] is None
    assert totals(document)["requests"] == TOTAL_CALLS


def test_csv_matches_json(owner_client: Client) -> None:
    params = {"metrics": "requests,cost_usd,e2e_ms_p95,error_rate,errors_by_type", "group_by": "tenant,model"}
    params["granularity"] = "day"
    document = get(owner_client, **params)
    response = owner_client.get("/api/v1/metrics", {"range": "24h", "format": "csv", **params})
    disposition = response["Content-Disposition"]
    assert disposition.startswith('attachment; filename="observatory-metrics-') and disposition.endswith('.csv"')
    reader = csv.reader(io.StringIO(response.content.decode()))
    header, *rows = list(reader)
    expected = ["time", "tenant", "model", "requests", "cost_usd", "e2e_ms_p95", "e2e_ms_p95_samples"]
    assert header == [*expected, "error_rate", "errors_by_type", "cost_unknown_requests"]
    assert len(rows) == len(document["rows"]) == 2

    def cell(value: Any) -> str:
        return "" if value is None else "{}" if value == {} else str(value)

    for csv_row, json_row in zip(rows, document["rows"], strict=True):
        assert csv_row == [cell(json_row[column]) for column in header]


def test_csv_neutralises_formulas_in_names(owner_client: Client, ingest_key: str) -> None:
    ingest(Client(), ingest_key, 1, "=HYPERLINK(1)", feature="-cmd")
    rows = get_csv(owner_client, metrics="requests", group_by="tenant,feature")
    assert ("'=HYPERLINK(1)", "'-cmd") in [(row["tenant"], row["feature"]) for row in rows]
    names = [row["tenant"] for row in get(owner_client, metrics="requests", group_by="tenant")["rows"]]
    assert "=HYPERLINK(1)" in names


def test_empty_csv_still_has_its_header(outsider_client: Client) -> None:
    response = outsider_client.get(
        "/api/v1/metrics", {"range": "1h", "format": "csv", "metrics": "requests", "group_by": "tenant", "tenant": "x"}
    )
    assert response.content.decode().splitlines() == ["time,tenant,requests"]


def test_dimension_values_are_scoped(owner_client: Client, outsider_client: Client) -> None:
    def values(client: Client, dimension: str, **params: Any) -> list[str]:
        response = client.get(f"/api/v1/dimensions/{dimension}", {"range": "24h", **params})
        assert response.status_code == 200, response.content
        document = response.json()
        assert document["dimension"] == dimension and document["query"]["range"] == "24h"
        return document["values"]

    assert values(owner_client, "tenant") == ["acme", "globex"]
    assert values(owner_client, "feature") == ["search", "support-chat"]
    assert values(owner_client, "feature", tenant="acme") == ["support-chat"]
    assert values(outsider_client, "tenant") == ["globex"]
    assert values(outsider_client, "feature") == ["search"]
    assert values(outsider_client, "tenant", tenant="acme") == []
    assert values(outsider_client, "provider") == ["openai"]


def _semantic_cache_hit(ingest_key: str, tenant: str = "acme") -> None:
    """A request answered from the app's semantic cache: a root span and its lookup, no call."""
    import time

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.otlp_helpers import protobuf_body

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-api"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    t0 = time.time_ns() - 60 * 10**9
    with tracer.start_as_current_span("POST /chat", start_time=t0, attributes={"tenant.id": tenant}):
        lookup = tracer.start_span("semantic cache lookup", start_time=t0 + 1_000)
        lookup.set_attribute("observatory.semantic_cache.hit", True)
        lookup.end(end_time=t0 + 5_000_000)
    provider.shutdown()
    body = protobuf_body(exporter.get_finished_spans())
    headers = {"Authorization": f"Bearer {ingest_key}"}
    response = Client().post("/v1/traces", data=body, content_type="application/x-protobuf", headers=headers)
    assert response.status_code == 200, response.content


def test_a_group_is_there_only_with_data_for_the_question(owner_client: Client, ingest_key: str) -> None:
    """A semantic-cache hit has no provider or model: grouped by model, cost and calls show no
    blank model with 0 calls and a cost of 0; asked for the cache hit rate, its group is there."""
    _semantic_cache_hit(ingest_key)
    by_model = get(owner_client, metrics="requests,cost_usd", group_by="model")["rows"]
    assert [(row["model"], row["requests"]) for row in by_model] == [("gpt-4o-mini", TOTAL_CALLS)]
    hourly = get(owner_client, metrics="requests", group_by="model", granularity="hour")["rows"]
    assert {row["model"] for row in hourly} == {"gpt-4o-mini"}
    assert [row["model"] for row in get_csv(owner_client, metrics="cost_usd", group_by="model")] == ["gpt-4o-mini"]
    by_provider = get(owner_client, metrics="requests,semantic_cache_hit_rate", group_by="provider")["rows"]
    assert [(row["provider"], row["requests"], row["semantic_cache_hit_rate"]) for row in by_provider] == [
        ("", 0, 1.0),
        ("openai", TOTAL_CALLS, None),
    ]


def test_a_tenant_whose_traffic_is_all_cache_hits_is_offered(owner_client: Client, ingest_key: str) -> None:
    _semantic_cache_hit(ingest_key, tenant="initech")
    response = owner_client.get("/api/v1/dimensions/tenant", {"range": "24h"})
    assert response.status_code == 200, response.content
    assert response.json()["values"] == ["acme", "globex", "initech"]
    rows = get(owner_client, metrics="semantic_cache_hit_rate", tenant="initech")["rows"]
    assert [row["semantic_cache_hit_rate"] for row in rows] == [1.0]
