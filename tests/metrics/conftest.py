"""Metrics test fixtures: no merged day kept from one test's (rolled back) rows to the next."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _fresh_day_cache() -> Iterator[None]:
    from apps.metrics.days import CACHE

    CACHE.clear()
    yield
    CACHE.clear()
