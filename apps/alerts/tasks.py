"""Celery tasks of the alerts (queue `alerts`; the schedule is in observatory/celery.py)."""

from __future__ import annotations

import logging
import time

from celery import shared_task
from django.db import OperationalError, transaction
from django.utils import timezone

from apps.alerts import delivery
from apps.alerts.models import AlertRule, Channel
from apps.alerts.services import claim_due_rules, evaluate_rules

log = logging.getLogger(__name__)


@shared_task(
    name="alerts.evaluate_due",
    # A lost database connection is worth one more try; the claims are in the database, so a
    # retry or the next trigger finds the same due rules.
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    max_retries=3,
)
def evaluate_due() -> int:
    """Evaluate the rules due now (claimed here alone), then queue the deliveries that are due.
    Returns the notifications written."""
    started = time.monotonic()
    now = timezone.now()
    rule_ids = claim_due_rules(now)
    written = 0
    if rule_ids:
        rules = list(AlertRule.objects.filter(pk__in=rule_ids))
        cycle, notifications = evaluate_rules(rules, now)
        written = len(notifications)
        log.info(
            "evaluated %s rules in %s shapes (%s queries, %.2fs): %s notifications",
            len(rules),
            cycle.shapes,
            cycle.queries,
            time.monotonic() - started,
            written,
        )
    # Due attempts (retries, first attempts whose message was lost) go out as tasks of their
    # own, so a slow webhook never holds up the next sweep; each is claimed when sent.
    for delivery_id in delivery.due_delivery_ids():
        deliver.delay(delivery_id)
    return written


@shared_task(name="alerts.evaluate_rules", autoretry_for=(OperationalError,), retry_backoff=2, max_retries=3)
def evaluate_rules_now(rule_ids: list[int]) -> int:
    """Evaluate these rules now, due or not (the transitions are still claimed one by one, so
    running this beside a sweep never notifies twice). Returns the notifications written."""
    rules = list(AlertRule.objects.filter(pk__in=rule_ids, enabled=True))
    _, notifications = evaluate_rules(rules, timezone.now())
    return len(notifications)


@shared_task(name="alerts.deliver")
def deliver(delivery_id: int) -> str | None:
    """Send one pending attempt (queued right after the notification committed)."""
    sent = delivery.send_delivery(delivery_id)
    return None if sent is None else sent.result


@shared_task(name="alerts.send_test")
def send_test(channel_id: int) -> str | None:
    """The channel page's "send test notification": one attempt now, retried like any other."""
    channel = Channel.objects.get(pk=channel_id)
    with transaction.atomic():
        test = delivery.queue_test(channel)
    sent = delivery.send_delivery(test.pk)
    return None if sent is None else sent.result
