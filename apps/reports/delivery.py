"""Claiming, building and sending reviews.

The sweep (reports.send_due_reviews, from beat) finds the subscriptions that are due, claims
each (user, week) with an insert that only one caller wins, builds the claimed reviews with
figures shared by scope (FiguresCache) and charts rendered once per scope, stores each as it
will be sent (the archive), and queues one send per review. A send leases its review with a
conditional UPDATE, so two workers handed the same review send it once.
"""

from __future__ import annotations

import logging
import smtplib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from apps.accounts.access import scope_for
from apps.metrics.query import Scope
from apps.reports.charts import Chart, charts_for, render_png
from apps.reports.compose import ComposedReview, Image, RenderedCharts, build_message, compose, new_message_id
from apps.reports.figures import FiguresCache
from apps.reports.models import ReviewImage, ReviewSubscription, WeeklyReview
from apps.reports.weeks import ReviewWeek

log = logging.getLogger(__name__)


class BuildCache:
    """Figures and rendered charts per (scope, week), for one sweep or command run.

    `prepare` reads every scope's figures and renders all their charts in one Chromium
    session (starting Chromium costs seconds; a chart about 0.2 s).
    """

    def __init__(self) -> None:
        self.figures = FiguresCache()
        self._charts: dict[tuple[Scope, ReviewWeek], RenderedCharts] = {}

    def prepare(self, keys: Iterable[tuple[Scope, ReviewWeek]]) -> None:
        charts: dict[tuple[Scope, ReviewWeek], list[Chart]] = {}
        for scope, week in keys:
            if (scope, week) in self._charts or (scope, week) in charts:
                continue
            try:
                charts[(scope, week)] = charts_for(self.figures.get(scope, week))
            except Exception:
                # Left for review() to raise again, per reader, so each claim records the failure.
                log.exception("reading the figures of %s for %s failed", week.label, scope)
        pngs = render_png([chart for group in charts.values() for chart in group])
        taken = 0
        for key, group in charts.items():
            self._charts[key] = RenderedCharts(group, pngs[taken : taken + len(group)])
            taken += len(group)

    def review(self, user: Any, week: ReviewWeek) -> ComposedReview:
        scope = scope_for(user)
        self.prepare([(scope, week)])
        return compose(user, self.figures.get(scope, week), self._charts[(scope, week)])


def due_subscriptions(now: datetime) -> list[ReviewSubscription]:
    return list(
        ReviewSubscription.objects.filter(enabled=True, next_send_at__lte=now, user__is_active=True)
        .exclude(user__email="")
        .select_related("user", "user__tenant_access")
        .order_by("next_send_at", "pk")
    )


@dataclass
class SweepResult:
    ready: list[int]  # built by this sweep, or built earlier and stranded: to be sent
    skipped: int  # due, but the (user, week) was already claimed (another beat or worker)
    failed: int
    scopes: int


def claim_due(now: datetime) -> tuple[list[tuple[int, Any, ReviewWeek]], int]:
    """Claim the (user, week) of every due subscription and move each to its next send time.

    Returns (review id, user, week) for the claims this call won, and how many due
    subscriptions it found.
    """
    won = []
    due = due_subscriptions(now)
    for subscription in due:
        week = subscription.week_due(now)
        with transaction.atomic():
            review_id = WeeklyReview.claim(subscription.user_id, week)
            # Both claimants move next_send_at on: the same value, from the same settings.
            subscription.reschedule(after=now)
            ReviewSubscription.objects.filter(pk=subscription.pk).update(next_send_at=subscription.next_send_at)
        if review_id is not None:
            won.append((review_id, subscription.user, week))
    return won, len(due)


def build_claimed(claims: list[tuple[int, Any, ReviewWeek]], cache: BuildCache | None = None) -> tuple[list[int], int]:
    """Build and store each claimed review; returns (ready ids, failures).

    Grouped by scope, so each scope's figures and charts are computed once.
    """
    cache = cache or BuildCache()
    by_scope: dict[tuple[Scope, ReviewWeek], list[tuple[int, Any]]] = defaultdict(list)
    for review_id, user, week in claims:
        by_scope[(scope_for(user), week)].append((review_id, user))
    ready, failed = [], 0
    cache.prepare(by_scope)
    for (_, week), members in by_scope.items():
        for review_id, user in members:
            try:
                composed = cache.review(user, week)
            except Exception as exc:
                # A bug or a database error: visible on the row (admin, archive), not retried
                # blindly; `manage.py send_weekly_review --user U --week W` builds it again.
                log.exception("building the weekly review %s of %s for %s failed", review_id, week.label, user)
                WeeklyReview.objects.filter(pk=review_id).update(
                    status=WeeklyReview.Status.FAILED, last_error=f"build failed: {exc!r}"[:2000]
                )
                failed += 1
                continue
            store(review_id, user, composed)
            ready.append(review_id)
    return ready, failed


def store(review_id: int, user: Any, composed: ComposedReview) -> None:
    """Keep the review exactly as it will be sent (the archive shows it), ready to send."""
    with transaction.atomic():
        WeeklyReview.objects.filter(pk=review_id).update(
            status=WeeklyReview.Status.READY,
            recipient=user.email,
            subject=composed.subject,
            text_body=composed.text,
            html_body=composed.html,
            message_id=new_message_id(),
            last_error="",
        )
        ReviewImage.objects.filter(review_id=review_id).delete()
        ReviewImage.objects.bulk_create(
            ReviewImage(review_id=review_id, content_id=image.content_id, alt=image.alt, png=image.png)
            for image in composed.images
        )


def sweep(now: datetime | None = None) -> SweepResult:
    now = now or timezone.now()
    ReviewSubscription.subscribe_staff()
    stranded_sends = WeeklyReview.stranded_sends(now)
    claims, due = claim_due(now)
    skipped = due - len(claims)
    claims += [(review.pk, review.user, review.review_week) for review in WeeklyReview.reclaim_stranded_builds(now)]
    cache = BuildCache()
    ready, failed = build_claimed(claims, cache)
    return SweepResult(ready=ready + stranded_sends, skipped=skipped, failed=failed, scopes=len(cache.figures))


# SMTP replies that will not change on a retry: the recipient or sender is refused, or the
# server rejects the message itself (5xx). Everything else (4xx, timeouts, refused
# connections) is transient.
def is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code >= 500
    return False


class SendOutcome:
    SENT = "sent"
    SKIPPED = "skipped"  # not ours to send: already sent, being sent, or not built
    RETRY = "retry"
    FAILED = "failed"


def send_review(review_id: int, final_attempt: bool = False) -> tuple[str, str]:
    """Send one built review once; returns (outcome, error)."""
    if not WeeklyReview.take_for_sending(review_id):
        return SendOutcome.SKIPPED, ""
    review = WeeklyReview.objects.get(pk=review_id)
    images = [Image(image.content_id, image.alt, bytes(image.png)) for image in review.images.all()]
    message = build_message(
        to=review.recipient,
        subject=review.subject,
        text=review.text_body,
        html=review.html_body,
        images=images,
        user_id=review.user_id,
        message_id=review.message_id,
    )
    try:
        message.send(fail_silently=False)
    except (smtplib.SMTPException, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        if is_permanent(exc) or final_attempt:
            review.mark(WeeklyReview.Status.FAILED, error)
            log.error("weekly review %s to %s failed for good: %s", review_id, review.recipient, error)
            return SendOutcome.FAILED, error
        review.mark(WeeklyReview.Status.RETRYING, error)
        log.warning("weekly review %s to %s failed, will retry: %s", review_id, review.recipient, error)
        return SendOutcome.RETRY, error
    review.mark(WeeklyReview.Status.SENT)
    log.info("weekly review %s (%s) sent to %s", review_id, review.week, review.recipient)
    return SendOutcome.SENT, ""


def build_one(user: Any, week: ReviewWeek, *, resend: bool = False, cache: BuildCache | None = None) -> int | None:
    """Claim and build one user's review of a week (the management command); None when it was
    already claimed and `resend` is false. With `resend`, an existing review is rebuilt and
    sent again."""
    review_id = WeeklyReview.claim(user.pk, week)
    if review_id is None:
        if not resend:
            return None
        review_id = WeeklyReview.objects.get(user=user, week=week.label).pk
    ready, _ = build_claimed([(review_id, user, week)], cache)
    return ready[0] if ready else None


def users_subscribed() -> list[Any]:
    ReviewSubscription.subscribe_staff()
    return list(
        get_user_model()
        .objects.filter(review_subscription__enabled=True, is_active=True)
        .exclude(email="")
        .order_by("pk")
    )
