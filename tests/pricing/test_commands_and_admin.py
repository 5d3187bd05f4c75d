"""manage.py reprice / unpriced_models / load_prices errors, and the Price admin."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from apps.accounts.models import Project
from apps.pricing.admin import reprice_command
from apps.pricing.models import Price
from apps.pricing.services import price_spans
from apps.telemetry.store import insert_spans
from tests.pricing.helpers import at, make_span


@pytest.fixture
def unpriced_stored(project: Project) -> None:
    spans = [
        make_span("2026-03-01T10:00:00", model="acme-unknown"),
        make_span("2026-03-02T10:00:00", model="acme-unknown"),
        make_span("2026-03-02T11:00:00", model="gpt-4o-mini"),
    ]
    price_spans(spans)
    insert_spans(project.pk, spans)


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_reprice_command_prints_rows_repriced(unpriced_stored: None) -> None:
    Price.objects.create(
        provider="openai",
        model_pattern="acme-unknown",
        effective_from=at("2026-01-01T00:00:00"),
        input_per_mtok=1,
        output_per_mtok=1,
    )
    out = _run("reprice", "--since", "2026-03-02", "--until", "2026-03-03T00:00:00+00:00", "--provider", "openai")
    assert out.strip() == "Re-priced 1 spans between 2026-03-02T00:00:00+00:00 and 2026-03-03T00:00:00+00:00."
    out = _run("reprice", "--since", "2026-03-01", "--model", "acme-unknown")
    assert out.startswith("Re-priced 1 spans between 2026-03-01T00:00:00+00:00 and ")


@pytest.mark.django_db
def test_reprice_command_refuses_bad_ranges() -> None:
    with pytest.raises(CommandError, match="Not an ISO"):
        call_command("reprice", "--since", "yesterday", "--until", "2026-01-01")
    with pytest.raises(CommandError, match="after --since"):
        call_command("reprice", "--since", "2026-01-02", "--until", "2026-01-01")


@pytest.mark.django_db
def test_unpriced_models_command(unpriced_stored: None) -> None:
    with time_machine.travel(at("2026-03-03T00:00:00"), tick=False):
        out = _run("unpriced_models", "--days", "7")
        assert "Models without a price in the last 7 days" in out
        line = next(line for line in out.splitlines() if "acme-unknown" in line)
        assert line.split() == [
            "openai",
            "acme-unknown",
            "2",
            "2026-03-01",
            "10:00",
            "2026-03-02",
            "10:00",
            "2,000",
            "400",
        ]
        assert "gpt-4o-mini" not in out
        recent = next(line for line in _run("unpriced_models", "--days", "1").splitlines() if "acme-unknown" in line)
        assert recent.split()[2] == "1"
    assert "acme-unknown" in _run("unpriced_models", "--days", "0")


@pytest.mark.django_db
def test_unpriced_models_command_when_everything_is_priced() -> None:
    assert "Every LLM span ever has a price" in _run("unpriced_models", "--days", "0")


@pytest.mark.django_db
def test_load_prices_reports_a_bad_file(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No such file"):
        call_command("load_prices", "--file", str(tmp_path / "missing.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("provider,model\nopenai,gpt\n")
    with pytest.raises(CommandError, match="header must be"):
        call_command("load_prices", "--file", str(bad))


def test_reprice_command_line_covers_old_and_new_periods() -> None:
    with time_machine.travel(at("2026-11-21T15:00:00"), tick=False):
        assert (
            reprice_command(
                [(at("2025-06-10T00:00:00"), None), (at("2025-04-16T00:00:00"), at("2025-06-10T00:00:00"))], {"openai"}
            )
            == "python manage.py reprice --since 2025-04-16 --until 2026-11-22 --provider openai"
        )
    assert (
        reprice_command([(at("2025-01-01T06:30:00"), at("2025-02-01T00:00:00"))], {"openai", "anthropic"})
        == "python manage.py reprice --since 2025-01-01T06:30:00+00:00 --until 2025-02-01"
    )


@pytest.fixture
def admin_client(db: None) -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_admin_lists_filters_and_searches_prices(admin_client: Client) -> None:
    url = reverse("admin:pricing_price_changelist")
    page = admin_client.get(url)
    assert page.status_code == 200
    assert b"claude-sonnet-4-5" in page.content
    filtered = admin_client.get(url, {"provider": "mistral_ai", "in_force": "now"})
    assert filtered.status_code == 200
    assert b"codestral" in filtered.content and b"claude" not in filtered.content
    searched = admin_client.get(url, {"q": "gemini-2"})
    assert b"gemini-2" in searched.content and b"gpt-4o" not in searched.content
    for state in ("ended", "future"):
        assert admin_client.get(url, {"in_force": state}).status_code == 200


def _form(price: Price, **changes: str) -> dict[str, str]:
    data = {
        "provider": price.provider,
        "model_pattern": price.model_pattern,
        "effective_from_0": price.effective_from.strftime("%Y-%m-%d"),
        "effective_from_1": price.effective_from.strftime("%H:%M:%S"),
        "effective_to_0": price.effective_to.strftime("%Y-%m-%d") if price.effective_to else "",
        "effective_to_1": price.effective_to.strftime("%H:%M:%S") if price.effective_to else "",
        "input_per_mtok": str(price.input_per_mtok),
        "cached_input_per_mtok": str(price.cached_input_per_mtok or ""),
        "cache_write_per_mtok": str(price.cache_write_per_mtok or ""),
        "output_per_mtok": str(price.output_per_mtok),
        "reasoning_per_mtok": str(price.reasoning_per_mtok or ""),
        "source_url": price.source_url,
        "retrieved_on": price.retrieved_on.isoformat() if price.retrieved_on else "",
        "notes": price.notes,
    }
    return data | changes


@pytest.mark.django_db
def test_saving_a_price_warns_with_the_exact_reprice_command(admin_client: Client) -> None:
    price = Price.objects.get(provider="openai", model_pattern__startswith="o3(", effective_to__isnull=False)
    url = reverse("admin:pricing_price_change", args=[price.pk])
    with time_machine.travel(at("2026-11-21T15:00:00"), tick=False):
        response = admin_client.post(url, _form(price, output_per_mtok="41", effective_to_0="2025-06-11"), follow=True)
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert any(
        "Run: python manage.py reprice --since 2025-04-16 --until 2025-06-11 --provider openai" in m for m in messages
    ), messages
    price.refresh_from_db()
    assert price.output_per_mtok == Decimal("41")


@pytest.mark.django_db
def test_admin_normalises_provider_and_refuses_bad_patterns(admin_client: Client) -> None:
    add = reverse("admin:pricing_price_add")
    template = Price(
        provider="mistral",
        model_pattern="acme-(",
        effective_from=at("2026-01-01T00:00:00"),
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("2"),
    )
    refused = admin_client.post(add, _form(template))
    assert refused.status_code == 200
    assert b"Not a valid Python regular expression" in refused.content
    with time_machine.travel(at("2026-11-21T15:00:00"), tick=False):
        accepted = admin_client.post(add, _form(template, model_pattern="acme-[0-9]+"), follow=True)
    assert accepted.status_code == 200
    created = Price.objects.get(model_pattern="acme-[0-9]+")
    assert created.provider == "mistral_ai"
    assert any(
        "--since 2026-01-01 --until 2026-11-22 --provider mistral_ai" in str(m) for m in accepted.context["messages"]
    )
