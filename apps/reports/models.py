"""Who gets the weekly cost review and when (ReviewSubscription), and each review claimed,
built and sent (WeeklyReview, with its chart images): the archive and the delivery log."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import connection, models
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone

from apps.reports.weeks import WEEKDAYS, ReviewWeek, next_send_time, zone

# How long a worker owns a review it is sending; past it another worker may take it over
# (the first was killed mid-send). Longer than an SMTP conversation can last.
SEND_LEASE = timedelta(minutes=10)
# A claimed review not built after this long was being built by a worker that died: the next
# sweep builds it again. A built review not sent after this long lost its send message.
STRANDED_AFTER = timedelta(minutes=30)


def validate_timezone(value: str) -> None:
    try:
        zone(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class ReviewSubscription(models.Model):
    """One user's choice. On by default for staff (created for them by the sweep), opt-in for
    others. What they see is always their scope (apps.accounts.access.scope_for)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="review_subscription")
    enabled = models.BooleanField(default=False)
    weekday = models.PositiveSmallIntegerField(choices=list(enumerate(WEEKDAYS)), default=0)
    hour = models.PositiveSmallIntegerField(default=8, validators=[MaxValueValidator(23)])
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    # The next moment a review is due; the sweep sends every enabled row past it.
    next_send_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # The sweep: enabled subscriptions due by now (reports.delivery.due_subscriptions).
            models.Index(fields=["next_send_at"], name="reports_sub_due", condition=Q(enabled=True)),
        ]

    def __str__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"{self.user}: {state}, {WEEKDAYS[self.weekday]} {self.hour:02d}:00 {self.timezone}"

    @classmethod
    def for_user(cls, user: Any) -> ReviewSubscription:
        subscription, _ = cls.objects.get_or_create(
            user=user, defaults={"enabled": bool(user.is_staff), "next_send_at": None}
        )
        if subscription.next_send_at is None:
            subscription.reschedule()
            subscription.save(update_fields=["next_send_at"])
        return subscription

    @classmethod
    def subscribe_staff(cls) -> int:
        """Create the default (enabled) subscription of every active staff user who has none."""
        missing = get_user_model().objects.filter(is_active=True, is_staff=True, review_subscription__isnull=True)
        now = timezone.now()
        rows = [
            ReviewSubscription(user=user, enabled=True, next_send_at=next_send_time(now, 0, 8, "UTC"))
            for user in missing
        ]
        ReviewSubscription.objects.bulk_create(rows, ignore_conflicts=True)
        return len(rows)

    def reschedule(self, after: datetime | None = None) -> None:
        self.next_send_at = next_send_time(after or timezone.now(), self.weekday, self.hour, self.timezone)

    def week_due(self, at: datetime) -> ReviewWeek:
        """The week a review sent at `at` covers: the last one complete in the reader's zone."""
        return ReviewWeek.last_complete(at, self.timezone)


class WeeklyReview(models.Model):
    """One (user, week): claimed once, built, sent, kept as sent (the archive).

    The unique (user, week) row is the claim: the sweep inserts it with ON CONFLICT DO
    NOTHING and only the inserter builds and queues the send, so a second beat or a second
    worker sends nothing twice. Sending takes a lease with a conditional UPDATE.
    """

    class Status(models.TextChoices):
        CLAIMED = "claimed", "claimed, being built"
        READY = "ready", "built, queued to send"
        SENDING = "sending", "sending"
        RETRYING = "retrying", "send failed, will retry"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="weekly_reviews")
    week = models.CharField(max_length=8)  # ISO week of the local Monday, "2026-W48"
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    timezone = models.CharField(max_length=64, db_default="UTC")
    status = models.CharField(max_length=16, choices=Status.choices, db_default=Status.CLAIMED)
    recipient = models.EmailField(db_default="")
    subject = models.CharField(max_length=300, db_default="")
    text_body = models.TextField(db_default="")
    html_body = models.TextField(db_default="")
    message_id = models.CharField(max_length=300, db_default="")
    attempts = models.PositiveIntegerField(db_default=0)
    last_error = models.TextField(db_default="", blank=True)
    claimed_at = models.DateTimeField(db_default=Now())
    lease_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "week"], name="reports_one_review_per_user_week")]
        indexes = [
            # The archive page: a user's reviews, newest first.
            models.Index(fields=["user", "-starts_at"], name="reports_review_archive"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.week} ({self.status})"

    @property
    def review_week(self) -> ReviewWeek:
        return ReviewWeek.parse(self.week, self.timezone)

    @classmethod
    def claim(cls, user_id: int, week: ReviewWeek) -> int | None:
        """Insert the (user, week) row; its id when this call inserted it, None when it existed.

        Concurrent claims of one pair serialise on the unique index: exactly one inserts.
        """
        with connection.cursor() as cur:
            cur.execute(
                f"INSERT INTO {cls._meta.db_table} (user_id, week, starts_at, ends_at, timezone) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id, week) DO NOTHING RETURNING id",
                [user_id, week.label, week.start, week.end, week.timezone],
            )
            row = cur.fetchone()
        return int(row[0]) if row else None

    @classmethod
    def reclaim_stranded_builds(cls, now: datetime) -> list[WeeklyReview]:
        """Claimed reviews left unbuilt by a dead worker, each re-claimed by exactly one sweep."""
        won: list[WeeklyReview] = []
        stale = cls.objects.filter(status=cls.Status.CLAIMED, claimed_at__lt=now - STRANDED_AFTER)
        for review in stale.select_related("user"):
            # Conditional on the claim time read: two sweeps cannot both take it over.
            taken = cls.objects.filter(pk=review.pk, status=cls.Status.CLAIMED, claimed_at=review.claimed_at)
            if taken.update(claimed_at=now) == 1:
                won.append(review)
        return won

    @classmethod
    def stranded_sends(cls, now: datetime) -> list[int]:
        """Built reviews whose send never ran or whose sender died: queue them again (a
        duplicate send task finds the review taken or sent and does nothing)."""
        ready = Q(status=cls.Status.READY, claimed_at__lt=now - STRANDED_AFTER)
        dead_sender = Q(status=cls.Status.SENDING, lease_until__lt=now)
        return list(cls.objects.filter(ready | dead_sender).values_list("pk", flat=True))

    @classmethod
    def take_for_sending(cls, review_id: int) -> bool:
        """Lease a built review for sending: True for exactly one caller.

        A review that is ready or waiting for a retry, or whose previous sender's lease ran
        out (killed mid-send), can be taken; one being sent or already sent cannot.
        """
        now = timezone.now()
        takeable = Q(status__in=[cls.Status.READY, cls.Status.RETRYING]) | Q(
            status=cls.Status.SENDING, lease_until__lt=now
        )
        taken = cls.objects.filter(takeable, pk=review_id).update(
            status=cls.Status.SENDING, lease_until=now + SEND_LEASE, attempts=F("attempts") + 1
        )
        return taken == 1

    def mark(self, status: str, error: str = "") -> None:
        self.status = status
        self.last_error = error[:2000]
        self.lease_until = None
        fields = ["status", "last_error", "lease_until"]
        if status == self.Status.SENT:
            self.sent_at = timezone.now()
            fields.append("sent_at")
        self.save(update_fields=fields)


class ReviewImage(models.Model):
    """A chart image of a review, attached inline and referenced by Content-ID."""

    review = models.ForeignKey(WeeklyReview, on_delete=models.CASCADE, related_name="images")
    content_id = models.CharField(max_length=200)
    alt = models.TextField()
    png = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["review", "content_id"], name="reports_image_cid_unique")]

    def __str__(self) -> str:
        return self.content_id
