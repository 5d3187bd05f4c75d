"""Celery tasks of the insights (queue `alerts`; the schedule is in observatory/celery.py)."""

from __future__ import annotations

import logging
import time
from datetime import datetime

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from apps.accounts.models import Project

log = logging.getLogger(__name__)


def detect_all(now: datetime | None = None) -> dict[str, int]:
    """Run every detector family over every project at `now`; returns findings written per family."""
    from apps.insights import drift, regressions

    now = now or timezone.now()
    written = {"drift": 0, "regression": 0}
    for project_id in Project.objects.values_list("pk", flat=True):
        written["drift"] += len(drift.detect(project_id, now))
        written["regression"] += len(regressions.detect(project_id, now))
    return written


@shared_task(name="insights.detect", autoretry_for=(OperationalError,), retry_backoff=2, max_retries=3)
def detect() -> dict[str, int]:
    started = time.monotonic()
    written = detect_all()
    log.info("insights: %s open findings written or refreshed in %.2fs", written, time.monotonic() - started)
    return written
