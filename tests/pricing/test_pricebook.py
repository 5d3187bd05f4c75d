"""PriceBook: which row prices a model at a moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from apps.pricing import pricebook
from apps.pricing.models import Price
from apps.pricing.pricebook import PriceBook, is_exact_name
from tests.pricing.helpers import at
from tests.pricing.model_names import MODEL_NAMES, WHEN

D = Decimal


@pytest.mark.django_db
@pytest.mark.parametrize(("provider", "model", "expected_input", "expected_output"), MODEL_NAMES)
def test_model_names(
    book: PriceBook, provider: str, model: str, expected_input: Decimal | None, expected_output: Decimal | None
) -> None:
    price = book.price_for(provider, model, WHEN)
    if expected_input is None:
        assert price is None, f"{model} should be unpriced, got {price}"
    else:
        assert price is not None, f"{model} has no price"
        assert (price.input_per_mtok, price.output_per_mtok) == (expected_input, expected_output), price


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("gemini", "gemini-2.5-flash"),
        ("google", "gemini-2.5-flash"),
        ("gcp.vertex_ai", "gemini-2.5-flash"),
        ("vertex_ai", "gemini-2.5-flash"),
        ("GCP.Gemini", "gemini-2.5-flash"),
        ("mistral", "codestral-latest"),
        ("mistralai", "codestral-latest"),
    ],
)
def test_provider_aliases(book: PriceBook, provider: str, model: str) -> None:
    assert book.price_for(provider, model, WHEN) is not None


@pytest.mark.django_db
def test_a_model_of_another_provider_is_not_priced(book: PriceBook) -> None:
    assert book.price_for("azure.ai.openai", "gpt-4o", WHEN) is None
    assert book.price_for("vllm", "gpt-4o", WHEN) is None
    assert book.price_for(None, "gpt-4o", WHEN) is None
    assert book.price_for("openai", None, WHEN) is None


@pytest.mark.django_db
def test_the_row_in_force_at_the_start_prices_it_across_a_price_cut(book: PriceBook) -> None:
    cut = at("2025-06-10T00:00:00")
    before = book.price_for("openai", "o3-2025-04-16", cut - timedelta(microseconds=1))
    after = book.price_for("openai", "o3-2025-04-16", cut)
    assert before is not None and after is not None
    assert (before.input_per_mtok, before.output_per_mtok) == (D("10"), D("40"))
    assert (after.input_per_mtok, after.output_per_mtok) == (D("2"), D("8"))
    # Before the model had any price row: nothing, not the later price.
    assert book.price_for("openai", "o3", at("2025-01-01T00:00:00")) is None


@pytest.mark.django_db
def test_alias_history_and_exact_snapshot_rows(book: PriceBook) -> None:
    def input_rate(model: str, when: str) -> Decimal | None:
        price = book.price_for("openai", model, at(when))
        return price.input_per_mtok if price else None

    # The bare alias served the May snapshot until the repoint; its dated snapshots did not move.
    assert input_rate("gpt-4o", "2024-09-01T00:00:00") == D("5")
    assert input_rate("gpt-4o", "2024-11-01T00:00:00") == D("2.5")
    assert input_rate("gpt-4o-2024-08-06", "2024-09-01T00:00:00") == D("2.5")
    may = book.price_for("openai", "gpt-4o-2024-05-13", WHEN)
    assert may is not None and may.model_pattern == "gpt-4o-2024-05-13"
    haiku_launch = book.price_for("anthropic", "claude-3-5-haiku-20241022", at("2024-11-10T00:00:00"))
    assert haiku_launch is not None and haiku_launch.input_per_mtok == D("1")


def _row(pattern: str, start: str = "2025-01-01", end: str | None = None, pk: int = 0, rate: str = "1") -> Price:
    return Price(
        pk=pk or None,
        provider="openai",
        model_pattern=pattern,
        effective_from=at(f"{start}T00:00:00"),
        effective_to=at(f"{end}T00:00:00") if end else None,
        input_per_mtok=D(rate),
        output_per_mtok=D(rate),
    )


def test_most_specific_row_wins() -> None:
    family = _row(r"acme-\d+(?:-[a-z]+)?", pk=1)
    longer = _row(r"acme-\d+-(?:fast|slow)", pk=2)
    exact = _row("acme-7-fast", pk=3)
    book = PriceBook([family, longer, exact])
    when = at("2026-01-01T00:00:00")
    # Longest pattern among patterns...
    assert book.price_for("openai", "acme-7-slow", when) is longer
    # ...but an exact name beats a longer pattern.
    assert book.price_for("openai", "acme-7-fast", when) is exact
    assert book.price_for("openai", "acme-7", when) is family
    assert book.price_for("openai", "acme-7-medium", when) is family


def test_tie_goes_to_the_later_row() -> None:
    older = _row("acme-1", start="2025-01-01", pk=1)
    newer = _row("acme-1", start="2025-06-01", pk=2)
    book = PriceBook([older, newer])
    assert book.price_for("openai", "acme-1", at("2025-03-01T00:00:00")) is older
    assert book.price_for("openai", "acme-1", at("2025-07-01T00:00:00")) is newer


def test_exact_names() -> None:
    assert is_exact_name("gpt-4o-2024-05-13")
    assert is_exact_name(r"gpt-4\.1")
    assert is_exact_name("mistral-large-latest")
    assert not is_exact_name("gpt-4.1")
    assert not is_exact_name(r"gpt-4o(?:-\d{4}-\d{2}-\d{2})?")
    assert not is_exact_name("codestral-(?:2501|latest)")


def test_segments_cut_where_the_winner_changes() -> None:
    old = _row("acme-1", start="2025-01-01", end="2025-06-01", pk=1, rate="2")
    new = _row("acme-1", start="2025-06-01", pk=2, rate="1")
    book = PriceBook([old, new])
    pieces = book.segments("openai", "acme-1", at("2024-12-31T00:00:00"), at("2025-12-31T00:00:00"))
    assert [(p.start.date().isoformat(), p.end.date().isoformat(), p.entry and p.entry.price.pk) for p in pieces] == [
        ("2024-12-31", "2025-01-01", None),
        ("2025-01-01", "2025-06-01", 1),
        ("2025-06-01", "2025-12-31", 2),
    ]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        PriceBook([]).price_for("openai", "gpt-4o", datetime(2026, 1, 1))


def test_the_model_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pricebook, "MODEL_MEMO_LIMIT", 3)
    book = PriceBook([_row("acme-1", pk=1)])
    for n in range(10):
        book.price_for("openai", f"unknown-{n}", WHEN)
    assert len(book._memo) <= 3
    assert book.price_for("openai", "acme-1", WHEN) is not None


@pytest.mark.django_db
def test_current_is_shared_reloaded_after_ttl_and_after_an_edit(monkeypatch: pytest.MonkeyPatch) -> None:
    first = PriceBook.current()
    assert PriceBook.current() is first
    assert first.price_for("openai", "acme-9", WHEN) is None

    # An edit in this process drops the book at once (post_save signal).
    Price.objects.create(
        provider="openai",
        model_pattern="acme-9",
        effective_from=at("2026-01-01T00:00:00"),
        input_per_mtok=1,
        output_per_mtok=1,
    )
    second = PriceBook.current()
    assert second is not first
    assert second.price_for("openai", "acme-9", WHEN) is not None

    # Past the TTL the book is re-read even without an edit (edits made by other processes).
    clock = second.loaded_at + pricebook.PRICEBOOK_TTL_SECONDS + 1
    monkeypatch.setattr(pricebook.time, "monotonic", lambda: clock)
    assert PriceBook.current() is not second

    # Tests can always force it.
    third = PriceBook.current()
    PriceBook.forget()
    assert PriceBook.current() is not third


def test_book_over_a_whole_century_of_dates() -> None:
    # Nanosecond maths must not drift at either end of the range a span can have.
    row = _row("acme-1", start="1971-01-01")
    book = PriceBook([row])
    assert book.price_for("openai", "acme-1", datetime(2200, 1, 1, tzinfo=UTC)) is row
    assert book.price_for("openai", "acme-1", datetime(1970, 6, 1, tzinfo=UTC)) is None
