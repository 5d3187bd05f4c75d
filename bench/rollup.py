"""Hourly rollups from raw spans: spans rolled up per second.

    python3 run.py bench rollup [--spans N] [--days D]   # or .venv/bin/python bench/rollup.py with DATABASE_URL set

On a fresh database (observatory_bench_rollup), loads N spans of realistic traces spread
over D days with COPY (bench/_spans.py: tenants, features, hosted models and a vLLM tier,
retries, semantic-cache lookups, agent tasks), then times rollup_range over the whole range:
every hour of every day, all grouping sets, all distributions, from raw spans. It runs twice:
on one connection, then with --workers days at once (default: one per core); the second run
rebuilds every row and must leave the same numbers. It checks that the rollup counted each
call once (requests of the grouping-0 rows = calls counted straight from the spans) and
prints the plan of one hour's rollup query (the noted-hour path).

`--reuse` keeps an existing bench database with the same span count (for tuning the SQL).

The last line is `rollup_spans_per_s=<number>`: spans in the range divided by the time
rollup_range took with --workers connections. Each run also says how long the day rows
(RollupDay, rebuilt in each chunk's transaction from its hour rows) took of it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench._db import bench_database  # noqa: E402

# BENCH_ROLLUP_DATABASE names another (engineers sharing one server each keep their own).
DATABASE = os.environ.get("BENCH_ROLLUP_DATABASE", "observatory_bench_rollup")
# Sums that change if any rollup row does (a cheap fingerprint of the whole table).
_CHECKSUM = (
    "sum(requests), sum(tasks), sum(errors), sum(input_tokens), sum(cost_usd), sum(cache_savings_usd), "
    "sum(semantic_cache_lookups), sum(cardinality(e2e_ms_idx)), sum(e2e_ms_cnt[1]), sum(queue_ms_cnt[1])"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="day chunks rolled up at once, one connection each (default: one per core)")  # fmt: skip
    parser.add_argument("--reuse", action="store_true", help="keep an existing bench database with the same spans")
    args = parser.parse_args()

    bench_url, fresh = bench_database(DATABASE, args.reuse)
    # Settings read DATABASE_URL once, at django.setup(): point it at the bench database first.
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "observatory.settings")

    import django

    django.setup()

    from django.core.management import call_command
    from django.db import connection

    from apps.accounts.models import Project
    from apps.rollups import compute, day_rows, runner
    from bench._spans import DEFAULT_START, load_spans

    call_command("migrate", verbosity=0)
    start = DEFAULT_START
    end = start + timedelta(days=args.days)
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM telemetry_span")
        stored = cur.fetchone()[0]
    if fresh or abs(stored - args.spans) > 0.001 * args.spans:
        with connection.cursor() as cur:
            cur.execute("TRUNCATE telemetry_span, rollups_rolluphour, rollups_dirtyhour")
        project = Project.objects.first() or Project.objects.create(name="bench")
        connection.ensure_connection()
        began = time.perf_counter()
        loaded = load_spans(connection.connection, args.spans, args.days, args.seed, project_ids=(project.pk,))
        print(f"loaded {loaded.spans:,} spans in {loaded.traces:,} traces over {args.days} days "
              f"in {time.perf_counter() - began:.1f} s")  # fmt: skip
    project_ids = list(Project.objects.values_list("pk", flat=True))
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM telemetry_span WHERE start_time >= %s AND start_time < %s", [start, end])
        total_spans = cur.fetchone()[0]
        cur.execute("CHECKPOINT")

    # First on one connection (one statement uses one core), then with --workers days at once:
    # the second run also rebuilds every row, so it must leave the same numbers behind.
    # The share of the day rows (day_rows.rebuild_days, in each chunk's transaction), summed
    # over connections.
    day_seconds: list[float] = []
    rebuild_days = day_rows.rebuild_days

    def timed_rebuild_days(*args: Any, **kwargs: Any) -> int:
        began = time.perf_counter()
        try:
            return rebuild_days(*args, **kwargs)
        finally:
            day_seconds[-1] += time.perf_counter() - began

    day_rows.rebuild_days = timed_rebuild_days
    timings: list[tuple[int, float]] = []
    first_totals = None
    for workers in dict.fromkeys((1, args.workers)):
        with connection.cursor() as cur:
            cur.execute("CHECKPOINT")
        day_seconds.append(0.0)
        began = time.perf_counter()
        written = runner.rollup_range(start, end, workers=workers)
        timings.append((workers, time.perf_counter() - began))
        with connection.cursor() as cur:
            cur.execute(f"SELECT count(*), {_CHECKSUM} FROM rollups_rolluphour")
            totals = cur.fetchone()
        if first_totals is not None and totals != first_totals:
            print(f"ERROR: a second rebuild changed the rollup: {first_totals} then {totals}")
            sys.exit(1)
        first_totals = totals
    workers, took = timings[-1]

    # Calls straight from the spans (an LLM span whose parent is no LLM span), against the rollup.
    with connection.cursor() as cur:
        cur.execute(
            """
            SELECT count(*) FROM telemetry_span AS s
            WHERE s.is_llm AND s.start_time >= %(start)s AND s.start_time < %(end)s
              AND NOT EXISTS (SELECT 1 FROM telemetry_span AS p WHERE p.trace_id = s.trace_id
                              AND p.span_id = s.parent_span_id AND p.is_llm)
            """,
            {"start": start, "end": end},
        )
        calls = cur.fetchone()[0]
        cur.execute("SELECT coalesce(sum(requests), 0) FROM rollups_rolluphour WHERE grouping = 0")
        rolled_up = cur.fetchone()[0]
        hour = start + timedelta(days=args.days // 2, hours=13)
        cur.execute(
            f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {compute.rollup_rows_sql()}",
            compute.rollup_params(project_ids, hour, hour + timedelta(hours=1)),
        )
        plan = "\n".join(row[0] for row in cur.fetchall())
    print(f"plan of one hour's rollup query ({hour:%Y-%m-%d %H:00}):\n{plan}")
    print(f"machine: {os.cpu_count()} cores")
    for (count, seconds), days_took in zip(timings, day_seconds, strict=True):
        connections = f"{count} connection{'s' if count > 1 else ''}"
        print(f"rolled up {total_spans:,} spans ({args.days * 24} hours) into {written:,} rows in {seconds:.2f} s "
              f"on {connections}: {total_spans / seconds:,.0f} spans/s; day rows {days_took:.2f} connection-s "
              f"of it")  # fmt: skip
    print(f"calls: {rolled_up:,} in the rollup, {calls:,} counted from the spans")
    if rolled_up != calls:
        print("ERROR: the rollup's request count differs from the calls in the spans")
        sys.exit(1)
    print(f"rollup_spans_per_s={total_spans / took:.0f}")


if __name__ == "__main__":
    main()
