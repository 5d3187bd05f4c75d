"""RollupDay (whole closed days of rollup rows), RollupFailure (hours set aside), and the
array aggregate the day rebuild merges distributions with.

The days already rolled up are noted stale (a DayChange row each): the query layer reads
them by the hour until the sweep (day_rows.rebuild_stale_days) has built their day rows.
"""

from __future__ import annotations

import django.contrib.postgres.fields
import django.db.models.deletion
from django.db import migrations, models

# Concatenates int[] arrays in input order: the day rebuild gathers each group's 24 hourly
# bucket-index and count arrays with it (array_agg cannot take arrays of different lengths).
# array_cat copies its left side, so a group of n arrays costs ~n^2/2 array copies: fine for
# at most 24 a group.
CONCAT_AGGREGATE = """
CREATE AGGREGATE rollups_concat(int[]) (SFUNC = array_cat, STYPE = int[], INITCOND = '{}');
"""
DROP_CONCAT_AGGREGATE = "DROP AGGREGATE IF EXISTS rollups_concat(int[]);"
NOTE_EXISTING_DAYS = """
INSERT INTO rollups_daychange (project_id, day)
SELECT DISTINCT project_id, date_trunc('day', bucket, 'UTC') FROM rollups_rolluphour;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_access_and_read_keys"),
        ("rollups", "0003_day_changes"),
    ]

    operations = [
        migrations.RunSQL(CONCAT_AGGREGATE, DROP_CONCAT_AGGREGATE),
        migrations.CreateModel(
            name="RollupDay",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("grouping", models.SmallIntegerField(help_text="bitmask of DIMENSIONS this row is grouped by")),
                ("tenant", models.TextField(null=True)),
                ("feature", models.TextField(null=True)),
                ("provider", models.TextField(null=True)),
                ("model", models.TextField(null=True)),
                ("service", models.TextField(null=True)),
                ("requests", models.IntegerField(default=0)),
                ("errors", models.IntegerField(default=0)),
                ("errors_by_type", models.JSONField(default=dict)),
                ("retries", models.IntegerField(default=0)),
                ("input_tokens", models.BigIntegerField(default=0)),
                ("cache_read_tokens", models.BigIntegerField(default=0)),
                ("cache_write_tokens", models.BigIntegerField(default=0)),
                ("output_tokens", models.BigIntegerField(default=0)),
                ("reasoning_tokens", models.BigIntegerField(default=0)),
                (
                    "tokens_unknown",
                    models.IntegerField(default=0, help_text="calls whose input or output count is unknown"),
                ),
                ("cost_usd", models.DecimalField(decimal_places=10, default=0, max_digits=24)),
                ("cost_unknown", models.IntegerField(default=0, help_text="calls whose cost is unknown")),
                ("cache_savings_usd", models.DecimalField(decimal_places=10, default=0, max_digits=24)),
                ("semantic_cache_lookups", models.IntegerField(default=0)),
                ("semantic_cache_hits", models.IntegerField(default=0)),
                ("tasks", models.IntegerField(default=0)),
                ("successful_tasks", models.IntegerField(default=0)),
                ("generation_tokens", models.BigIntegerField(default=0)),
                ("generation_ms", models.FloatField(default=0)),
                (
                    "e2e_ms_idx",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.IntegerField(), default=list, size=None
                    ),
                ),
                (
                    "e2e_ms_cnt",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.IntegerField(), default=list, size=None
                    ),
                ),
                (
                    "ttft_ms_idx",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.IntegerField(), default=list, size=None
                    ),
                ),
                (
                    "ttft_ms_cnt",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.IntegerField(), default=list, size=None
                    ),
                ),
                (
                    "tpot_ms_idx",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.IntegerField(), default=list, size=None
                    ),
                ),
                (
                    "tpot_ms_cnt",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.IntegerField(), default=list, size=None
                    ),
                ),
                (
                    "queue_ms_idx",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.IntegerField(), default=list, size=None
                    ),
                ),
                (
                    "queue_ms_cnt",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.IntegerField(), default=list, size=None
                    ),
                ),
                (
                    "output_tokens_idx",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.IntegerField(), default=list, size=None
                    ),
                ),
                (
                    "output_tokens_cnt",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.IntegerField(), default=list, size=None
                    ),
                ),
                ("bucket", models.DateTimeField(help_text="UTC midnight of the day")),
                (
                    "project",
                    models.ForeignKey(
                        db_constraint=False, on_delete=django.db.models.deletion.CASCADE, to="accounts.project"
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(fields=["project", "grouping", "bucket"], name="rollup_day_read")],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("project", "bucket", "grouping", "tenant", "feature", "provider", "model", "service"),
                        name="rollup_day_identity",
                        nulls_distinct=False,
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="RollupFailure",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("hour", models.DateTimeField(help_text="start of the UTC hour that failed to roll up")),
                ("error", models.TextField(help_text="the last error")),
                ("attempts", models.IntegerField(default=1)),
                ("first_failed_at", models.DateTimeField()),
                ("last_failed_at", models.DateTimeField()),
                ("next_attempt_at", models.DateTimeField(help_text="the sweep leaves the hour alone until then")),
                (
                    "project",
                    models.ForeignKey(
                        db_constraint=False, on_delete=django.db.models.deletion.CASCADE, to="accounts.project"
                    ),
                ),
            ],
            options={
                "ordering": ["hour", "project"],
                "constraints": [models.UniqueConstraint(fields=("project", "hour"), name="rollup_failure_identity")],
            },
        ),
        migrations.RunSQL(NOTE_EXISTING_DAYS, migrations.RunSQL.noop),
    ]
