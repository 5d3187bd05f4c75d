"""The shipped catalog: it parses, it is loaded on migrate, it reloads idempotently, and its
patterns mean the same to Python and PostgreSQL."""

from __future__ import annotations

import io
import re
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from apps.pricing.catalog import CATALOG_PATH, COLUMNS, CatalogError, read_catalog
from apps.pricing.models import Price, pattern_problem
from tests.pricing.helpers import at
from tests.pricing.model_names import MODEL_NAMES

CSV_HEADER = ",".join(COLUMNS)


def test_catalog_parses_and_covers_the_four_providers() -> None:
    rows = read_catalog()
    by_provider = Counter(row.provider for row in rows)
    assert by_provider["openai"] >= 20
    assert by_provider["anthropic"] >= 12
    assert by_provider["gcp.gemini"] >= 5
    assert by_provider["mistral_ai"] >= 8
    assert set(by_provider) == {"openai", "anthropic", "gcp.gemini", "mistral_ai"}
    for row in rows:
        assert row.source_url.startswith("https://"), row
        # A row is either confirmed on a date or says what could not be confirmed.
        assert row.retrieved_on is not None or "UNCONFIRMED" in row.notes, row


def test_anthropic_cache_rates_follow_the_five_minute_multipliers() -> None:
    for row in read_catalog():
        # Claude 3 Haiku is the one exception on Anthropic's page: $0.30 / $0.03, rounded to the cent.
        if row.provider == "anthropic" and not row.model_pattern.startswith("claude-3-haiku"):
            assert row.cache_write_per_mtok == row.input_per_mtok * Decimal("1.25"), row
            assert row.cached_input_per_mtok == row.input_per_mtok * Decimal("0.1"), row


@pytest.mark.django_db
def test_migration_loaded_the_catalog() -> None:
    rows = read_catalog()
    assert Price.objects.count() == len(rows)
    stored = Price.objects.get(provider="openai", model_pattern=r"gpt-4\.1(?:-\d{4}-\d{2}-\d{2})?")
    assert (stored.input_per_mtok, stored.cached_input_per_mtok, stored.output_per_mtok) == (
        Decimal("2"),
        Decimal("0.5"),
        Decimal("8"),
    )
    assert stored.effective_from == at("2025-04-14T00:00:00")
    assert stored.source_url and stored.retrieved_on


def _snapshot() -> list[tuple[object, ...]]:
    return list(Price.objects.order_by("pk").values_list())


@pytest.mark.django_db
def test_load_prices_twice_changes_nothing() -> None:
    before = _snapshot()
    out = io.StringIO()
    call_command("load_prices", stdout=out)
    call_command("load_prices", stdout=out)
    assert _snapshot() == before
    assert f"0 created, 0 updated, {len(before)} unchanged" in out.getvalue()


@pytest.mark.django_db
def test_load_prices_upserts_on_the_natural_key(tmp_path: Path) -> None:
    lines = CATALOG_PATH.read_text().splitlines()
    target = next(i for i, line in enumerate(lines) if line.startswith("openai,o4-mini"))
    fields = lines[target].split(",")
    fields[7] = "4.5"  # output rate
    lines[target] = ",".join(fields)
    lines.append("openai,gpt-test-1,2026-01-01,,1,,,2,,https://example.com/pricing,2026-11-21,test row")
    changed = tmp_path / "prices.csv"
    changed.write_text("\n".join(lines) + "\n")
    count = Price.objects.count()

    out = io.StringIO()
    call_command("load_prices", "--file", str(changed), stdout=out)
    assert "1 created, 1 updated" in out.getvalue()
    assert Price.objects.count() == count + 1
    assert Price.objects.get(model_pattern=r"o4-mini(?:-\d{4}-\d{2}-\d{2})?").output_per_mtok == Decimal("4.5")

    again = io.StringIO()
    call_command("load_prices", "--file", str(changed), stdout=again)
    assert "0 created, 0 updated" in again.getvalue()


@pytest.mark.django_db
def test_natural_key_is_unique() -> None:
    existing = Price.objects.first()
    assert existing is not None
    with pytest.raises(IntegrityError), transaction.atomic():
        Price.objects.create(
            provider=existing.provider,
            model_pattern=existing.model_pattern,
            effective_from=existing.effective_from,
            input_per_mtok=1,
            output_per_mtok=1,
        )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("openai,gpt-(,2026-01-01,,1,,,2,,https://x,,n", "does not compile"),
        ("openai,gpt-x,2026-01-01,2025-01-01,1,,,2,,https://x,,n", "effective_to must be after"),
        ("openai,gpt-x,2026-01-01,,,,,2,,https://x,,n", "input is required"),
        ("openai,gpt-x,2026-01-01,,1.0000001,,,2,,https://x,,n", "at most 6 decimal places"),
        ("openai,gpt-x,2026-01-01,,-1,,,2,,https://x,,n", ">= 0"),
        ("openai,gpt-x,2026-01-01,,1,,,2,,https://x,n", "expected 12 columns"),
    ],
)
def test_bad_catalog_rows_are_refused_with_their_line(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(f"{CSV_HEADER}\n{row}\n")
    with pytest.raises(CatalogError, match=rf":2: .*{re.escape(message)}"):
        read_catalog(path)


def test_duplicate_natural_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    row = "mistral,codestral-x,2026-01-01,,1,,,2,,https://x,2026-11-21,n"
    # `mistral` is an alias: both rows land on mistral_ai.
    path.write_text(f"{CSV_HEADER}\n{row}\n{row.replace('mistral,', 'mistral_ai,', 1)}\n")
    with pytest.raises(CatalogError, match="same provider, pattern and effective_from as line 2"):
        read_catalog(path)


@pytest.mark.django_db
def test_patterns_mean_the_same_to_python_and_postgresql() -> None:
    """Every catalog pattern compiles in both flavours and, over the model-name list, both
    engines agree on every (pattern, name) pair: the catalog stays usable from SQL."""
    patterns = sorted({row.model_pattern for row in read_catalog()})
    for pattern in patterns:
        assert pattern_problem(pattern) is None, pattern
    names = sorted({name for _, name, *_ in MODEL_NAMES})
    with connection.cursor() as cur:
        cur.execute(
            "SELECT p, n, n ~* ('^(?:' || p || ')$') FROM unnest(%s::text[]) AS p CROSS JOIN unnest(%s::text[]) AS n",
            [patterns, names],
        )
        in_postgres = {(p, n): matched for p, n, matched in cur.fetchall()}
    disagreements = [
        (pattern, name)
        for (pattern, name), matched in in_postgres.items()
        if matched != (re.fullmatch(pattern, name, re.IGNORECASE) is not None)
    ]
    assert disagreements == []
    assert len(in_postgres) == len(patterns) * len(names)


@pytest.mark.django_db
def test_pattern_problem_names_the_flavour() -> None:
    assert "Python" in (pattern_problem("gpt-(") or "")
    # A named group is Python-only syntax.
    assert "PostgreSQL" in (pattern_problem("(?P<name>gpt)-4o") or "")
    assert pattern_problem(r"gpt-4\.1(?:-\d{4}-\d{2}-\d{2})?") is None
