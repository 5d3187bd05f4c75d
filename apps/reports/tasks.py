"""Celery tasks of the weekly review; `reports.*` routes to the `email` queue."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from apps.reports import delivery

log = logging.getLogger(__name__)

# Retry backoff: 1, 2, 4, ... minutes, at most an hour apart.
FIRST_RETRY_S, LONGEST_RETRY_S = 60, 3600


@shared_task(name="reports.send_due_reviews")
def send_due_reviews() -> dict[str, Any]:
    """Beat's trigger: claim and build the reviews that are due, then queue their sends."""
    result = delivery.sweep()
    for review_id in result.ready:
        send_review.delay(review_id)
    if result.ready or result.failed or result.skipped:
        log.info(
            "weekly reviews: %d built (%d scopes), %d failed to build, %d already claimed elsewhere",
            len(result.ready), result.scopes, result.failed, result.skipped,
        )  # fmt: skip
    return {"ready": result.ready, "failed": result.failed, "skipped": result.skipped}


@shared_task(name="reports.send_review", bind=True, max_retries=None)
def send_review(self: Any, review_id: int) -> str:
    """Send one built review. Only known transient SMTP and network errors are retried, with
    backoff, up to REVIEW_SEND_RETRIES; the row shows each failure (status, last_error)."""
    retries = self.request.retries
    outcome, _ = delivery.send_review(review_id, final_attempt=retries >= settings.REVIEW_SEND_RETRIES)
    if outcome == delivery.SendOutcome.RETRY:
        raise self.retry(countdown=min(FIRST_RETRY_S * 2**retries, LONGEST_RETRY_S), exc=None)
    return outcome
