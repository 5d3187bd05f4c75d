"""One evaluation cycle of 1,000 alert rules of mixed kinds and scopes at N spans over 30 days.

    python3 run.py bench alerts [--spans N] [--rules 1000] [--database NAME]

Uses the database bench/query.py builds (observatory_bench_query: N spans over 30 days and
N / 10 over the 30 days before, loaded with COPY and rolled up; default N = 10,000,000); when
it does not exist yet it is built the same way. "Now" is the last span loaded (its hour is
open, read from raw spans, as in production).

The rules use the tenants, features and models found in the data: latency percentiles
(e2e, TTFT, queue time; p50/p95/p99/p99.9; 5, 15 and 60-minute windows), error rates, day and
month budgets, prompt-cache drops against a week earlier, drift and regression findings;
scoped by one or two dimensions, or per tenant / per feature. A cycle is what the
`alerts.evaluate_due` task does: claim the due rules, judge them one query per shape, write
the transitions. Printed: the first cycle in a fresh process (no merged day kept), then the
median of 3 more (a worker's steady state), the number of shapes and queries, and the time
to deliver one notification to a webhook on loopback.

`alert_delay_bound_s` is an upper bound on the delay from the first bad span to its
notification with the default schedule, computed from the figures above: the receiver answers
after the commit and the query layer reads the open hour from raw spans (no rollup in
between), so it is the sweep period (the longest wait for the next `alerts.evaluate_due`;
rules are due every sweep by default) + the measured cycle + the measured delivery. The delay
itself (`alert_delay_s`) is measured end to end by bench/alert_delay.py.

The last line is `alert_cycle_s=<number>`: the slower of the first cycle and the steady one.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._db import bench_database  # noqa: E402

DATABASE = "observatory_bench_query"
DAYS = 30


def build(spans: int, seed: int) -> None:
    """Load and roll up the bench data as bench/query.py does."""
    from django.core.management import call_command
    from django.db import connection

    from apps.accounts.models import Project
    from apps.rollups import runner
    from bench._spans import DEFAULT_START, load_spans

    call_command("migrate", verbosity=0)
    project = Project.objects.create(name="bench")
    connection.ensure_connection()
    began = time.perf_counter()
    load_spans(connection.connection, spans, DAYS, seed, project_ids=(project.pk,), start=DEFAULT_START)
    load_spans(
        connection.connection,
        spans // 10,
        DAYS,
        seed + 1,
        project_ids=(project.pk,),
        start=DEFAULT_START - timedelta(days=DAYS),
    )
    print(f"loaded {spans:,} + {spans // 10:,} spans in {time.perf_counter() - began:.1f} s")
    began = time.perf_counter()
    runner.rollup_range(DEFAULT_START - timedelta(days=DAYS), DEFAULT_START + timedelta(days=DAYS))
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE rollups_rolluphour")
    print(f"rolled up in {time.perf_counter() - began:.1f} s")


def make_rules(count: int, now: Any, seed: int) -> list[Any]:
    """`count` rules of mixed kinds and scopes over the data's own names."""
    from apps.alerts.models import AlertRule
    from apps.insights.models import Finding
    from apps.metrics.query import Scope, dimension_values

    rng = random.Random(seed)
    week = (now - timedelta(days=7), now)
    names = {dim: dimension_values(dim, *week, Scope.everything()) for dim in ("tenant", "feature", "model")}
    names["tenant"] = [name for name in names["tenant"] if name] or ["acme"]
    AlertRule.objects.filter(name__startswith="bench ").delete()
    Finding.objects.filter(signature__startswith="bench:").delete()
    from apps.accounts.models import Project

    project = Project.objects.order_by("pk").first()
    assert project is not None, "the bench database has a project"
    for index, tenant in enumerate(names["tenant"][:20]):  # a few open findings to match
        Finding.objects.create(
            project=project,
            kind=("drift", "regression")[index % 2],
            metric="output_tokens",
            slice={"feature": rng.choice(names["feature"])},
            tenant=tenant,
            signature=f"bench:{index}",
            severity=("warning", "critical")[index % 2],
            title=f"bench finding {index}",
        )

    def scope() -> dict[str, Any]:
        choice = rng.random()
        if choice < 0.3:
            return {"features": [rng.choice(names["feature"])]}
        if choice < 0.55:
            return {"tenants": [rng.choice(names["tenant"])]}
        if choice < 0.7:
            return {"tenants": [rng.choice(names["tenant"])], "features": [rng.choice(names["feature"])]}
        if choice < 0.8:
            return {"model_names": [rng.choice(names["model"])]}
        if choice < 0.9:
            return {"group_by": ["tenant"]}
        return {"group_by": ["feature"], "tenants": rng.sample(names["tenant"], min(2, len(names["tenant"])))}

    rules = []
    for index in range(count):
        kind = rng.choices(
            ["latency", "error_rate", "budget", "cache_drop", "drift", "regression"], [40, 20, 15, 10, 10, 5]
        )[0]
        fields: dict[str, Any] = {"name": f"bench {index}", "kind": kind, "min_samples": 20, **scope()}
        if kind == "latency":
            fields.update(
                distribution=rng.choice(["e2e_ms", "e2e_ms", "ttft_ms", "queue_ms"]),
                percentile=rng.choice(["50", "95", "99", "999"]),
                window_minutes=rng.choice([5, 15, 60]),
                warning_threshold=2000,
                critical_threshold=rng.choice([4000, 8000, 20000]),
            )
        elif kind == "error_rate":
            fields.update(window_minutes=rng.choice([15, 60]), warning_threshold=0.02, critical_threshold=0.1)
        elif kind == "budget":
            fields.update(budget_period=rng.choice(["day", "month"]), critical_threshold=rng.choice([5, 50, 500]))
        elif kind == "cache_drop":
            fields.update(window_minutes=60, warning_threshold=5, critical_threshold=20)
        rules.append(AlertRule(**fields, next_evaluation_at=now - timedelta(seconds=1)))
    return AlertRule.objects.bulk_create(rules)


def cycle() -> tuple[float, int]:
    """What alerts.evaluate_due does, timed; returns (seconds, notifications written)."""
    from django.utils import timezone

    from apps.alerts.models import AlertRule
    from apps.alerts.services import claim_due_rules, evaluate_rules

    AlertRule.objects.filter(name__startswith="bench ").update(next_evaluation_at=timezone.now() - timedelta(seconds=1))
    began = time.perf_counter()
    now = timezone.now()
    ids = claim_due_rules(now)
    rules = list(AlertRule.objects.filter(pk__in=ids))
    result, written = evaluate_rules(rules, now)
    seconds = time.perf_counter() - began
    cycle.last = result  # type: ignore[attr-defined]
    return seconds, len(written)


def delivery_seconds() -> float:
    """One notification delivered to a JSON webhook on loopback, claim to recorded result."""
    from django.utils import timezone

    from apps.alerts.delivery import send_delivery
    from apps.alerts.models import Channel, Delivery, Notification

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        channel = Channel.objects.create(
            name="bench hook", kind="webhook", config={"url": f"http://127.0.0.1:{server.server_address[1]}/"}
        )
        notification = Notification.objects.filter(rule__name__startswith="bench ").first()
        times = []
        for _ in range(5):
            # The row alerts.deliver would take (queued without the broker: this measures the send).
            delivery = Delivery.objects.create(
                notification=notification,
                channel=channel,
                target=channel.target,
                result=Delivery.Result.PENDING,
                next_attempt_at=timezone.now(),
            )
            began = time.perf_counter()
            sent = send_delivery(delivery.pk)
            times.append(time.perf_counter() - began)
            assert sent is not None and sent.result == "sent", sent
        channel.delete()
        return statistics.median(times)
    finally:
        server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database", default=DATABASE, help="an existing bench database is reused as it is")
    args = parser.parse_args()

    bench_url, fresh = bench_database(args.database, reuse=True)
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "observatory.settings")

    import django

    django.setup()

    import time_machine
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from apps.alerts.models import AlertRule, AlertState, Notification
    from apps.metrics.days import CACHE
    from bench._spans import DEFAULT_START

    if fresh:
        build(args.spans, args.seed)
    else:
        call_command("migrate", verbosity=0)  # the alerts tables, on a database built before them
    with connection.cursor() as cur:
        cur.execute("SELECT count(*), max(start_time) FROM telemetry_span WHERE start_time >= %s", [DEFAULT_START])
        spans, last = cur.fetchone()
    now = last + timedelta(seconds=1)
    print(f"{args.database}: {spans:,} spans over the {DAYS} days; now = {now:%Y-%m-%d %H:%M:%S}")

    with time_machine.travel(now, tick=True):
        rules = make_rules(args.rules, now, args.seed)
        kinds: dict[str, int] = {}
        for rule in rules:
            kinds[rule.kind] = kinds.get(rule.kind, 0) + 1
        print(f"{len(rules)} rules: " + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())))
        CACHE.clear()
        cold_s, written = cycle()
        result = cycle.last  # type: ignore[attr-defined]
        print(
            f"first cycle in a fresh process (no merged day kept): {cold_s:.2f} s; {result.shapes} shapes, "
            f"{result.queries} queries; {written} notifications written"
        )
        warm = [cycle()[0] for _ in range(3)]
        open_alerts = AlertState.objects.filter(rule__name__startswith="bench ").exclude(level="ok").count()
        print(f"steady cycles: {', '.join(f'{s:.2f}' for s in warm)} s; {open_alerts} alerts open")
        send_s = delivery_seconds()
        print(f"one webhook delivery on loopback: {send_s * 1000:.0f} ms")
        Notification.objects.filter(rule__name__startswith="bench ").delete()
        AlertRule.objects.filter(name__startswith="bench ").delete()

    steady = statistics.median(warm)
    delay = settings.ALERTS_SWEEP_SECONDS + max(cold_s, steady) + send_s
    print(
        f"alert_delay_bound_s={delay:.1f} (computed: sweep every {settings.ALERTS_SWEEP_SECONDS} s, rules due every "
        f"{settings.ALERTS_EVALUATE_EVERY_SECONDS} s, + cycle + delivery; measured end to end: bench/alert_delay.py)"
    )
    print(f"machine: {os.cpu_count()} cores")
    # The figure is the first cycle of a fresh process, the slower of the two.
    print(f"alert_cycle_s={max(cold_s, steady):.2f}")


if __name__ == "__main__":
    main()
