"""Findings: what the detectors (drift, regressions) found, one row per episode.

A finding is the contract between the detectors that write it and everything that reads it
(alert rules on drift severity and regressions, the findings pages, the overview panel, the
weekly review). A detector run either opens a finding for a signature that has none open,
refreshes the open one (last_seen_at, evidence, severity), or resolves it when the shift is
gone; a user may acknowledge it or accept it as the new normal (the baseline then starts at
accepted_at). The partial unique index makes "one open finding per signature" a database
fact, so two detector runs at once cannot open the same episode twice.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class Finding(models.Model):
    class Kind(models.TextChoices):
        DRIFT = "drift", "Drift"
        REGRESSION = "regression", "Regression"

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"
        ACCEPTED = "accepted", "Accepted as new normal"

    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # What was measured: e.g. "output_tokens", "latency_p99", "finish_reason_mix",
    # "new_fingerprint", "new_response_model", "error_rate", "cost_per_successful_task".
    metric = models.CharField(max_length=64)
    # The slice, by dimension: {"provider": "openai", "model": "gpt-4o", "feature": "support-chat"};
    # a dimension absent is "all". Tenant is kept in its own column too, for scope filtering.
    slice = models.JSONField(default=dict)
    tenant = models.CharField(max_length=256, blank=True, default="", help_text="'' = not one tenant's")
    # kind + metric + slice, canonical: the identity of an episode's subject.
    signature = models.CharField(max_length=512)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    title = models.CharField(max_length=300)
    # Baseline vs current figures, statistic, p-value (BH-adjusted), sample sizes, windows.
    evidence = models.JSONField(default=dict)
    # When the change began (change point), and when a detector first/last saw it.
    started_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One open episode per subject: a detector's open-or-refresh is an upsert on this.
            models.UniqueConstraint(
                fields=["project", "signature"],
                condition=models.Q(status="open"),
                name="finding_one_open_episode",
            )
        ]
        # The findings list and the overview panel: newest first, per project.
        indexes = [models.Index(fields=["project", "-last_seen_at"], name="finding_recent")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.signature} ({self.status})"

    def as_filters(self) -> dict[str, Any]:
        """The dashboard filters that show this finding's slice."""
        return {dim: value for dim, value in {**self.slice, "tenant": self.tenant or None}.items() if value}
