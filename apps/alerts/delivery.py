"""Sending notifications: email (Django's mail framework), Slack-compatible and signed JSON
webhooks (httpx), one Delivery row per attempt.

Outcomes are sorted once (`Outcome`): success; transient (a connection error or timeout, HTTP
5xx or 429, SMTP 4xx), retried with exponential backoff up to ALERTS_MAX_ATTEMPTS; permanent
(HTTP 4xx other than 429, a redirect, SMTP 5xx, a bad config), which disables the channel at
once. ALERTS_DISABLE_AFTER_FAILURES failed attempts in a row disable it too. A disabled
channel says why on its page, and its owner gets an email (or only the page notice when the
owner has no address).

Signed JSON webhooks carry `X-Observatory-Signature: sha256=<hex>`, the HMAC-SHA256 of the
exact request body under the channel's secret (docs/alerts.md shows how to verify it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from apps.alerts.models import Channel, Delivery, Notification, retry_delay

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Observatory-Signature"
# A claimed attempt not finished within this is taken up again (its sender died).
CLAIM_LEASE = timedelta(minutes=5)


@dataclass
class Outcome:
    ok: bool
    transient: bool = False
    http_status: int | None = None
    smtp_reply: str = ""
    error: str = ""


@dataclass
class Message:
    """What a channel sends, whatever the transport."""

    title: str
    text: str
    url: str
    data: dict[str, Any]


def message_for(delivery: Delivery) -> Message:
    notification = delivery.notification
    if notification is None:  # a test message from the channel page
        url = settings.ALERTS_SITE_URL + reverse("alert-channel", args=[delivery.channel_id])
        return Message(
            "[TEST] Observatory test notification",
            f"This is a test of the channel {delivery.channel.name}. If you can read this, alerts will reach you here.",
            url,
            {"event": "test", "channel": delivery.channel.name},
        )
    url = settings.ALERTS_SITE_URL + reverse("alert-rule", args=[notification.rule_id])
    data = {
        "event": notification.event,
        "level": notification.level,
        "rule": {"id": notification.rule_id, "name": notification.rule.name, "kind": notification.rule.kind},
        "alert_id": notification.state_id,
        "episode": notification.episode,
        "tenant": notification.tenant,
        "title": notification.title,
        "summary": notification.text,
        "details": notification.details,
        "created_at": notification.created_at.isoformat(),
    }
    return Message(notification.title, notification.text, url, data)


def slack_body(message: Message) -> dict[str, Any]:
    return {
        "text": f"{message.title}\n{message.text}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": message.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": message.text[:2900]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{message.url}|Open in Observatory>"}]},
        ],
    }


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post(url: str, body: bytes, headers: dict[str, str]) -> Outcome:
    timeout = settings.ALERTS_WEBHOOK_TIMEOUT_SECONDS
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout, follow_redirects=False)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return Outcome(False, error=f"bad URL: {exc}")
    except httpx.TransportError as exc:  # connect errors, timeouts, broken connections
        return Outcome(False, transient=True, error=f"{type(exc).__name__}: {exc}")
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(True, http_status=status)
    detail = response.text[:300]
    if status == 429 or status >= 500:
        return Outcome(False, transient=True, http_status=status, error=f"HTTP {status}: {detail}")
    if 300 <= status < 400:
        return Outcome(False, http_status=status, error=f"HTTP {status}: redirects are not followed; use the final URL")
    return Outcome(False, http_status=status, error=f"HTTP {status}: {detail}")


def _send_webhook(channel: Channel, message: Message, delivery: Delivery) -> tuple[bytes, Outcome]:
    headers = {"Content-Type": "application/json", "User-Agent": "Observatory-Alerts"}
    if channel.kind == Channel.Kind.SLACK:
        body = json.dumps(slack_body(message)).encode()
    else:
        body = json.dumps({**message.data, "url": message.url, "delivery_id": delivery.pk}, sort_keys=True).encode()
        headers[SIGNATURE_HEADER] = sign(channel.secret, body)
        headers["X-Observatory-Delivery"] = str(delivery.pk)
    return body, _post(channel.config["url"], body, headers)


def _smtp_outcome(code: int, text: str) -> Outcome:
    reply = f"{code} {text}"[:500]
    return Outcome(False, transient=400 <= code < 500, smtp_reply=reply, error=f"SMTP {reply}")


def _send_email(channel: Channel, message: Message) -> tuple[bytes, Outcome]:
    context = {
        "message": message,
        "channel": channel,
        "channel_url": settings.ALERTS_SITE_URL + reverse("alert-channel", args=[channel.pk]),
    }
    subject = render_to_string("alerts/email/notification_subject.txt", context).strip().replace("\n", " ")
    text = render_to_string("alerts/email/notification.txt", context)
    html = render_to_string("alerts/email/notification.html", context)
    email = EmailMultiAlternatives(
        subject,
        text,
        settings.DEFAULT_FROM_EMAIL,
        channel.config["to"],
        headers={"List-Unsubscribe": f"<{context['channel_url']}>", "Auto-Submitted": "auto-generated"},
    )
    email.attach_alternative(html, "text/html")
    payload = "\n".join((subject, text, html)).encode()
    try:
        email.send(fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text_reply = next(iter(exc.recipients.values()))
        return payload, _smtp_outcome(
            code, text_reply.decode(errors="replace") if isinstance(text_reply, bytes) else str(text_reply)
        )
    except smtplib.SMTPResponseException as exc:
        reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return payload, _smtp_outcome(exc.smtp_code, reply)
    except (smtplib.SMTPException, OSError) as exc:  # refused, disconnected, timed out
        return payload, Outcome(False, transient=True, error=f"{type(exc).__name__}: {exc}")
    # sendmail raises unless DATA was answered 250.
    return payload, Outcome(True, smtp_reply="250 accepted")


def claim(delivery_id: int, now: datetime) -> bool:
    """Take a pending attempt that is due; exactly one sender gets it."""
    return (
        Delivery.objects.filter(pk=delivery_id, result=Delivery.Result.PENDING, next_attempt_at__lte=now).update(
            next_attempt_at=now + CLAIM_LEASE
        )
        == 1
    )


def send_delivery(delivery_id: int, now: datetime | None = None) -> Delivery | None:
    """Send one pending attempt if it is due and this caller claims it; record the result and
    queue the next attempt or disable the channel as the outcome says."""
    now = now or timezone.now()
    if not claim(delivery_id, now):
        return None
    delivery = Delivery.objects.select_related("channel", "notification__rule").get(pk=delivery_id)
    channel = delivery.channel
    if not channel.is_active:
        _finish(delivery, Outcome(False, error=f"channel disabled: {channel.disabled_reason}"), b"", now)
        return delivery
    message = message_for(delivery)
    try:
        if channel.kind == Channel.Kind.EMAIL:
            payload, outcome = _send_email(channel, message)
        else:
            payload, outcome = _send_webhook(channel, message, delivery)
    except (KeyError, TypeError, ValueError) as exc:  # a config that escaped validation
        payload, outcome = b"", Outcome(False, error=f"bad channel config: {exc}")
    _finish(delivery, outcome, payload, now)
    return delivery


def _finish(delivery: Delivery, outcome: Outcome, payload: bytes, now: datetime) -> None:
    channel = delivery.channel
    with transaction.atomic():
        disable_reason = ""
        if outcome.ok:
            Channel.objects.filter(pk=channel.pk).update(consecutive_failures=0)
        elif channel.is_active:
            Channel.objects.filter(pk=channel.pk).update(consecutive_failures=F("consecutive_failures") + 1)
            channel.refresh_from_db(fields=["consecutive_failures"])
            log.warning(
                "delivery %s to %s failed (attempt %s): %s", delivery.pk, channel, delivery.attempt, outcome.error
            )
            if not outcome.transient:
                disable_reason = f"permanent error: {outcome.error}"
            elif channel.consecutive_failures >= settings.ALERTS_DISABLE_AFTER_FAILURES:
                disable_reason = f"{channel.consecutive_failures} failed attempts in a row; last: {outcome.error}"
        retry = (
            not outcome.ok
            and outcome.transient
            and channel.is_active
            and not disable_reason
            and delivery.attempt < settings.ALERTS_MAX_ATTEMPTS
        )
        result = Delivery.Result.SENT if outcome.ok else Delivery.Result.RETRYING if retry else Delivery.Result.FAILED
        Delivery.objects.filter(pk=delivery.pk).update(
            result=result,
            attempted_at=now,
            http_status=outcome.http_status,
            smtp_reply=outcome.smtp_reply,
            error=outcome.error[:2000],
            payload_sha256=hashlib.sha256(payload).hexdigest() if payload else "",
            next_attempt_at=None,
        )
        delivery.result = result
        if retry:
            Delivery.objects.create(
                notification=delivery.notification,
                channel=channel,
                attempt=delivery.attempt + 1,
                created_at=now,
                target=channel.target,
                result=Delivery.Result.PENDING,
                is_test=delivery.is_test,
                next_attempt_at=now + retry_delay(delivery.attempt),
            )
        if disable_reason:
            disable_channel(channel, disable_reason, now)


def disable_channel(channel: Channel, reason: str, now: datetime) -> bool:
    """Disable a channel (once: a conditional UPDATE) and tell its owner."""
    changed = Channel.objects.filter(pk=channel.pk, status=Channel.Status.ACTIVE).update(
        status=Channel.Status.DISABLED, disabled_reason=reason[:2000], disabled_at=now
    )
    if changed != 1:
        return False
    channel.refresh_from_db()
    # Its pending attempts will not be sent.
    Delivery.objects.filter(channel=channel, result=Delivery.Result.PENDING).update(
        result=Delivery.Result.FAILED, next_attempt_at=None, error="channel disabled"
    )
    log.warning("channel %s disabled: %s", channel, reason)
    transaction.on_commit(lambda: tell_owner(channel.pk))
    return True


def tell_owner(channel_id: int) -> None:
    """Email the owner of a disabled channel; without an owner address the notice stays on
    the channel page only (owner_told_at stays empty)."""
    channel = Channel.objects.select_related("owner").get(pk=channel_id)
    owner = channel.owner
    if owner is None or not owner.email:
        return
    url = settings.ALERTS_SITE_URL + reverse("alert-channel", args=[channel.pk])
    context = {"channel": channel, "channel_url": url}
    email = EmailMultiAlternatives(
        f"Observatory disabled your alert channel {channel.name}",
        render_to_string("alerts/email/channel_disabled.txt", context),
        settings.DEFAULT_FROM_EMAIL,
        [owner.email],
        headers={"Auto-Submitted": "auto-generated"},
    )
    email.attach_alternative(render_to_string("alerts/email/channel_disabled.html", context), "text/html")
    try:
        email.send(fail_silently=False)
    except (smtplib.SMTPException, OSError):
        log.warning("could not tell the owner of channel %s that it is disabled", channel, exc_info=True)
        return
    Channel.objects.filter(pk=channel.pk).update(owner_told_at=timezone.now())


def deliver_due(now: datetime | None = None, limit: int = 200) -> int:
    """Send every pending attempt due at `now` (first attempts whose message was lost,
    retries whose backoff has passed). Returns how many were sent or failed here."""
    now = now or timezone.now()
    ids = due_delivery_ids(now, limit)
    return sum(1 for delivery_id in ids if send_delivery(delivery_id, now) is not None)


def due_delivery_ids(now: datetime | None = None, limit: int = 500) -> list[int]:
    """Pending attempts due at `now`, oldest first."""
    return list(
        Delivery.objects.filter(result=Delivery.Result.PENDING, next_attempt_at__lte=now or timezone.now())
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def queue_test(channel: Channel, now: datetime | None = None) -> Delivery:
    from apps.alerts.services import queue_deliveries

    with transaction.atomic():
        return queue_deliveries(None, [channel], now or timezone.now(), is_test=True)[0]


__all__ = ["SIGNATURE_HEADER", "Notification", "Outcome", "deliver_due", "disable_channel", "send_delivery", "sign"]
