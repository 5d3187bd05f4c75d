"""Re-pricing stored spans after a price change: spans scanned per second.

    python3 run.py bench reprice [--spans N]    # or .venv/bin/python bench/reprice.py with DATABASE_URL set

On a fresh database, stores N LLM spans of ten models spread evenly over two days (two day
partitions), priced at ingest as the receiver would, then adds a price cut for two of the
models from noon on the first day and times reprice_range over both days. Three quarters
of those two models' spans must change (the rest start before the cut); a second run must
change none, and its time is what a re-run costs when nothing is left to write. The plan of
the per-day UPDATE is printed with the segments of the first day, as reprice_range makes them.

The last line is `reprice_spans_per_s=<number>`: spans in the range divided by the first
run's time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench._db import bench_database  # noqa: E402

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
PRICE_CUTS = [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5")]
BATCH = 50_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=1_000_000)
    args = parser.parse_args()
    total_spans = args.spans

    # Settings read DATABASE_URL once, at django.setup(): point it at the bench database first.
    os.environ["DATABASE_URL"], _ = bench_database("observatory_bench")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "observatory.settings")

    import django

    django.setup()

    from django.core.management import call_command
    from django.db import connection, transaction

    from apps.accounts.models import Project
    from apps.pricing import repricing
    from apps.pricing.models import Price
    from apps.pricing.services import PriceBook, price_spans, reprice_range
    from apps.telemetry.store import insert_spans
    from tests.pricing.helpers import at, make_span

    call_command("migrate", verbosity=0)
    project = Project.objects.create(name="bench")

    start = at("2026-03-01T00:00:00")
    end = start + timedelta(days=2)
    seconds = (end - start).total_seconds()
    book = PriceBook.load()
    began = time.perf_counter()
    for first in range(0, total_spans, BATCH):
        spans = []
        for n in range(first, min(first + BATCH, total_spans)):
            provider, model = MODELS[n % len(MODELS)]
            spans.append(
                make_span(
                    start + timedelta(seconds=seconds * n / total_spans),
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
    print(f"stored {total_spans:,} spans over 2 days in {loaded:.1f} s")

    cut_from = at("2026-03-01T12:00:00")
    for provider, model in PRICE_CUTS:
        Price.objects.create(
            provider=provider,
            model_pattern=model,
            effective_from=cut_from,
            input_per_mtok=Decimal("0.05"),
            output_per_mtok=Decimal("0.2"),
        )
    began = time.perf_counter()
    changed = reprice_range(start, end)
    took = time.perf_counter() - began
    began = time.perf_counter()
    again = reprice_range(start, end)
    took_again = time.perf_counter() - began

    # The first day's real segments, inside a transaction: the temp table empties on commit.
    day_end = start + timedelta(days=1)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(repricing._DAY_MODELS, [start, day_end])
        rows = repricing._segment_rows(PriceBook.load(), cur.fetchall(), start, day_end, None, None)
        cur.execute(repricing._CREATE_SEGMENTS)
        cur.execute("TRUNCATE pricing_reprice_segment")
        with cur.copy(f"COPY pricing_reprice_segment ({repricing._SEGMENT_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute("ANALYZE pricing_reprice_segment")
        cur.execute(f"EXPLAIN {repricing._REPRICE_DAY}", {"start": start, "end": day_end})
        plan = "\n".join(row[0] for row in cur.fetchall())
    print(f"plan of the per-day UPDATE ({len(rows)} segments for the first day):\n{plan}")

    # Two of the ten models, from noon on the first of two days: three quarters of their spans.
    expected = len(PRICE_CUTS) * total_spans / len(MODELS) * 3 / 4
    print(f"machine: {os.cpu_count()} cores")
    print(f"first run: re-priced {changed:,} of {total_spans:,} spans in {took:.2f} s (expected ~{expected:,.0f})")
    print(f"second run: changed {again:,} in {took_again:.2f} s (expected 0)")
    if abs(changed - expected) > 0.01 * expected or again != 0:
        print("ERROR: re-priced span counts differ from the price change")
        sys.exit(1)
    print(f"reprice_spans_per_s={total_spans / took:.0f}")


if __name__ == "__main__":
    main()
