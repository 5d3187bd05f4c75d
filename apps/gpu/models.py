"""The GPU tier's data: metric series and points (written by apps.gpu.store with COPY; these
unmanaged models let the ORM and the admin read them) and the Prometheus endpoints to scrape.
"""

from __future__ import annotations

import re
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


# --------------------------------------------------------------------------- self-hosted cost


class GpuPrice(models.Model):
    """USD per GPU-hour for a GPU model from one provider (a cloud, or `on-prem` for your own
    amortised figure), over an effective period. Shipped defaults: apps/gpu/catalog/gpu_prices.csv."""

    provider = models.CharField(max_length=64, help_text="who rents the GPU: aws, gcp, lambda, runpod, on-prem, ...")
    gpu_model_pattern = models.CharField(
        max_length=200,
        help_text="Regular expression matched against the whole GPU model name as NVML / DCGM report it "
        "(e.g. `NVIDIA H100 80GB HBM3`), ignoring case.",
    )
    effective_from = models.DateTimeField()
    effective_to = models.DateTimeField(null=True, blank=True, help_text="exclusive; empty = still in force")
    usd_per_gpu_hour = models.DecimalField(max_digits=12, decimal_places=6)
    source_url = models.URLField(max_length=500, blank=True)
    retrieved_on = models.DateField(null=True, blank=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["provider", "gpu_model_pattern", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "gpu_model_pattern", "effective_from"], name="gpu_gpuprice_natural_key"
            ),
            models.CheckConstraint(
                condition=models.Q(effective_to__isnull=True) | models.Q(effective_to__gt=models.F("effective_from")),
                name="gpu_gpuprice_period_not_empty",
            ),
            models.CheckConstraint(condition=models.Q(usd_per_gpu_hour__gte=0), name="gpu_gpuprice_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.gpu_model_pattern} from {self.effective_from:%Y-%m-%d}"

    def clean(self) -> None:
        super().clean()
        self.provider = self.provider.strip().lower()
        try:
            re.compile(self.gpu_model_pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValidationError({"gpu_model_pattern": f"Not a valid regular expression: {exc}"}) from None


class ServingInstance(models.Model):
    """How a serving instance's spans meet its GPUs, and whose price list its GPUs are on.

    Spans and GPU series each name an instance: resource `service.instance.id`, else
    `host.name`. They match when the names are equal; a row here joins them when they differ
    (vLLM spans say `vllm-0`, the sampler on its node says `gpu-node-7`), and says which
    provider's GPU price applies (settings.GPU_PRICE_PROVIDER when there is no row).
    """

    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, related_name="serving_instances")
    name = models.CharField(
        max_length=200, help_text="the instance the vLLM spans name (service.instance.id / host.name)"
    )
    gpu_instance = models.CharField(
        max_length=200,
        blank=True,
        help_text="the instance the GPU series name (service.instance.id / host.name) when it differs; blank = same",
    )
    price_provider = models.CharField(
        max_length=64, blank=True, help_text="the GpuPrice provider for its GPUs; blank = settings.GPU_PRICE_PROVIDER"
    )

    class Meta:
        ordering = ["project_id", "name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="gpu_servinginstance_unique_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def gpu_key(self) -> str:
        return self.gpu_instance or self.name


class CostInterval(models.Model):
    """One attribution interval of one GPU pool (the GPUs of one instance): what the GPUs cost
    and how much of it the requests used. attributed_usd + idle_usd == gpu_cost_usd exactly."""

    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, db_constraint=False)
    gpu_instance = models.CharField(max_length=200)
    start = models.DateTimeField()
    seconds = models.PositiveIntegerField()
    gpus = models.PositiveIntegerField(help_text="GPUs that reported in the interval (each paid for all of it)")
    gpu_models = models.JSONField(default=dict, help_text="GPU model -> count")
    unpriced_gpus = models.PositiveIntegerField(default=0)
    gpu_cost_usd = models.DecimalField(
        max_digits=20, decimal_places=10, null=True, help_text="NULL: a GPU had no price"
    )
    busy_seconds = models.FloatField(default=0, help_text="time some request was in the model (prefill or decode)")
    attributed_usd = models.DecimalField(max_digits=20, decimal_places=10, null=True)
    idle_usd = models.DecimalField(max_digits=20, decimal_places=10, null=True)
    requests = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "gpu_instance", "start"], name="gpu_costinterval_unique")
        ]
        # apps.gpu.pages: a pool's intervals over a range, and the sweep's late-data lookup by start.
        indexes = [models.Index(fields=["project", "start"], name="gpu_costinterval_start")]


class CostShare(models.Model):
    """One request's share of one interval's GPU cost. A call's attributed cost (telemetry_span
    .cost_usd of its `carrier` span, cost_source 'attributed') is the sum of its shares, so an
    interval can be recomputed alone and the span's total re-summed exactly."""

    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, db_constraint=False)
    gpu_instance = models.CharField(max_length=200)
    interval_start = models.DateTimeField()
    trace_id = models.UUIDField()
    server_span_id = models.BigIntegerField(help_text="the vLLM llm_request span that did the work")
    carrier_span_id = models.BigIntegerField(help_text="the span that carries the call's cost")
    carrier_start = models.DateTimeField()
    work_us = models.BigIntegerField(help_text="microseconds in the model (prefill + decode) inside the interval")
    share_usd = models.DecimalField(max_digits=20, decimal_places=10)

    class Meta:
        indexes = [
            # recompute: the shares of one interval, to replace them
            models.Index(fields=["project", "gpu_instance", "interval_start"], name="gpu_costshare_interval"),
            # re-summing a carrier span's cost over all its intervals
            models.Index(fields=["trace_id", "carrier_span_id"], name="gpu_costshare_carrier"),
        ]


class AttributionCursor(models.Model):
    """Per project: intervals before `computed_until` are attributed; data received since
    `watermark` is checked for late arrivals. A sweep claims the row with a lease
    (conditional UPDATE on `lease_until`), so a killed worker blocks nobody for long."""

    project = models.OneToOneField("accounts.Project", on_delete=models.CASCADE, primary_key=True)
    computed_until = models.DateTimeField()
    watermark = models.DateTimeField()
    lease_until = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
