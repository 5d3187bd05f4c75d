"""Building the weekly cost reviews of 200 readers with mixed scopes at N spans.

    python3 run.py bench weekly_review [--spans N] [--reuse] [--users 200] [--database NAME]

Uses the database bench/query.py builds (observatory_bench_query: N spans over 30 days and
N / 10 over the 30 days before, loaded with COPY and rolled up; default N = 10,000,000);
`--reuse` takes it as a previous bench run left it (it is migrated, so the reports tables
exist). "Now" is the last span loaded; the reviewed week is the last complete ISO week
before it, compared with the week before.

The readers: a third staff, a fifth who see every tenant without being staff, the rest
limited to one to three of the bench tenants (a dozen, heavy-tailed), so several readers
share each scope, as in a company. Each has a due subscription. What is timed is the
sweep the `reports.send_due_reviews` task runs (delivery.sweep): claim every (user, week),
read the figures through the query layer once per scope, render the charts once per
scope (kaleido + Chromium, when present), compose and store every reader's email. Sending
is the `email` queue's separate work and is not timed. The days cache is emptied first, so
the figures are read as by a worker that starts the sweep cold.

The last line is `review_s_per_user=<number>` (target: under 0.5).
"""

from __future__ import annotations

import argparse
import os
import random
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
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--reuse", action="store_true", help="use the loaded, rolled-up bench database as it is")
    parser.add_argument("--database", default=DATABASE, help="a database of its own (development at fewer spans)")
    parser.add_argument("--no-charts", action="store_true", help="HTML/CSS bars only (no Chromium)")
    args = parser.parse_args()

    bench_url, fresh = bench_database(args.database, args.reuse)
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "observatory.settings")
    if args.no_charts:
        os.environ["REVIEW_CHART_IMAGES"] = "false"

    import django

    django.setup()

    import time_machine
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from apps.accounts.models import Project, TenantAccess
    from apps.metrics.days import CACHE, HOURS
    from apps.reports import delivery
    from apps.reports.models import ReviewSubscription, WeeklyReview
    from apps.reports.weeks import ReviewWeek
    from apps.rollups import runner
    from bench._spans import DEFAULT_START, TENANTS, load_spans

    call_command("migrate", verbosity=0)
    data_start = DEFAULT_START
    if fresh:
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
    with connection.cursor() as cur:
        cur.execute("SELECT max(start_time), count(*) FROM telemetry_span WHERE start_time >= %s", [data_start])
        last, spans = cur.fetchone()
    now = last + timedelta(seconds=1)
    week = ReviewWeek.last_complete(now)
    print(f"{spans:,} spans over the {DAYS} days; now = {now:%Y-%m-%d %H:%M} UTC; reviewing {week.label} "
          f"({week.describe()}) against {week.previous.label}")  # fmt: skip

    events = _make_events(Project.objects.order_by("pk").first(), week, TENANTS, random.Random(args.seed))
    print(f"findings and alert notifications around the week: {events}")
    scopes = _make_readers(args.users, TENANTS, random.Random(args.seed), get_user_model(), TenantAccess)
    print(f"{args.users} readers in {scopes} distinct scopes")
    WeeklyReview.objects.filter(user__username__startswith="bench-reader-").delete()
    for user in get_user_model().objects.filter(username__startswith="bench-reader-"):
        ReviewSubscription.objects.get_or_create(user=user)
    ReviewSubscription.objects.filter(user__username__startswith="bench-reader-").update(
        enabled=True, next_send_at=now - timedelta(minutes=5), weekday=0, hour=8, timezone="UTC"
    )
    # Only the bench readers are due (others in a reused database are left as they are).
    ReviewSubscription.objects.exclude(user__username__startswith="bench-reader-").update(
        next_send_at=now + timedelta(days=7)
    )
    CACHE.clear()
    HOURS.clear()
    with time_machine.travel(now, tick=True):
        began = time.perf_counter()
        result = delivery.sweep(now)
        took = time.perf_counter() - began
    built = WeeklyReview.objects.filter(pk__in=result.ready)
    images = sum(review.images.count() for review in built)
    print(f"sweep: {len(result.ready)} reviews built and stored ({result.failed} failed) from {result.scopes} "
          f"scopes in {took:.2f} s; {images} inline images; machine: {os.cpu_count()} cores")  # fmt: skip
    if len(result.ready) != args.users:
        raise SystemExit(f"expected {args.users} reviews, built {len(result.ready)}")
    print(f"review_s_per_user={took / args.users:.3f}")


def _make_events(project: Any, week: Any, tenants: list[str], rng: random.Random) -> str:
    """Findings and alert episodes over the reviewed week and the weeks around it (made once):
    a few hundred findings per month and a few dozen alert episodes, most about one tenant."""
    from apps.alerts.models import AlertRule, AlertState, Notification
    from apps.insights.models import Finding

    if not Finding.objects.filter(signature__startswith="bench:").exists():
        findings = []
        for number in range(400):
            seen = week.start - timedelta(days=21) + timedelta(minutes=rng.randrange(35 * 24 * 60))
            ended = seen + timedelta(hours=rng.randrange(1, 240)) if rng.random() < 0.7 else None
            tenant = "" if number % 10 == 0 else rng.choice(tenants)
            finding = Finding(project=project, kind=rng.choice(("drift", "regression")), metric="latency_p99",
                              slice={"feature": f"feature-{number % 17}"}, tenant=tenant, signature=f"bench:{number}",
                              severity=rng.choice(("info", "warning", "warning", "critical")),
                              status="resolved" if ended else "open", title=f"Bench finding {number}",
                              started_at=seen - timedelta(hours=1), first_seen_at=seen, last_seen_at=ended or seen,
                              resolved_at=ended)  # fmt: skip
            findings.append(finding)
        Finding.objects.bulk_create(findings)
        rule, _ = AlertRule.objects.get_or_create(name="bench p99 per tenant", kind="latency", group_by=["tenant"],
                                                  critical_threshold=2000)  # fmt: skip
        for number in range(60):
            tenant = tenants[number % len(tenants)]
            key, group = f'{{"tenant":"{tenant}"}}', {"group": {"tenant": tenant}, "tenant": tenant}
            state, _ = AlertState.objects.get_or_create(rule=rule, group_key=key, defaults=group)
            state.episode += 1
            state.save(update_fields=["episode"])
            fired = week.start - timedelta(days=14) + timedelta(minutes=rng.randrange(28 * 24 * 60))
            for sequence, (event, when) in enumerate((("fired", fired), ("resolved", fired + timedelta(hours=3)))):
                Notification.objects.create(state=state, rule=rule, episode=state.episode, event=event,
                                            level="critical", sequence=sequence, tenant=tenant, title=f"bench {tenant}",
                                            text="", created_at=when)  # fmt: skip
    return f"{Finding.objects.count()} findings, {Notification.objects.count()} notifications"


def _make_readers(count: int, tenants: list[str], rng: random.Random, user_model: Any, access_model: Any) -> int:
    """`count` bench readers (created once, reused): staff, all-tenant and tenant-limited."""
    scopes: set[tuple[str, ...] | None] = set()
    for number in range(count):
        username = f"bench-reader-{number:03d}"
        kind = number % 15
        user = user_model.objects.filter(username=username).first()
        if user is None:
            user = user_model.objects.create_user(username, f"{username}@bench.example", is_staff=kind < 5)
        if kind < 5:
            scopes.add(None)
            continue
        if kind < 8:
            access_model.objects.update_or_create(user=user, defaults={"all_tenants": True, "tenants": []})
            scopes.add(None)
            continue
        # Limited readers: one to three tenants, the big ones more often (as account managers).
        chosen = sorted(set(rng.choices(tenants[:8], [1 / (i + 1) for i in range(8)], k=rng.randint(1, 3))))
        access_model.objects.update_or_create(user=user, defaults={"all_tenants": False, "tenants": chosen})
        scopes.add(tuple(chosen))
    return len(scopes)


if __name__ == "__main__":
    main()
