"""The 30-day overview through the metrics query layer: milliseconds for the whole set, warm.

    python3 run.py bench query [--spans N]   # or .venv/bin/python bench/query.py with DATABASE_URL set

On a fresh database (observatory_bench_query), loads N spans of realistic traces (default
10,000,000) over 30 days, and N / 10 over the 30 days before (the previous period the
overview compares with), with COPY (bench/_spans.py), and rolls every hour up with
rollup_range. "Now" is travelled to the last span loaded, so its hour is open and is read
from raw spans, as the current hour always is.

The overview is what the overview page shows for "the last 30 days", all through run_query:

- cost, requests, p50/p95/p99 latency and p50/p95/p99 TTFT by day;
- the top 10 features and the top 10 tenants by cost, with the change against the
  previous 30 days.

The window is the 30 days up to now from the top of an hour (the page's day buckets do not
show minutes), so its only raw piece is the open hour; the five queries share it through one
SharedReads, as a page does. Also printed: the same set with each query rolling up the open
hour on its own, and with a window starting at an arbitrary minute (one more raw piece).
Each set runs once to warm up and then 5 times; the median is reported. Whole closed days
are read from their day rows (RollupDay, apps/metrics/days.py); the set's first run in this
process, before any other query, is printed too.

`--reuse` keeps the loaded, rolled-up database of a previous run (for tuning the queries).

The last line is `overview_ms=<number>`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench._db import bench_database  # noqa: E402

# BENCH_QUERY_DATABASE names another (engineers sharing one server each keep their own).
DATABASE = os.environ.get("BENCH_QUERY_DATABASE", "observatory_bench_query")
DAYS = 30
RUNS = 5


def overview(start: datetime, end: datetime, shared: bool) -> dict[str, Any]:
    """The overview page's figures for [start, end), compared with the period before; with
    `shared`, as a page asks them: each raw piece (the open hour) rolled up once."""
    from apps.metrics.query import Query, Scope, run_query, shared_reads_for

    scope = Scope.everything()
    previous = (start - (end - start), start)
    daily = Query(
        ("cost_usd", "requests", "e2e_ms_p50", "e2e_ms_p95", "e2e_ms_p99", "ttft_ms_p50", "ttft_ms_p95", "ttft_ms_p99"),
        start, end, granularity="day",
    )  # fmt: skip
    by_cost = {
        dim: (Query(("cost_usd",), start, end, group_by=(dim,)), Query(("cost_usd",), *previous, group_by=(dim,)))
        for dim in ("feature", "tenant")
    }
    reads = shared_reads_for([daily, *(q for pair in by_cost.values() for q in pair)], scope) if shared else None
    result: dict[str, Any] = {"daily": run_query(daily, scope, shared=reads), "tops": {}}
    for dim, (this_period, previous_period) in by_cost.items():
        now = run_query(this_period, scope, shared=reads)
        before = {row[dim]: row["cost_usd"] for row in run_query(previous_period, scope, shared=reads).rows}
        top = sorted(now.rows, key=lambda row: row["cost_usd"] or 0, reverse=True)[:10]
        result["tops"][dim] = [
            {
                dim: row[dim],
                "cost_usd": row["cost_usd"],
                "change": (row["cost_usd"] / before[row[dim]] - 1) if before.get(row[dim]) else None,
            }
            for row in top
        ]
    return result


def timed(start: datetime, end: datetime, shared: bool) -> tuple[float, dict[str, Any]]:
    overview(start, end, shared)  # warm: connections, caches, the compute SQL text
    times = []
    result: dict[str, Any] = {}
    for _ in range(RUNS):
        began = time.perf_counter()
        result = overview(start, end, shared)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


def open_hour_rollup_ms(plan: Any) -> float:
    """Median time of rolling up the plan's open-hour piece from raw spans in the overview's
    three grouping sets (total, feature, tenant), as its SharedReads does."""
    from apps.metrics import reads
    from apps.rollups.models import mask

    [piece] = [piece for piece in plan.raw if piece.reason == "edge"]
    times = []
    for _ in range(RUNS):
        with reads.snapshot():
            began = time.perf_counter()
            reads.raw_rows(piece, (0, mask("tenant"), mask("feature")))
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--previous-spans", type=int, default=None, help="spans in the 30 days before (N / 10)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="keep the loaded, rolled-up bench database of a last run")
    args = parser.parse_args()

    # Settings read DATABASE_URL once, at django.setup(): point it at the bench database first.
    bench_url, fresh = bench_database(DATABASE, args.reuse)
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "observatory.settings")

    import django

    django.setup()

    import time_machine
    from django.core.management import call_command
    from django.db import connection

    from apps.accounts.models import Project
    from apps.rollups import day_rows, runner
    from bench._spans import DEFAULT_START, load_spans

    data_start, data_end = DEFAULT_START, DEFAULT_START + timedelta(days=DAYS)
    previous_start = data_start - timedelta(days=DAYS)
    if fresh:
        call_command("migrate", verbosity=0)
        project = Project.objects.create(name="bench")
        connection.ensure_connection()
        began = time.perf_counter()
        loaded = load_spans(connection.connection, args.spans, DAYS, args.seed, project_ids=(project.pk,),
                            start=data_start)  # fmt: skip
        earlier = load_spans(
            connection.connection, args.previous_spans or args.spans // 10, DAYS, args.seed + 1,
            project_ids=(project.pk,), start=previous_start,
        )  # fmt: skip
        load_s = time.perf_counter() - began
        print(f"loaded {loaded.spans:,} spans over {DAYS} days and {earlier.spans:,} over the {DAYS} before "
              f"in {load_s:.1f} s")  # fmt: skip

        began = time.perf_counter()
        rows = runner.rollup_range(previous_start, data_end)
        rollup_s = time.perf_counter() - began
        with connection.cursor() as cur:
            cur.execute("VACUUM ANALYZE rollups_rolluphour")
            cur.execute("SELECT count(*) FROM rollups_dirtyhour")
            noted = cur.fetchone()[0]
        print(f"rolled up {2 * DAYS * 24} hours into {rows:,} rows in {rollup_s:.1f} s ({noted} hours noted)")
    else:
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM telemetry_span WHERE start_time >= %s", [data_start])
            print(f"reusing {DATABASE}: {cur.fetchone()[0]:,} spans over the {DAYS} days")
        # As the rollups sweep would after an upgrade: day rows for every closed day.
        call_command("migrate", verbosity=0)
        while day_rows.rebuild_stale_days(limit=100):
            pass

    # "Now" is the last span loaded: its hour is open and comes from raw spans (the loader
    # ends its 30 days about two minutes early, so that is most of an hour).
    with connection.cursor() as cur:
        cur.execute("SELECT max(start_time) FROM telemetry_span WHERE start_time >= %s", [data_start])
        now = cur.fetchone()[0] + timedelta(seconds=1)
    with time_machine.travel(now, tick=True):
        current_hour = now.replace(minute=0, second=0, microsecond=0)
        aligned_start = current_hour - timedelta(days=DAYS)
        # First, before any other query of this process has read anything.
        began = time.perf_counter()
        overview(aligned_start, now, shared=True)
        cold_ms = (time.perf_counter() - began) * 1000
        closed_ms, _ = timed(aligned_start - timedelta(hours=1), current_hour, shared=True)
        separate_ms, _ = timed(aligned_start, now, shared=False)
        overview_ms, result = timed(aligned_start, now, shared=True)
        unaligned_ms, _ = timed(now - timedelta(days=DAYS), now, shared=True)
        open_hour_ms = open_hour_rollup_ms(result["daily"].plan)

    daily = result["daily"]
    assert daily.plan is not None
    print(f"window [{aligned_start:%Y-%m-%d %H:%M}, {now:%Y-%m-%d %H:%M}); grouping {daily.plan.grouping}; "
          f"raw pieces {[(p.start.strftime('%H:%M'), p.end.strftime('%H:%M')) for p in daily.plan.raw]}")  # fmt: skip
    busiest = max(daily.rows, key=lambda row: row["requests"])
    print(f"busiest day {busiest['time']:%Y-%m-%d}: {busiest['requests']:,} requests, ${busiest['cost_usd']:.2f}, "
          f"e2e p50/p95/p99 {busiest['e2e_ms_p50']:.0f}/{busiest['e2e_ms_p95']:.0f}/{busiest['e2e_ms_p99']:.0f} ms "
          f"({busiest['e2e_ms_p99_samples']:,} samples)")  # fmt: skip
    for dim, top in result["tops"].items():
        listed = ", ".join(
            f"{row[dim] or '(unattributed)'} ${row['cost_usd']:.0f}"
            + (f" ({row['change']:+.0%})" if row["change"] is not None else "")
            for row in top[:3]
        )
        print(f"top {dim}s: {listed}, ...")
    print(f"machine: {os.cpu_count()} cores")
    print(f"overview, the first set this process runs: {cold_ms:.0f} ms")
    print(f"overview of 30 closed days (rollups only, no raw piece): {closed_ms:.0f} ms")
    print(f"the open hour rolled up from raw spans (rollup_rows_sql, 3 grouping sets): {open_hour_ms:.0f} ms")
    print(f"overview, each query rolling up its own raw pieces: {separate_ms:.0f} ms")
    print(f"overview, window from any minute (two raw pieces, shared): {unaligned_ms:.0f} ms")
    print(f"overview_ms={overview_ms:.0f}")


if __name__ == "__main__":
    main()
