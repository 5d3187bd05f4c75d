"""Celery tasks of the rollups (queue `rollups`; the schedule is in observatory/celery.py)."""

from __future__ import annotations

import logging
import time
from datetime import datetime

from celery import shared_task
from django.db import OperationalError

from apps.rollups import day_rows, runner

log = logging.getLogger(__name__)

# A sweep stops taking new batches after this long, well inside the soft time limit, so one
# trigger never overlaps the next by much; whatever is left stays noted for the next one.
SWEEP_BUDGET_SECONDS = 50.0
SWEEP_BATCH_HOURS = 50


@shared_task(
    name="rollups.rollup_pending",
    # Only a lost or refused database connection (a restart, a failover) is worth retrying:
    # the notes stay in place, so a retry, or the next trigger, finds the same work.
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def rollup_pending_task(budget_seconds: float = SWEEP_BUDGET_SECONDS) -> int:
    """Recompute the noted hours, oldest first, batch after batch, until none is left that
    no other worker holds or the time budget is spent; then rebuild the day rows of the
    closed days that changed. Returns the hours taken (recomputed, or set aside after
    failing: runner.recompute_pending).

    Each (project, hour) is recomputed once per sweep: the current hour is noted again by
    every ingest batch, and recomputing it in a loop would keep a worker busy for the whole
    budget every trigger. Its new notes wait for the next trigger.
    """
    deadline = time.monotonic() + budget_seconds
    done: set[tuple[int, datetime]] = set()
    while time.monotonic() < deadline:
        batch = runner.recompute_pending(limit=SWEEP_BATCH_HOURS, skip=done)
        if not batch:
            break
        done.update(batch)
    if done:
        log.info("recomputed %s noted hours", len(done))
    # Every sweep, not only after recomputes: a day also needs its rows when it closes.
    day_rows.rebuild_stale_days()
    if done:
        runner.compact_day_changes()
    return len(done)
