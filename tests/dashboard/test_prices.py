from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.pricing.models import Price
from tests.otlp_helpers import make_traces, protobuf_body

pytestmark = pytest.mark.django_db

PRICED = {
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 100,
}


def _llm(model: str, provider: str = "openai", **extra: Any) -> dict[str, Any]:
    return {**PRICED, "gen_ai.provider.name": provider, "gen_ai.request.model": model, **extra}


def _ingest(client: Client, key: str, **kwargs: Any) -> None:
    body = protobuf_body(make_traces(**kwargs))
    response = client.post(
        "/v1/traces", data=body, content_type="application/x-protobuf", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200


def _csv(client: Client, url: str) -> list[dict[str, str]]:
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_prices_needs_login(client: Client) -> None:
    response = client.get("/prices/")
    assert response.status_code == 302


def test_catalog_in_force_now_and_history(client: Client, teammate: Any) -> None:
    client.force_login(teammate)
    now = timezone.now()
    Price.objects.create(
        provider="openai",
        model_pattern="future-model",
        effective_from=now + timedelta(days=3),
        input_per_mtok=Decimal("1.5"),
        output_per_mtok=Decimal(10),
        notes="announced",
    )
    response = client.get("/prices/")
    assert response.status_code == 200
    patterns = [row["model_pattern"] for row in response.context["prices"]]
    in_force = Price.objects.filter(effective_from__lte=now).exclude(effective_to__lte=now)
    assert len(patterns) == in_force.count() > 0
    assert "future-model" not in patterns
    html = response.content.decode()
    assert "gpt-4o-mini" in html and "USD per 1 million tokens" in html
    assert "https://developers.openai.com/api/docs/pricing" in html  # the source link
    assert "/admin/pricing/price/" not in html  # admin links are for staff

    history = client.get("/prices/?when=all").context["prices"]
    assert len(history) == Price.objects.count()
    statuses = {row["model_pattern"]: row["status"] for row in history if row["provider"] == "openai"}
    assert statuses["future-model"] == "scheduled"
    assert "ended" in {row["status"] for row in history}
    future = next(row for row in history if row["model_pattern"] == "future-model")
    assert (future["input_per_mtok_text"], future["output_per_mtok_text"]) == ("1.5", "10")

    anthropic = client.get("/prices/?when=all&provider=anthropic").context["prices"]
    assert anthropic and {row["provider"] for row in anthropic} == {"anthropic"}
    assert len(anthropic) == Price.objects.filter(provider="anthropic").count()


def test_catalog_csv_parses(client: Client, teammate: Any) -> None:
    client.force_login(teammate)
    rows = _csv(client, "/prices/?when=all&provider=openai&csv=prices")
    assert len(rows) == Price.objects.filter(provider="openai").count()
    first = rows[0]
    assert set(first) >= {
        "Provider",
        "Model pattern",
        "Effective from",
        "Effective to",
        "Input (USD per 1M tokens)",
        "Cached input (USD per 1M tokens)",
        "Output (USD per 1M tokens)",
        "Source",
        "Retrieved on",
    }
    mini = next(row for row in rows if row["Model pattern"].startswith("gpt-4o-mini"))
    assert Decimal(mini["Input (USD per 1M tokens)"]) == Decimal("0.15")
    assert Decimal(mini["Output (USD per 1M tokens)"]) == Decimal("0.6")


def test_unpriced_models_listing_and_how_to_add_a_price(client: Client, ingest_key: str, owner: Any) -> None:
    _ingest(client, ingest_key, count=3, llm_attributes=_llm("gpt-9-preview"))
    _ingest(client, ingest_key, count=2, llm_attributes=PRICED)
    # Priced, but a stream without usage: its cost is unknown for want of tokens, not of a price.
    no_usage = {k: v for k, v in PRICED.items() if not k.startswith("gen_ai.usage")}
    _ingest(client, ingest_key, count=1, llm_attributes=no_usage)
    # Self-hosted: priced from GPU time later, never listed.
    _ingest(client, ingest_key, count=1, llm_attributes=_llm("meta-llama/Llama-3.1-8B", provider="vllm"))
    client.force_login(owner)
    response = client.get("/prices/?range=24h")
    unpriced = response.context["unpriced"]
    assert [(row["provider"], row["model"]) for row in unpriced.rows] == [("openai", "gpt-9-preview")]
    row = unpriced.rows[0]
    assert (row["cost_unknown_requests"], row["requests"], row["input_tokens"], row["output_tokens"]) == (
        3,
        3,
        3000,
        300,
    )
    assert row["first_seen"] <= row["last_seen"] <= timezone.now()
    assert unpriced.priced_but_unknown == 1
    html = response.content.decode()
    assert "/admin/pricing/price/add/?provider=openai&amp;model_pattern=gpt%5C-9%5C-preview" in html
    assert "python manage.py reprice --since" in html and "load_prices" in html
    assert "1 more calls have an unknown cost although their model has a price" in html

    rows = _csv(client, "/prices/?range=24h&csv=unpriced")
    assert rows == [
        {
            "Provider": "openai",
            "Model": "gpt-9-preview",
            "Calls with unknown cost": "3",
            "Calls": "3",
            "First seen (UTC)": str(row["first_seen"]),
            "Last seen (UTC)": str(row["last_seen"]),
            "Input tokens": "3000",
            "Output tokens": "300",
        }
    ]


def test_outsider_sees_only_their_tenants_unpriced_calls(client: Client, ingest_key: str, outsider: Any) -> None:
    _ingest(client, ingest_key, count=4, tenant="acme", llm_attributes=_llm("acme-secret-model"))
    _ingest(client, ingest_key, count=2, tenant="acme", llm_attributes=_llm("shared-new-model"))
    _ingest(client, ingest_key, count=1, tenant="globex", llm_attributes=_llm("shared-new-model"))
    client.force_login(outsider)
    response = client.get("/prices/?range=24h")
    rows = response.context["unpriced"].rows
    assert [(row["model"], row["cost_unknown_requests"], row["input_tokens"]) for row in rows] == [
        ("shared-new-model", 1, 1000)
    ]
    html = response.content.decode()
    assert "acme-secret-model" not in html
    assert "/admin/pricing/price/add/" not in html and "ask a staff member" in html
    csv_text = client.get("/prices/?range=24h&csv=unpriced").content.decode()
    assert "acme-secret-model" not in csv_text
    # Asking for acme by filter changes nothing: the scope applies on top of the filters.
    assert client.get("/prices/?range=24h&tenant=acme").context["unpriced"].rows == []
    assert "acme-secret-model" not in client.get("/prices/?range=24h&tenant=acme&csv=unpriced").content.decode()


def test_unpriced_listing_empty_state(client: Client, owner: Any) -> None:
    client.force_login(owner)
    response = client.get("/prices/")
    assert response.status_code == 200
    assert b"has a price (self-hosted models aside)" in response.content


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("when=later", "when='later' is not one of now, all"),
        ("csv=everything", "csv='everything' is not one of prices, unpriced"),
        ("range=3y", "range must be one of 1h, 24h, 7d, 30d"),
        ("start=2026-01-02&end=2026-01-01", "end must be after start"),
    ],
)
def test_bad_parameters_are_a_400_with_the_reason(client: Client, owner: Any, query: str, reason: str) -> None:
    client.force_login(owner)
    response = client.get(f"/prices/?{query}")
    assert response.status_code == 400
    assert reason in response.content.decode().replace("&#x27;", "'")


def test_a_model_priced_since_earlier_that_day_is_listed_by_the_hours_its_calls_were_seen(
    client: Client, ingest_key: str, owner: Any
) -> None:
    """Day buckets say both models lacked a price for part of the day; the hours say whether
    their calls of unknown cost came before the price (listed) or only after it (priced;
    those calls lack tokens)."""
    import time_machine

    from apps.pricing.services import PriceBook

    noon = datetime(2026, 5, 6, 12, 30, tzinfo=UTC)
    no_usage = {k: v for k, v in PRICED.items() if not k.startswith("gen_ai.usage")}
    with time_machine.travel(noon - timedelta(hours=4), tick=False):
        _ingest(client, ingest_key, count=2, llm_attributes=_llm("gpt-9-preview"))  # no price yet
    for model in ("gpt-9-preview", "gpt-9-mini"):
        Price.objects.create(
            provider="openai", model_pattern=model, effective_from=noon - timedelta(hours=2),
            input_per_mtok=Decimal(1), output_per_mtok=Decimal(2), notes="added later",
        )  # fmt: skip
    PriceBook.forget()
    with time_machine.travel(noon, tick=False):
        _ingest(client, ingest_key, count=3, llm_attributes={**no_usage, "gen_ai.request.model": "gpt-9-mini"})
        client.force_login(owner)
        unpriced = client.get("/prices/?range=24h").context["unpriced"]
    assert [(row["model"], row["cost_unknown_requests"]) for row in unpriced.rows] == [("gpt-9-preview", 2)]
    row = unpriced.rows[0]
    assert row["first_seen"] == row["last_seen"] == noon.replace(minute=0) - timedelta(hours=4)
    assert unpriced.priced_but_unknown == 3
