"""The GPU tier's data: metric series and points (written by apps.gpu.store with COPY; these
unmanaged models let the ORM and the admin read them) and the Prometheus endpoints to scrape.
"""

from __future__ import annotations

import urllib.parse
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class MetricSeries(models.Model):
    """One series: metric name + resource + point attributes (series_id is their hash)."""

    pk = models.CompositePrimaryKey("project_id", "series_id")
    project = models.ForeignKey("accounts.Project", on_delete=models.DO_NOTHING, db_constraint=False)
    series_id = models.BigIntegerField()
    name = models.TextField()
    kind = models.TextField()
    unit = models.TextField()
    temporality = models.SmallIntegerField()
    monotonic = models.BooleanField()
    description = models.TextField()
    resource = models.JSONField(default=dict)
    attributes = models.JSONField(default=dict)
    first_seen = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "gpu_metric_series"

    def __str__(self) -> str:
        return f"{self.name} {self.attributes}"


class MetricPoint(models.Model):
    pk = models.CompositePrimaryKey("project_id", "series_id", "time")
    project = models.ForeignKey("accounts.Project", on_delete=models.DO_NOTHING, db_constraint=False)
    series_id = models.BigIntegerField()
    time = models.DateTimeField()
    start_time = models.DateTimeField(null=True)
    value = models.FloatField(null=True)
    increase = models.FloatField(null=True)
    count = models.BigIntegerField(null=True)
    sum = models.FloatField(null=True)
    min = models.FloatField(null=True)
    max = models.FloatField(null=True)
    bounds = ArrayField(models.FloatField(), null=True)
    bucket_counts = ArrayField(models.BigIntegerField(), null=True)
    scale = models.SmallIntegerField(null=True)
    zero_count = models.BigIntegerField(null=True)
    positive_offset = models.IntegerField(null=True)
    positive_counts = ArrayField(models.BigIntegerField(), null=True)
    negative_offset = models.IntegerField(null=True)
    negative_counts = ArrayField(models.BigIntegerField(), null=True)
    interval_count = models.BigIntegerField(null=True)
    interval_sum = models.FloatField(null=True)
    interval_buckets = ArrayField(models.BigIntegerField(), null=True)
    interval_zero_count = models.BigIntegerField(null=True)
    interval_negative = ArrayField(models.BigIntegerField(), null=True)
    received_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "gpu_metric_point"


def validate_scrape_url(value: str) -> None:
    """http(s)://host[:port]/path. Django's URLValidator wants a dotted domain, but scrape
    targets are usually compose or cluster hostnames (`vllm-0:8000`, `dcgm-exporter:9400`)."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Enter an http:// or https:// URL with a host, e.g. http://vllm-0:8000/metrics")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValidationError("The port is not a number between 0 and 65535") from None


class ScrapeTarget(models.Model):
    """A Prometheus endpoint (vLLM /metrics or a DCGM exporter) scraped on a schedule.

    The beat sweep only triggers; next_scrape_at decides what is due, and a worker claims a
    target by moving it forward with a conditional UPDATE (apps.gpu.scrape.claim_due_targets).
    A target that keeps failing shows its error and waits longer each time (back-off).
    """

    VLLM, DCGM = "vllm", "dcgm"
    KINDS = [(VLLM, "vLLM /metrics"), (DCGM, "DCGM exporter")]

    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, related_name="scrape_targets")
    url = models.CharField(
        max_length=500,
        validators=[validate_scrape_url],
        help_text="The /metrics URL, e.g. http://vllm-0:8000/metrics",
    )
    kind = models.CharField(max_length=8, choices=KINDS)
    instance = models.CharField(
        max_length=200,
        blank=True,
        help_text="The serving instance these samples describe (resource service.instance.id); "
        "the URL's host:port when blank.",
    )
    interval_seconds = models.PositiveIntegerField(default=15)
    enabled = models.BooleanField(default=True)
    next_scrape_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_scraped_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_sample_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["project_id", "url"]

    def __str__(self) -> str:
        return f"{self.kind} {self.url}"

    @property
    def is_failing(self) -> bool:
        return self.consecutive_failures > 0

    def backoff(self, failures: int) -> timedelta:
        """The wait after `failures` failures in a row: the interval doubled per failure, capped."""
        seconds = self.interval_seconds * 2 ** min(failures, 16)
        return timedelta(seconds=min(seconds, settings.SCRAPE_MAX_BACKOFF_SECONDS))

    def record_success(self, at: datetime, samples: int) -> None:
        self.last_scraped_at = self.last_success_at = at
        self.last_error = ""
        self.consecutive_failures = 0
        self.last_sample_count = samples
        self.next_scrape_at = at + timedelta(seconds=self.interval_seconds)
        self.save(
            update_fields=[
                "last_scraped_at", "last_success_at", "last_error",
                "consecutive_failures", "last_sample_count", "next_scrape_at",
            ]
        )  # fmt: skip

    def record_failure(self, at: datetime, error: str) -> None:
        self.consecutive_failures += 1
        self.last_scraped_at = at
        self.last_error = error[:2000]
        self.next_scrape_at = at + self.backoff(self.consecutive_failures)
        self.save(update_fields=["last_scraped_at", "last_error", "consecutive_failures", "next_scrape_at"])
