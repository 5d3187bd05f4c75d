"""Pricing fixtures: the shipped catalog as a book, and no book that outlives a test's database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apps.pricing.pricebook import PriceBook


@pytest.fixture(autouse=True)
def _fresh_price_book() -> Iterator[None]:
    # Each test's rows are rolled back; a process-wide book would remember them.
    PriceBook.forget()
    yield
    PriceBook.forget()


@pytest.fixture
def book(db: None) -> PriceBook:
    """The shipped catalog (loaded by the data migration) as a price book."""
    return PriceBook.load()
