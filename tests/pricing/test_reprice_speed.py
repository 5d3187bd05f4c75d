"""How fast re-pricing runs on a realistic volume. Skipped unless PRICING_BENCH_SPANS is set:

PRICING_BENCH_SPANS=1000000 .venv/bin/pytest tests/pricing/test_reprice_speed.py -s
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection

from apps.accounts.models import Project
from apps.pricing import repricing
from apps.pricing.models import Price
from apps.pricing.pricebook import PriceBook
from apps.pricing.services import price_spans, reprice_range
from apps.telemetry.store import insert_spans
from tests.pricing.helpers import at, make_span

SPANS = int(os.environ.get("PRICING_BENCH_SPANS", "0"))
MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4.1-2025-04-14"),
    ("openai", "o4-mini"),
    ("openai", "gpt-5-mini"),
    ("anthropic", "claude-sonnet-4-5-20250929"),
    ("anthropic", "claude-haiku-4-5"),
    ("gcp.gemini", "gemini-2.5-flash"),
    ("mistral_ai", "mistral-small-latest"),
    ("openai", "acme-unpriced"),
    ("vllm", "llama-3.1-8b"),
]


@pytest.mark.slow
@pytest.mark.skipif(SPANS <= 0, reason="set PRICING_BENCH_SPANS to run the re-pricing benchmark")
@pytest.mark.django_db
def test_reprice_speed(project: Project) -> None:
    start = at("2026-03-01T00:00:00")
    seconds = 2 * 86_400  # two day partitions
    book = PriceBook.load()
    batch = 50_000
    began = time.perf_counter()
    for first in range(0, SPANS, batch):
        spans = []
        for n in range(first, min(first + batch, SPANS)):
            provider, model = MODELS[n % len(MODELS)]
            spans.append(
                make_span(
                    start + timedelta(seconds=seconds * n / SPANS),
                    provider=provider,
                    model=model,
                    input_tokens=1000 + n % 500,
                    cache_read_tokens=n % 700,
                    output_tokens=200 + n % 300,
                    reasoning_tokens=n % 50,
                )
            )
        price_spans(spans, book)
        insert_spans(project.pk, spans)
    loaded = time.perf_counter() - began
    with connection.cursor() as cur:
        cur.execute("ANALYZE telemetry_span")

    # A price cut for two of the ten models from noon on the first day.
    for pattern in ("gpt-4o-mini", "claude-haiku-4-5"):
        Price.objects.create(
            provider="openai" if pattern.startswith("gpt") else "anthropic",
            model_pattern=pattern,
            effective_from=at("2026-03-01T12:00:00"),
            input_per_mtok=Decimal("0.05"),
            output_per_mtok=Decimal("0.2"),
        )
    began = time.perf_counter()
    changed = reprice_range(start, start + timedelta(days=2))
    took = time.perf_counter() - began
    began = time.perf_counter()
    again = reprice_range(start, start + timedelta(days=2))
    took_again = time.perf_counter() - began

    with connection.cursor() as cur:
        cur.execute(repricing._CREATE_SEGMENTS)
        cur.execute(
            "INSERT INTO pricing_reprice_segment VALUES ('openai', 'gpt-4o-mini', %s, %s, 1, 1, 1, 1, 1, 1)",
            [start, start + timedelta(days=1)],
        )
        cur.execute("ANALYZE pricing_reprice_segment")
        cur.execute(f"EXPLAIN {repricing._REPRICE_DAY}", {"start": start, "end": start + timedelta(days=1)})
        plan = "\n".join(row[0] for row in cur.fetchall())
    print(
        f"\n{SPANS:,} spans stored in {loaded:.1f}s; re-priced {changed:,} of them in {took:.2f}s "
        f"({SPANS / took:,.0f} spans scanned/s); a second run changed {again} in {took_again:.2f}s\n{plan}"
    )
    # Two of the ten models, from noon on the first of two days: three quarters of their spans.
    assert changed == pytest.approx(2 * SPANS / len(MODELS) * 3 / 4, rel=0.01)
    assert again == 0
