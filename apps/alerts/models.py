"""Alerts: rules over the metrics query layer and the findings, where they notify, and what
was sent.

- AlertRule: what to watch (a percentile, error rate, budget, cache hit rate, findings) in
  which slice (tenant / feature / model / provider filters, optionally one alert per group),
  with a warning and a critical level and a minimum sample count.
- AlertState: one row per (rule, group): its current level and episode. Every transition
  (fired, escalated, repeated, resolved) is claimed by a conditional UPDATE on `version`
  that must touch exactly one row, so two evaluators at once never notify twice.
- Notification: one row per claimed transition; unique per (state, episode, event, level,
  sequence) as a second guard.
- Channel: a kind plus validated JSON config (email, Slack-compatible webhook, signed JSON
  webhook); a permanent transport error, or too many failures in a row, disables it visibly.
- Delivery: one row per attempt to send a notification (or a test message) to a channel.
- Silence: no deliveries until an end time, for one rule or for a tenant.
"""

from __future__ import annotations

import secrets
import urllib.parse
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.metrics.query import Filters
from apps.metrics.scope import Scope

# Dimensions a rule may filter and group on (apps.metrics.query.Filters fields).
RULE_DIMENSIONS = ("tenant", "feature", "provider", "model")
FILTER_FIELD = {"tenant": "tenants", "feature": "features", "provider": "providers", "model": "model_names"}
LEVEL_RANK = {"ok": 0, "warning": 1, "critical": 2}


def _default_interval() -> int:
    return int(settings.ALERTS_EVALUATE_EVERY_SECONDS)


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


class Channel(models.Model):
    class Kind(models.TextChoices):
        EMAIL = "email", "Email"
        SLACK = "slack", "Slack-compatible webhook"
        WEBHOOK = "webhook", "JSON webhook (HMAC-signed)"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        DISABLED = "disabled", "Disabled"

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # email: {"to": ["a@example.com", ...]}; slack and webhook: {"url": "https://..."}.
    config = models.JSONField(default=dict)
    # The HMAC-SHA256 key of a JSON webhook (X-Observatory-Signature); shown on the channel page.
    secret = models.CharField(max_length=100, default=_new_secret, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    disabled_reason = models.TextField(blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Failed attempts since the last success; ALERTS_DISABLE_AFTER_FAILURES in a row disables.
    consecutive_failures = models.PositiveIntegerField(default=0)
    # When the owner was emailed about the disabling; None with a disabled channel and no
    # owner email = the notice is only on the channel page.
    owner_told_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    @property
    def target(self) -> str:
        """Where deliveries go, as the delivery rows record it."""
        if self.kind == self.Kind.EMAIL:
            return ", ".join(self.config.get("to", []))
        return str(self.config.get("url", ""))

    def clean(self) -> None:
        self.config = validated_config(self.kind, self.config)


def validated_config(kind: str, config: Any) -> dict[str, Any]:
    """The channel config in canonical form, or ValidationError naming what is wrong.

    Webhook URLs must be http or https. Private and loopback addresses are allowed on purpose:
    a self-hosted Observatory usually notifies a chat server or relay on its own network.
    """
    if not isinstance(config, dict):
        raise ValidationError({"config": "must be a JSON object"})
    if kind == Channel.Kind.EMAIL:
        recipients = config.get("to")
        if isinstance(recipients, str):
            recipients = [part.strip() for part in recipients.split(",")]
        if not isinstance(recipients, list) or not [r for r in recipients if r]:
            raise ValidationError({"config": "an email channel needs at least one address in 'to'"})
        clean = []
        for address in recipients:
            if not address:
                continue
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError({"config": f"{address!r} is not an email address"}) from None
            clean.append(address)
        return {"to": clean}
    if kind in (Channel.Kind.SLACK, Channel.Kind.WEBHOOK):
        url = config.get("url")
        if not isinstance(url, str) or not url:
            raise ValidationError({"config": "a webhook channel needs a 'url'"})
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError({"config": "the URL must be http:// or https:// with a host name"})
        return {"url": url}
    raise ValidationError({"kind": f"unknown channel kind {kind!r}"})


class AlertRule(models.Model):
    class Kind(models.TextChoices):
        LATENCY = "latency", "Latency percentile above"
        ERROR_RATE = "error_rate", "Error rate above"
        BUDGET = "budget", "Cost budget (with burn-rate forecast)"
        CACHE_DROP = "cache_drop", "Prompt-cache hit rate drop vs a week earlier"
        DRIFT = "drift", "Open drift finding"
        REGRESSION = "regression", "Open regression finding"

    class Distribution(models.TextChoices):
        E2E = "e2e_ms", "End-to-end latency"
        TTFT = "ttft_ms", "Time to first token"
        QUEUE = "queue_ms", "Queue time (vLLM)"

    class Period(models.TextChoices):
        DAY = "day", "Day (UTC)"
        MONTH = "month", "Month (UTC)"

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    project = models.ForeignKey(
        "accounts.Project", null=True, blank=True, on_delete=models.CASCADE, help_text="Empty = every project."
    )
    # The slice: an empty list = no filter on that dimension.
    tenants = ArrayField(models.CharField(max_length=256), default=list, blank=True)
    features = ArrayField(models.CharField(max_length=256), default=list, blank=True)
    providers = ArrayField(models.CharField(max_length=256), default=list, blank=True)
    model_names = ArrayField(models.CharField(max_length=256), default=list, blank=True)
    # One alert per value of these dimensions (e.g. ["tenant"]: one per tenant); empty = one
    # alert for the whole slice.
    group_by = ArrayField(models.CharField(max_length=16), default=list, blank=True)

    # latency: which distribution and percentile (digits as the metrics layer names them:
    # "50", "95", "99", "999" = 99.9th).
    distribution = models.CharField(max_length=16, choices=Distribution.choices, default=Distribution.E2E)
    percentile = models.CharField(max_length=6, default="99")
    window_minutes = models.PositiveIntegerField(default=15)
    # Levels: latency in ms, error rate as a fraction (0.05), cache drop in percentage points;
    # a budget's critical level is the budget in USD (warning: the forecast passes it).
    warning_threshold = models.FloatField(null=True, blank=True)
    critical_threshold = models.FloatField(null=True, blank=True)
    budget_period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTH)
    # drift / regression: the lowest finding severity that alerts.
    min_severity = models.CharField(max_length=16, default="warning")
    # Fewer samples (calls, or percentile samples) than this: no verdict either way.
    min_samples = models.PositiveIntegerField(default=20)
    cooldown_minutes = models.PositiveIntegerField(default=60)
    channels = models.ManyToManyField(Channel, blank=True, related_name="rules")

    # The evaluation sweep claims due rules by a conditional UPDATE of this column.
    next_evaluation_at = models.DateTimeField(default=timezone.now)
    evaluate_every_seconds = models.PositiveIntegerField(default=_default_interval)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "pk"]
        # The sweep: enabled rules due now (alerts.evaluate_due).
        indexes = [models.Index(fields=["next_evaluation_at"], condition=Q(enabled=True), name="alertrule_due")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_finding_rule(self) -> bool:
        return self.kind in (self.Kind.DRIFT, self.Kind.REGRESSION)

    def filter_values(self) -> dict[str, tuple[str, ...]]:
        """The filtered dimensions and their values."""
        return {
            dim: tuple(getattr(self, FILTER_FIELD[dim])) for dim in RULE_DIMENSIONS if getattr(self, FILTER_FIELD[dim])
        }

    def filters(self) -> Filters:
        return Filters(
            projects=(self.project_id,) if self.project_id else (),
            tenants=tuple(self.tenants),
            features=tuple(self.features),
            providers=tuple(self.providers),
            models=tuple(self.model_names),
        )

    def metric(self) -> str:
        """The metrics-layer name of a latency rule's figure (e2e_ms_p99)."""
        return f"{self.distribution}_p{self.percentile}"

    def describe_scope(self) -> str:
        parts = [f"{dim} {' or '.join(values)}" for dim, values in self.filter_values().items()]
        if self.group_by:
            parts.append(f"per {', '.join(self.group_by)}")
        return "; ".join(parts) or "all traffic"

    def describe(self) -> str:
        if self.kind == self.Kind.LATENCY:
            what = f"p{self.percentile} {self.get_distribution_display().lower()} over {self.window_minutes} min"
        elif self.kind == self.Kind.ERROR_RATE:
            what = f"error rate over {self.window_minutes} min"
        elif self.kind == self.Kind.BUDGET:
            what = f"cost per {self.budget_period} against ${self.critical_threshold:g}"
        elif self.kind == self.Kind.CACHE_DROP:
            what = f"prompt-cache hit rate over {self.window_minutes} min vs a week earlier"
        else:
            what = f"open {self.kind} findings at {self.min_severity} or above"
        return f"{what} ({self.describe_scope()})"

    def levels_display(self) -> str:
        """The warning / critical levels in their unit."""
        if self.kind == self.Kind.BUDGET:
            return f"${self.critical_threshold:,.2f} per {self.budget_period}"
        if self.is_finding_rule:
            return f"{self.min_severity} or above"
        unit = {self.Kind.LATENCY: "{:g} ms", self.Kind.ERROR_RATE: "{:.1%}", self.Kind.CACHE_DROP: "{:g} points"}
        shown = unit[self.kind]  # type: ignore[index]
        warning = "-" if self.warning_threshold is None else shown.format(self.warning_threshold)
        return f"{warning} / {shown.format(self.critical_threshold or 0)}"

    def visible_to(self, scope: Scope) -> bool:
        """A tenant-limited person sees a rule limited to their tenants, or one whose alerts
        are per tenant (finding rules are: each finding has its tenant); never a rule whose
        figure mixes tenants they may not see."""
        if not scope.limited:
            return True
        allowed = set(scope.visible_tenants() or ())
        if self.tenants:
            return set(self.tenants) <= allowed
        return "tenant" in self.group_by or self.is_finding_rule

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for dim in self.group_by:
            if dim not in RULE_DIMENSIONS:
                errors["group_by"] = f"unknown dimension {dim!r}; known: {', '.join(RULE_DIMENSIONS)}"
        if self.kind == self.Kind.LATENCY:
            from apps.metrics.catalog import metric_spec

            try:
                metric_spec(self.metric())
            except ValueError:
                errors["percentile"] = "a percentile as digits: 50, 95, 99, 999 (= 99.9)"
        if self.kind in (self.Kind.LATENCY, self.Kind.ERROR_RATE, self.Kind.CACHE_DROP, self.Kind.BUDGET):
            if self.critical_threshold is None:
                errors["critical_threshold"] = "a critical level is required"
            elif (
                self.warning_threshold is not None
                and self.kind != self.Kind.BUDGET
                and self.warning_threshold > self.critical_threshold
            ):
                errors["warning_threshold"] = "the warning level must not be above the critical level"
        if self.kind == self.Kind.ERROR_RATE:
            for name in ("warning_threshold", "critical_threshold"):
                value = getattr(self, name)
                if value is not None and not 0 <= value <= 1:
                    errors[name] = "an error rate is a fraction between 0 and 1 (0.05 = 5%)"
        if self.window_minutes < 1 or self.window_minutes > 7 * 24 * 60:
            errors["window_minutes"] = "between 1 minute and 7 days"
        if self.evaluate_every_seconds < 10:
            errors["evaluate_every_seconds"] = "at least 10 seconds"
        if self.min_severity not in ("info", "warning", "critical"):
            errors["min_severity"] = "info, warning or critical"
        if errors:
            raise ValidationError(errors)


class AlertState(models.Model):
    class Level(models.TextChoices):
        OK = "ok", "OK"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="states")
    # The group's dimension values, canonical JSON ("{}" for a rule without group-by; the
    # finding's signature for finding rules).
    group_key = models.CharField(max_length=1024)
    group = models.JSONField(default=dict)
    # The one tenant this alert is about ('' = not one tenant's: only people who see every
    # tenant see it).
    tenant = models.CharField(max_length=256, blank=True, default="")
    level = models.CharField(max_length=16, choices=Level.choices, default=Level.OK)
    # Increments each time the alert fires from OK: notifications of one episode share it.
    episode = models.PositiveIntegerField(default=0)
    # Bumped by every claimed transition: the conditional UPDATE's guard.
    version = models.PositiveIntegerField(default=0)
    value = models.FloatField(null=True, blank=True)
    summary = models.TextField(blank=True, default="")
    opened_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    repeats = models.PositiveIntegerField(default=0)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule", "group_key"], name="alertstate_one_per_group")]
        # The overview panel and the alerts page: open alerts.
        indexes = [models.Index(fields=["level"], condition=~Q(level="ok"), name="alertstate_open")]

    def __str__(self) -> str:
        return f"{self.rule}: {self.group_label} ({self.level})"

    @property
    def group_label(self) -> str:
        if self.rule.is_finding_rule:
            return str(self.group.get("title") or self.group_key)
        return ", ".join(f"{dim} {value}" for dim, value in self.group.items()) or "whole slice"


class Silence(models.Model):
    """No deliveries for a rule (or for every alert about a tenant) until ends_at. Transitions
    are still recorded, marked silenced, so the history shows what was held back."""

    rule = models.ForeignKey(AlertRule, null=True, blank=True, on_delete=models.CASCADE, related_name="silences")
    tenant = models.CharField(max_length=256, blank=True, default="", help_text="'' with no rule: every alert")
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=300, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"silence until {self.ends_at:%Y-%m-%d %H:%M} ({self.rule or self.tenant or 'everything'})"

    def covers(self, state: AlertState) -> bool:
        """A silence covers its rule (or every rule) and its tenant (or every tenant)."""
        return self.rule_id in (None, state.rule_id) and self.tenant in ("", state.tenant)

    @classmethod
    def active(cls, now: datetime) -> list[Silence]:
        """The silences in force at `now`, the longest first: few at any time."""
        return list(cls.objects.filter(ends_at__gt=now).order_by("-ends_at", "pk"))


class Notification(models.Model):
    class Event(models.TextChoices):
        FIRED = "fired", "Fired"
        ESCALATED = "escalated", "Escalated"
        REPEATED = "repeated", "Repeated"
        RESOLVED = "resolved", "Resolved"

    state = models.ForeignKey(AlertState, on_delete=models.CASCADE, related_name="notifications")
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="notifications")
    episode = models.PositiveIntegerField()
    event = models.CharField(max_length=16, choices=Event.choices)
    level = models.CharField(max_length=16, choices=AlertState.Level.choices)
    # 0 for the first of its (episode, event, level); repeats count up.
    sequence = models.PositiveIntegerField(default=0)
    tenant = models.CharField(max_length=256, blank=True, default="")
    title = models.CharField(max_length=400)
    text = models.TextField()
    # What was measured: value, thresholds, samples, cost_unknown_requests, group, window.
    details = models.JSONField(default=dict)
    silenced = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # A second guard behind the state's conditional UPDATE: one notification per transition.
            models.UniqueConstraint(
                fields=["state", "episode", "event", "level", "sequence"], name="notification_once_per_transition"
            )
        ]

    def __str__(self) -> str:
        return self.title


class Delivery(models.Model):
    class Result(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        RETRYING = "retrying", "Failed, will retry"
        FAILED = "failed", "Failed"

    notification = models.ForeignKey(
        Notification, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveIntegerField(default=1)
    # Queued at; attempted_at is when it was sent (or tried), None while pending.
    created_at = models.DateTimeField(default=timezone.now)
    attempted_at = models.DateTimeField(null=True, blank=True)
    target = models.CharField(max_length=1000)
    payload_sha256 = models.CharField(max_length=64)
    result = models.CharField(max_length=16, choices=Result.choices)
    http_status = models.PositiveIntegerField(null=True, blank=True)
    smtp_reply = models.CharField(max_length=500, blank=True, default="")
    error = models.TextField(blank=True, default="")
    # A pending attempt is due at this time. A sender claims it by moving it one lease ahead
    # (conditional UPDATE), so a killed sender's attempt is taken up again after the lease.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    is_test = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        # The delivery sweep: pending attempts due now.
        indexes = [models.Index(fields=["next_attempt_at"], condition=Q(result="pending"), name="delivery_due")]

    def __str__(self) -> str:
        return f"{self.channel} attempt {self.attempt}: {self.result}"


def retry_delay(attempt: int) -> timedelta:
    """Exponential backoff after failed attempt `attempt` (1-based), capped."""
    base = settings.ALERTS_RETRY_BASE_SECONDS
    return timedelta(seconds=min(base * 2 ** (attempt - 1), settings.ALERTS_RETRY_MAX_SECONDS))
