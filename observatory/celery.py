"""The Celery app. Tasks live in each app's tasks.py with explicit names; the schedule is here."""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "observatory.settings")

app = Celery("observatory")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Beat only triggers; each task is idempotent and decides itself what is due. Minutes are
# staggered so the hourly jobs do not start together; `expires` drops a trigger that sat in
# the queue past its usefulness instead of running a pile of them late.
app.conf.beat_schedule = {
    "span partitions: create ahead, drop past retention (hourly)": {
        "task": "telemetry.maintain_partitions",
        "schedule": crontab(minute=7),
        "options": {"expires": 50 * 60},
    },
}
