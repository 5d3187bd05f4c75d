"""Server time of every dashboard page at N spans over 30 days.

    python3 run.py bench pages [--spans N] [--reuse] [--only NAME]

Uses the database bench/query.py builds (observatory_bench_query: N spans over 30 days and
N / 10 over the 30 days before, loaded with COPY and rolled up; default N = 10,000,000).
`--reuse` takes it as a previous `bench query` or `bench pages` run left it. "Now" is the
last span loaded, so the current hour is open and read from raw spans, as in production.

Each page is requested through Django's full request handling (middleware, login session,
templates, Plotly figures), in process, so the figure is server time without the network.

- cold: each page's first render in a fresh Python process (a new gunicorn or Celery worker):
  a child process per page starts as a gunicorn worker does (Django set up, middleware
  loaded, gunicorn.conf.py's post_worker_init warm-up: observatory/warmup.py), logs in, and
  times its first request only, so nothing any earlier render computed is there (no raw
  pieces shared, no rolled-up current hour, no kept day parts; the database's own buffers
  stay warm, as on a serving machine). Printed as "cold"; the worker's start before it (paid
  before the worker takes requests) is printed on its own line. The project's modules are
  byte-compiled first, as the image does. `BENCH_NO_WARMUP=1` starts the children without
  the warm-up (what a worker's first request paid before it), for before/after runs.
- cleared: then in this process, after clearing every process cache (page_reads' raw
  pieces, the kept days of apps/metrics/days.py, the price book, known partitions and keys),
  the page's first render: the data cost of a cold render without Python's own (imports,
  URLconf, first template compiles). Printed as "cleared".
- warm: then `--runs` renders in this process; p50 and p95 are printed per page. Between the
  runs the current hour is rolled up again every 10 s in the background, as in a serving
  process.

The traces explorer's filtered search (tenant + model + latency above a value) is reported on
its own line. `--only trace` times only the pages whose name holds "trace" (and the search).
On `--reuse`, pending migrations are applied and closed days without current day rows
(RollupDay) are built first, as the rollups sweep would.

Then (not with `--only`) the accuracy the speed is not bought with: p50/p95/p99 of latency
and TTFT over the last 30 days up to now, per provider and model, from the query layer (the
pages' reads: kept days, hour rows, the raw open edge) against percentile_cont over every
call in raw spans (an LLM span whose parent is not one), and the request counts, which must
be equal. Printed as `worst_percentile_error_pct=` (relative, in percent; target < 1).

The last lines are `worst_cleared_page_ms=`, `worst_cold_page_ms=` and `worst_page_p95_ms=`
(milliseconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._db import bench_database  # noqa: E402
from bench.query import DATABASE, DAYS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="use the loaded, rolled-up bench database as it is")
    parser.add_argument("--only", help="time only the pages whose name contains this (e.g. traces)")
    parser.add_argument("--cold-page", help=argparse.SUPPRESS)  # a child: time one page's first render
    parser.add_argument("--now", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.cold_page:
        _cold_page(args.cold_page, args.now)
        return
    bench_url, fresh = bench_database(DATABASE, args.reuse)
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "observatory.settings")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")

    import django

    django.setup()

    import time_machine
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from apps.accounts.models import Project
    from apps.rollups import day_rows, runner
    from bench._spans import DEFAULT_START, load_spans

    data_start = DEFAULT_START
    if fresh:
        call_command("migrate", verbosity=0)
        project = Project.objects.create(name="bench")
        connection.ensure_connection()
        began = time.perf_counter()
        load_spans(connection.connection, args.spans, DAYS, args.seed, project_ids=(project.pk,), start=data_start)
        load_spans(connection.connection, args.spans // 10, DAYS, args.seed + 1, project_ids=(project.pk,),
                   start=data_start - timedelta(days=DAYS))  # fmt: skip
        print(f"loaded in {time.perf_counter() - began:.0f} s")
        began = time.perf_counter()
        runner.rollup_range(data_start - timedelta(days=DAYS), data_start + timedelta(days=DAYS))
        with connection.cursor() as cur:
            cur.execute("VACUUM ANALYZE rollups_rolluphour")
        print(f"rolled up in {time.perf_counter() - began:.0f} s")
    else:
        call_command("migrate", verbosity=0)
        began = time.perf_counter()
        built = 0
        while batch := day_rows.rebuild_stale_days(limit=100):
            built += len(batch)
        if built:
            with connection.cursor() as cur:
                cur.execute("VACUUM ANALYZE rollups_rollupday")
            print(f"built the day rows of {built} days in {time.perf_counter() - began:.0f} s")

    with connection.cursor() as cur:
        cur.execute("SELECT max(start_time), count(*) FROM telemetry_span WHERE start_time >= %s", [data_start])
        last, spans = cur.fetchone()
        cur.execute(
            "SELECT feature, tenant, count(*) FROM telemetry_span WHERE parent_span_id IS NULL "
            "AND start_time >= %s AND feature IS NOT NULL AND tenant IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 1",
            [last - timedelta(days=1)],
        )
        feature, tenant, _ = cur.fetchone()
        cur.execute(
            "SELECT provider, request_model FROM telemetry_span WHERE is_llm AND start_time >= %s "
            "AND provider IS NOT NULL AND request_model IS NOT NULL GROUP BY 1, 2 ORDER BY count(*) DESC LIMIT 1",
            [last - timedelta(days=1)],
        )
        provider, model = cur.fetchone()
        cur.execute(
            "SELECT trace_id FROM telemetry_span WHERE parent_span_id IS NULL AND start_time >= %s LIMIT 1",
            [last - timedelta(hours=6)],
        )
        trace_hex = cur.fetchone()[0].hex
    print(f"{spans:,} spans over the {DAYS} days; now = {last:%Y-%m-%d %H:%M} UTC (its hour is open)")

    user_model = get_user_model()
    user = user_model.objects.filter(username="bench-lead").first() or user_model.objects.create_user(
        "bench-lead", password="bench-pw-123", is_staff=True
    )
    client = Client()
    client.force_login(user)

    pages: list[tuple[str, str]] = [
        ("overview 7d", "/?range=7d"),
        ("overview 30d + compare", "/?range=30d&compare=1"),
        ("overview 24h", "/?range=24h"),
        ("features 30d", "/features/?range=30d"),
        ("tenants 30d", "/tenants/?range=30d"),
        ("models 30d", "/models/?range=30d"),
        ("feature detail 30d", f"/features/{feature}/?range=30d"),
        ("tenant detail 30d", f"/tenants/{tenant}/?range=30d"),
        ("model detail 30d", f"/models/{provider}/{model}/?range=30d"),
        ("compare features 30d", f"/compare/?kind=feature&a={feature}&b=summarize&range=30d"),
        ("prices", "/prices/?range=30d"),
        ("traces 7d", "/traces/?range=7d"),
        ("traces 30d by duration", "/traces/?range=30d&sort=duration"),
        # A filter that matches nothing: the page's bounded candidate batches, read to the end.
        ("traces 30d, no match", "/traces/?range=30d&model=no-such-model"),
        ("trace detail", f"/traces/{trace_hex}/"),
    ]
    search = ("traces filtered search 30d", f"/traces/?range=30d&tenant={tenant}&model={model}&min_ms=2000")
    if args.only:
        pages = [(name, path) for name, path in pages if args.only in name]

    now = last + timedelta(seconds=1)
    # As the image does (Dockerfile): bytecode for the project's modules, so a child compiles
    # nothing from source even where PYTHONDONTWRITEBYTECODE is set.
    compileall_quietly()
    started = {name: _cold_render_ms(path, now, bench_url) for name, path in pages}
    cold = {name: taken[0] for name, taken in started.items()}
    results: dict[str, tuple[float, float, float]] = {}
    with time_machine.travel(now, tick=True):
        for name, path in pages:
            results[name] = _time_page(client, path, args.runs)
        # The search is its own figure: a search that fails (the statement timeout's 503) is
        # reported as failed, and the pages' figures are still printed.
        try:
            started[search[0]] = _cold_render_ms(search[1], now, bench_url)
            cold[search[0]] = started[search[0]][0]
            results[search[0]] = _time_page(client, search[1], args.runs)
        except SystemExit as failure:
            print(f"{search[0]} failed: {str(failure).splitlines()[0]}")
        accuracy = None if args.only else _percentile_errors(now)
    print(f"machine: {os.cpu_count()} cores; {args.runs} runs per page after one warm-up")
    for name, (p50, p95, cleared) in results.items():
        print(f"{name:30s} p50 {p50:5.0f} ms   p95 {p95:5.0f} ms   cold (fresh process) {cold[name]:5.0f} ms"
              f"   cleared {cleared:5.0f} ms")  # fmt: skip
    if search[0] in results:
        print(f"traces_search_p95_ms={results[search[0]][1]:.0f}")
    else:
        print("traces_search_p95_ms=failed")
    if accuracy is not None:
        compared, worst, where = accuracy
        print(f"percentiles compared with percentile_cont on raw spans: {compared} (worst: {where})")
        print(f"worst_percentile_error_pct={worst:.3f}")
    print(f"worst_cleared_page_ms={max(results[name][2] for name, _ in pages):.0f}")
    print(f"worker start before the first request (Django set up, warm-up): "
          f"{min(t[1] for t in started.values()):.0f}-{max(t[1] for t in started.values()):.0f} ms")  # fmt: skip
    print(f"worst_cold_page_ms={max(cold[name] for name, _ in pages):.0f}")
    print(f"worst_page_p95_ms={max(results[name][1] for name, _ in pages):.0f}")


EXACT_SQL = """
SELECT c.provider, coalesce(c.request_model, c.response_model), count(*),
       percentile_cont(%(qs)s::float8[]) WITHIN GROUP (ORDER BY c.duration_ms),
       percentile_cont(%(qs)s::float8[]) WITHIN GROUP (ORDER BY c.ttft_ms)
FROM telemetry_span c
LEFT JOIN telemetry_span p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
                          AND p.start_time >= %(start)s::timestamptz - interval '1 day'
WHERE c.is_llm AND p.is_llm IS NOT TRUE AND c.start_time >= %(start)s AND c.start_time < %(end)s
GROUP BY 1, 2
"""


def _percentile_errors(now: Any) -> tuple[int, float, str]:
    """(percentiles compared, the worst relative error in percent, where) over the last 30
    days: the query layer per provider and model against percentile_cont on raw calls. The
    bench data nests LLM spans (OpenLLMetry over the Anthropic SDK, a vLLM server span under
    its client) but has no sibling pairs, so "an LLM span whose parent is not one" is the call.
    A request count that differs is a failure, not an error figure."""
    from django.db import connection, transaction

    from apps.metrics.query import Query, Scope, run_query

    quantiles = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
    metrics = ("requests", *(f"{dist}_ms_{q}" for dist in ("e2e", "ttft") for q in quantiles))
    start = now - timedelta(days=30)
    rows = run_query(Query(metrics, start, now, group_by=("provider", "model")), Scope(tenants=None)).rows
    # (groups of no call: the semantic-cache lookups and tasks, with no provider or model)
    mine = {(row["provider"], row["model"]): row for row in rows if row["requests"]}
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL statement_timeout = 0")
        cur.execute("SET LOCAL work_mem = '256MB'")
        cur.execute(EXACT_SQL, {"qs": list(quantiles.values()), "start": start, "end": now})
        exact = cur.fetchall()
    if len(exact) != len(mine):
        raise SystemExit(f"accuracy: {len(mine)} provider/model rows from the query layer, {len(exact)} exact")
    compared, worst, where = 0, 0.0, ""
    for provider, model, requests, e2e, ttft in exact:
        row = mine[(provider, model)]
        if row["requests"] != requests:
            raise SystemExit(f"accuracy: {provider}/{model}: {row['requests']} requests, exactly {requests}")
        for dist, values in (("e2e", e2e), ("ttft", ttft)):
            for q, value in zip(quantiles, values or (None,) * len(quantiles), strict=True):
                figure = row[f"{dist}_ms_{q}"]
                if value is None or figure is None:
                    if (value is None) != (figure is None):
                        raise SystemExit(f"accuracy: {provider}/{model} {dist} {q}: {figure}, exactly {value}")
                    continue
                compared += 1
                error = abs(float(figure) - value) / value * 100 if value else abs(float(figure))
                if error > worst:
                    worst, where = error, f"{provider}/{model} {dist} {q} {float(figure):.1f} ms, exactly {value:.1f}"
    return compared, worst, where


def _cold_render_ms(path: str, now: Any, bench_url: str) -> tuple[float, float]:
    """A page's first render in a fresh Python process (this script as a child), and the
    process's start before it (Django set up, warm-up)."""
    import subprocess

    child = subprocess.run(
        [sys.executable, __file__, "--cold-page", path, "--now", now.isoformat()],
        env={**os.environ, "DATABASE_URL": bench_url},
        capture_output=True,
        text=True,
        check=False,
    )
    found = dict(line.split("=", 1) for line in child.stdout.splitlines() if line.startswith(("cold_ms=", "start_ms=")))
    if child.returncode or "cold_ms" not in found:
        raise SystemExit(f"{path}: the cold render failed\n{child.stdout}\n{child.stderr}")
    return float(found["cold_ms"]), float(found["start_ms"])


def _cold_page(path: str, now_text: str) -> None:
    """In a child process: started as a gunicorn worker starts (Django set up, the WSGI
    handler's middleware loaded, then gunicorn.conf.py's post_worker_init warm-up), logged in,
    then one render of `path`, timed. The start is printed as well: a worker pays it before it
    takes requests."""
    from datetime import datetime

    began = time.perf_counter()
    import django

    django.setup()

    import time_machine
    from django.contrib.auth import get_user_model
    from django.test import Client

    from observatory.warmup import warm_web_worker

    with time_machine.travel(datetime.fromisoformat(now_text), tick=True):
        client = Client()
        client.handler.load_middleware()  # as WSGIHandler() does when gunicorn loads the app
        if not os.environ.get("BENCH_NO_WARMUP"):
            warm_web_worker()  # gunicorn.conf.py: post_worker_init
        print(f"start_ms={(time.perf_counter() - began) * 1000:.1f}")
        client.force_login(get_user_model().objects.get(username="bench-lead"))
        began = time.perf_counter()
        response = client.get(path)
        took = (time.perf_counter() - began) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{path}: HTTP {response.status_code}")
    print(f"cold_ms={took:.1f}")


def compileall_quietly() -> None:
    import compileall

    for folder in ("apps", "collectors", "observatory"):
        compileall.compile_dir(ROOT / folder, quiet=1)


def _time_page(client: Any, path: str, runs: int) -> tuple[float, float, float]:
    """(p50, p95, cleared): `runs` renders after a first one with every process cache cleared."""
    from apps.dashboard import page_reads
    from apps.metrics import days
    from apps.pricing.services import PriceBook
    from apps.telemetry import partitions, views

    page_reads.wait_for_refresh()
    page_reads.forget()
    days.CACHE.clear()
    days.HOURS.clear()
    PriceBook.forget()
    partitions.forget_known_partitions()
    views.forget_cached_keys()
    began = time.perf_counter()
    response = client.get(path)
    cleared = (time.perf_counter() - began) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{path}: HTTP {response.status_code}")
    took = []
    for _ in range(runs):
        began = time.perf_counter()
        response = client.get(path)
        took.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200
    took.sort()
    return statistics.median(took), took[max(0, round(0.95 * len(took)) - 1)], cleared


if __name__ == "__main__":
    main()
