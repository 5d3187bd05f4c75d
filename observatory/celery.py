"""The Celery app. Tasks live in each app's tasks.py with explicit names; the schedule is here.

Queues, routes, acknowledgement and time limits are Django settings (CELERY_* in
observatory/settings.py). README "Background work (Celery)" lists what runs where.
"""

from __future__ import annotations

import os
from datetime import timedelta

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "observatory.settings")

app = Celery("observatory")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

ROLLUP_SWEEP_EVERY = timedelta(seconds=15)

# Beat only triggers; each task is idempotent and decides itself what is due. Minutes are
# staggered so the hourly jobs do not start together; `expires` drops a trigger that sat in
# the queue past its usefulness instead of running a pile of them late.
app.conf.beat_schedule = {
    "span partitions: create ahead, drop past retention (hourly)": {
        "task": "telemetry.maintain_partitions",
        "schedule": crontab(minute=7),
        "options": {"expires": 50 * 60},
    },
    # Ingest notes the hours that gained spans (DirtyHour); the sweep recomputes them, so the
    # pages lag the receiver by about this period. A trigger still queued after two periods
    # is dropped: the next one sweeps the same notes.
    "rollups: recompute hours noted dirty by ingest (every 15 s)": {
        "task": "rollups.rollup_pending",
        "schedule": ROLLUP_SWEEP_EVERY,
        "options": {"expires": 2 * ROLLUP_SWEEP_EVERY.total_seconds()},
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
