"""The Celery app. Tasks live in each app's tasks.py with explicit names; the schedule is here.

Queues, routes, acknowledgement and time limits are Django settings (CELERY_* in
observatory/settings.py). README "Background work (Celery)" lists what runs where.
"""

from __future__ import annotations

import os
from datetime import timedelta

from celery import Celery
from celery.schedules import crontab
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "observatory.settings")

app = Celery("observatory")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _warm_pool_process(**_: object) -> None:
    # Each pool process imports and compiles what tasks reach lazily (the query layer's
    # rollup SQL, e-mail templates, reverse()) before its first task (observatory/warmup.py).
    from observatory.warmup import warm_process

    warm_process()


ROLLUP_SWEEP_EVERY = timedelta(seconds=15)
SCRAPE_SWEEP_EVERY = timedelta(seconds=5)
INSIGHTS_EVERY = timedelta(seconds=int(os.environ.get("INSIGHTS_SECONDS") or 300))
ALERTS_SWEEP_EVERY = timedelta(seconds=int(os.environ.get("ALERTS_SWEEP_SECONDS") or 30))
GPU_COST_SWEEP_EVERY = timedelta(minutes=1)

# Beat only triggers; each task is idempotent and decides itself what is due. Minutes are
# staggered so the hourly jobs do not start together; `expires` drops a trigger that sat in
# the queue past its usefulness instead of running a pile of them late.
app.conf.beat_schedule = {
    "span partitions: create ahead, drop past retention (hourly)": {
        "task": "telemetry.maintain_partitions",
        "schedule": crontab(minute=7),
        "options": {"expires": 50 * 60},
    },
    "metric partitions: create ahead, drop past retention (hourly)": {
        "task": "gpu.maintain_partitions",
        "schedule": crontab(minute=9),
        "options": {"expires": 50 * 60},
    },
    # Each ScrapeTarget has its own interval and next_scrape_at; the sweep only claims the due
    # ones, so it runs more often than any target's interval. A sweep still queued after two
    # periods is dropped: the next one claims the same targets.
    "gpu: scrape due vLLM / DCGM /metrics endpoints (every 5 s)": {
        "task": "gpu.scrape_endpoints",
        "schedule": SCRAPE_SWEEP_EVERY,
        "options": {"expires": 2 * SCRAPE_SWEEP_EVERY.total_seconds()},
    },
    # Each project's AttributionCursor decides which intervals are due (closed + grace) and
    # which late spans or samples re-open; a trigger still queued after a period is dropped.
    "gpu: attribute GPU cost of due intervals to requests (every minute)": {
        "task": "gpu.attribute_costs",
        "schedule": GPU_COST_SWEEP_EVERY,
        "options": {"expires": GPU_COST_SWEEP_EVERY.total_seconds()},
    },
    # Ingest notes the hours that gained spans (DirtyHour); the sweep recomputes them, so the
    # pages lag the receiver by about this period. A trigger still queued after two periods
    # is dropped: the next one sweeps the same notes.
    "rollups: recompute hours noted dirty by ingest (every 15 s)": {
        "task": "rollups.rollup_pending",
        "schedule": ROLLUP_SWEEP_EVERY,
        "options": {"expires": 2 * ROLLUP_SWEEP_EVERY.total_seconds()},
    },
    # Alerts: the sweep claims the rules due now (next_evaluation_at) and the delivery retries
    # due now; the database decides, so two beats or workers never evaluate a rule twice.
    "alerts: evaluate due rules, retry due deliveries (every ALERTS_SWEEP_SECONDS, 30 s)": {
        "task": "alerts.evaluate_due",
        "schedule": ALERTS_SWEEP_EVERY,
        "options": {"expires": 2 * ALERTS_SWEEP_EVERY.total_seconds()},
    },
    # Drift and regression detectors (apps/insights) over every project; findings feed the
    # alert rules of kind drift / regression, the findings pages and the weekly review.
    "insights: drift and regression detectors": {
        "task": "insights.detect",
        "schedule": INSIGHTS_EVERY,
        "options": {"expires": INSIGHTS_EVERY.total_seconds()},
    },
    # Each subscriber picks a weekday, hour and time zone; the sweep sends the reviews that
    # are due (ReviewSubscription.next_send_at) and claims each (user, week) once, so a
    # second beat or a late trigger sends nothing twice.
    "reports: send the weekly cost reviews that are due (every 15 min)": {
        "task": "reports.send_due_reviews",
        "schedule": crontab(minute="3,18,33,48"),
        "options": {"expires": 10 * 60},
    },
}
