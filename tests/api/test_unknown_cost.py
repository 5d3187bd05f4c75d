"""Unknown is never shown as zero: a cost over calls none of which is priced is null (an
empty CSV cell), every money figure comes with `cost_unknown_requests`, and every money
figure is on one scale (10 decimals), in the raw current hour and in rolled-up hours."""

from __future__ import annotations

import csv
import io
import re
import time
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.rollups.runner import rollup_pending
from tests.api.conftest import ACME_CALLS, GLOBEX_CALLS
from tests.otlp_helpers import LLM_ATTRIBUTES, make_traces, protobuf_body

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("traffic")]

MONEY = ("cost_usd", "cost_per_1k_requests", "cost_per_successful_task", "cache_savings_usd")
UNPRICED = {**LLM_ATTRIBUTES, "gen_ai.request.model": "mystery-model", "gen_ai.response.model": "mystery-model-1"}
UNPRICED_CALLS = 2
ON_THE_SCALE = re.compile(r"-?\d+\.\d{10}")


@pytest.fixture(autouse=True)
def unpriced(ingest_key: str) -> None:
    spans = make_traces(UNPRICED_CALLS, tenant="acme", llm_attributes=UNPRICED)
    response = Client().post("/v1/traces", data=protobuf_body(spans), content_type="application/x-protobuf",
                             headers={"Authorization": f"Bearer {ingest_key}"})  # fmt: skip
    assert response.status_code == 200


def _rows(client: Client, **params: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/metrics", {"range": "24h", "metrics": ",".join(MONEY), **params})
    assert response.status_code == 200, response.content
    return response.json()["rows"]


def test_a_cost_over_unpriced_calls_only_is_null_with_its_count(owner_client: Client) -> None:
    [row] = _rows(owner_client, model="mystery-model")
    assert {name: row[name] for name in MONEY} == dict.fromkeys(MONEY)
    assert row["cost_unknown_requests"] == UNPRICED_CALLS


def test_partly_priced_is_the_known_sum_plus_the_unknown_count(owner_client: Client) -> None:
    [row] = _rows(owner_client)
    priced = _rows(owner_client, model="gpt-4o-mini")[0]
    assert Decimal(row["cost_usd"]) == Decimal(priced["cost_usd"]) > 0
    assert row["cost_unknown_requests"] == UNPRICED_CALLS and priced["cost_unknown_requests"] == 0
    calls = ACME_CALLS + GLOBEX_CALLS + UNPRICED_CALLS
    # The known cost over every call (the unpriced ones add calls, not cost), on the one scale.
    assert Decimal(row["cost_per_1k_requests"]) == (Decimal(row["cost_usd"]) * 1000 / calls).quantize(Decimal("1e-10"))


def test_grouped_rows_each_carry_their_own_unknown_count(owner_client: Client) -> None:
    rows = {row["model"]: row for row in _rows(owner_client, group_by="model")}
    assert rows["mystery-model"]["cost_usd"] is None and rows["mystery-model"]["cost_unknown_requests"] == 2
    assert rows["gpt-4o-mini"]["cost_usd"] is not None and rows["gpt-4o-mini"]["cost_unknown_requests"] == 0


def test_no_calls_cost_a_known_zero(owner_client: Client) -> None:
    [row] = _rows(owner_client, tenant="nobody")
    assert row["cost_usd"] == "0E-10" or Decimal(row["cost_usd"]) == 0
    assert row["cost_unknown_requests"] == 0 and row["cost_per_1k_requests"] is None


def test_csv_leaves_unknown_cells_empty_and_has_the_count_column(owner_client: Client) -> None:
    response = owner_client.get(
        "/api/v1/metrics", {"range": "24h", "metrics": "cost_usd", "group_by": "model", "format": "csv"}
    )
    rows = {row["model"]: row for row in csv.DictReader(io.StringIO(response.content.decode()))}
    assert rows["mystery-model"]["cost_usd"] == "" and rows["mystery-model"]["cost_unknown_requests"] == "2"
    assert Decimal(rows["gpt-4o-mini"]["cost_usd"]) > 0 and rows["gpt-4o-mini"]["cost_unknown_requests"] == "0"


@pytest.mark.parametrize("rolled_up", [False, True])
def test_every_money_figure_is_on_one_scale(owner_client: Client, ingest_key: str, rolled_up: bool) -> None:
    if rolled_up:  # the same traffic three hours ago, from rollup rows
        spans = make_traces(3, tenant="acme", start_ns=time.time_ns() - 3 * 3600 * 10**9)
        response = Client().post("/v1/traces", data=protobuf_body(spans), content_type="application/x-protobuf",
                                 headers={"Authorization": f"Bearer {ingest_key}"})  # fmt: skip
        assert response.status_code == 200
        assert rollup_pending() >= 1
    for granularity in (None, "hour"):
        params = {"granularity": granularity} if granularity else {}
        for row in _rows(owner_client, model="gpt-4o-mini", **params):
            for name in MONEY:
                assert row[name] is None or ON_THE_SCALE.fullmatch(row[name]), (name, row[name])
        [total] = _rows(owner_client, model="gpt-4o-mini")
        assert all(ON_THE_SCALE.fullmatch(total[name]) for name in MONEY), total
