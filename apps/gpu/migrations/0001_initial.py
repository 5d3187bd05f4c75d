"""The GPU tier's tables: metric series, metric points (partitioned by day on time), and
scrape targets.

gpu_metric_series and gpu_metric_point are ours (RunSQL), like telemetry_span: the points
table is partitioned and written with COPY (apps/gpu/store.py), and both have composite keys
the store relies on. Django keeps unmanaged models of them for reads and the admin.
"""

from __future__ import annotations

import django.contrib.postgres.fields
import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import apps.gpu.models

CREATE = """
CREATE TABLE gpu_metric_series (
    project_id   bigint NOT NULL,
    -- collectors.metric_records.series_hash(name, resource, point attributes)
    series_id    bigint NOT NULL,
    name         text NOT NULL,
    kind         text NOT NULL,
    unit         text NOT NULL DEFAULT '',
    temporality  smallint NOT NULL,
    monotonic    boolean NOT NULL,
    description  text NOT NULL DEFAULT '',
    resource     jsonb NOT NULL DEFAULT '{}'::jsonb,
    attributes   jsonb NOT NULL DEFAULT '{}'::jsonb,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, series_id)
);
-- Reads pick series by metric name (e.g. every gen_ai.client.operation.time_to_first_chunk
-- series of a project, then their points).
CREATE INDEX gpu_metric_series_name ON gpu_metric_series (project_id, name);
COMMENT ON INDEX gpu_metric_series_name IS
    'apps.gpu.reads: the series of one metric name in a project';

CREATE TABLE gpu_metric_point (
    project_id          bigint NOT NULL,
    series_id           bigint NOT NULL,
    time                timestamptz NOT NULL,
    start_time          timestamptz,
    -- gauge and sum: the value as sent (a cumulative sum's running total)
    value               double precision,
    -- sum: the increase over the interval since the series' previous point (reset-aware;
    -- NULL for a first reading that is only a baseline)
    increase            double precision,
    -- histograms, as sent
    count               bigint,
    sum                 double precision,
    min                 double precision,
    max                 double precision,
    bounds              double precision[],
    bucket_counts       bigint[],
    scale               smallint,
    zero_count          bigint,
    positive_offset     integer,
    positive_counts     bigint[],
    negative_offset     integer,
    negative_counts     bigint[],
    -- histograms: the interval's own counts (= as sent for delta temporality). Explicit
    -- buckets align with bounds; exponential ones with scale / positive_offset / negative_offset.
    interval_count      bigint,
    interval_sum        double precision,
    interval_buckets    bigint[],
    interval_zero_count bigint,
    interval_negative   bigint[],
    received_at         timestamptz NOT NULL DEFAULT now(),
    -- Idempotency: an exporter's retry re-sends the same point of the same series at the
    -- same time, and INSERT ... ON CONFLICT DO NOTHING drops it. time is in the key because
    -- a partitioned table's unique keys must contain the partition key; the key's order also
    -- serves the baseline lookup (the latest point of a series before a time).
    PRIMARY KEY (project_id, series_id, time)
) PARTITION BY RANGE (time);
"""

DROP = "DROP TABLE IF EXISTS gpu_metric_point CASCADE; DROP TABLE IF EXISTS gpu_metric_series CASCADE;"


class Migration(migrations.Migration):
    initial = True

    dependencies = [("accounts", "0001_initial")]

    operations = [
        migrations.RunSQL(CREATE, DROP),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="MetricSeries",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "project_id", "series_id", blank=True, editable=False, primary_key=True, serialize=False
                            ),
                        ),
                        (
                            "project",
                            models.ForeignKey(
                                db_constraint=False,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                to="accounts.project",
                            ),
                        ),
                        ("series_id", models.BigIntegerField()),
                        ("name", models.TextField()),
                        ("kind", models.TextField()),
                        ("unit", models.TextField()),
                        ("temporality", models.SmallIntegerField()),
                        ("monotonic", models.BooleanField()),
                        ("description", models.TextField()),
                        ("resource", models.JSONField(default=dict)),
                        ("attributes", models.JSONField(default=dict)),
                        ("first_seen", models.DateTimeField()),
                    ],
                    options={"db_table": "gpu_metric_series", "managed": False},
                ),
                migrations.CreateModel(
                    name="MetricPoint",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "project_id",
                                "series_id",
                                "time",
                                blank=True,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        (
                            "project",
                            models.ForeignKey(
                                db_constraint=False,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                to="accounts.project",
                            ),
                        ),
                        ("series_id", models.BigIntegerField()),
                        ("time", models.DateTimeField()),
                        ("start_time", models.DateTimeField(null=True)),
                        ("value", models.FloatField(null=True)),
                        ("increase", models.FloatField(null=True)),
                        ("count", models.BigIntegerField(null=True)),
                        ("sum", models.FloatField(null=True)),
                        ("min", models.FloatField(null=True)),
                        ("max", models.FloatField(null=True)),
                        (
                            "bounds",
                            django.contrib.postgres.fields.ArrayField(models.FloatField(), null=True, size=None),
                        ),
                        (
                            "bucket_counts",
                            django.contrib.postgres.fields.ArrayField(models.BigIntegerField(), null=True, size=None),
                        ),
                        ("scale", models.SmallIntegerField(null=True)),
                        ("zero_count", models.BigIntegerField(null=True)),
                        ("positive_offset", models.IntegerField(null=True)),
                        (
                            "positive_counts",
                            django.contrib.postgres.fields.ArrayField(models.BigIntegerField(), null=True, size=None),
                        ),
                        ("negative_offset", models.IntegerField(null=True)),
                        (
                            "negative_counts",
                            django.contrib.postgres.fields.ArrayField(models.BigIntegerField(), null=True, size=None),
                        ),
                        ("interval_count", models.BigIntegerField(null=True)),
                        ("interval_sum", models.FloatField(null=True)),
                        (
                            "interval_buckets",
                            django.contrib.postgres.fields.ArrayField(models.BigIntegerField(), null=True, size=None),
                        ),
                        ("interval_zero_count", models.BigIntegerField(null=True)),
                        (
                            "interval_negative",
                            django.contrib.postgres.fields.ArrayField(models.BigIntegerField(), null=True, size=None),
                        ),
                        ("received_at", models.DateTimeField()),
                    ],
                    options={"db_table": "gpu_metric_point", "managed": False},
                ),
            ]
        ),
        migrations.CreateModel(
            name="ScrapeTarget",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "url",
                    models.CharField(
                        help_text="The /metrics URL, e.g. http://vllm-0:8000/metrics",
                        max_length=500,
                        validators=[apps.gpu.models.validate_scrape_url],
                    ),
                ),
                (
                    "kind",
                    models.CharField(choices=[("vllm", "vLLM /metrics"), ("dcgm", "DCGM exporter")], max_length=8),
                ),
                (
                    "instance",
                    models.CharField(
                        blank=True,
                        help_text="The serving instance these samples describe (resource service.instance.id); the URL's host:port when blank.",
                        max_length=200,
                    ),
                ),
                ("interval_seconds", models.PositiveIntegerField(default=15)),
                ("enabled", models.BooleanField(default=True)),
                ("next_scrape_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ("last_scraped_at", models.DateTimeField(blank=True, null=True)),
                ("last_success_at", models.DateTimeField(blank=True, null=True)),
                ("last_error", models.TextField(blank=True)),
                ("consecutive_failures", models.PositiveIntegerField(default=0)),
                ("last_sample_count", models.PositiveIntegerField(default=0)),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="scrape_targets",
                        to="accounts.project",
                    ),
                ),
            ],
            options={"ordering": ["project_id", "url"]},
        ),
    ]
