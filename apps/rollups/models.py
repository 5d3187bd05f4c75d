"""Hourly rollups of the span table, and the hours waiting to be (re)computed.

One RollupHour row per (project, hour, grouping set, dimension values). `grouping` is a
bitmask of the dimensions the row is grouped by (DIM_BITS); a dimension outside the mask is
NULL, meaning "all values". An unattributed span has the empty string as its tenant or
feature, never NULL. The materialised grouping sets are GROUPING_SETS: the query layer reads
the smallest one that covers a question's filters and group-by, so a 30-day overview reads a
few hundred rows instead of every (tenant, feature, model) combination.

Distributions are pairs of int arrays (bucket indexes, counts): see sketch.py.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models

DIMENSIONS = ("tenant", "feature", "provider", "model", "service")
DIM_BITS = {name: 1 << position for position, name in enumerate(DIMENSIONS)}
ALL_DIMS = sum(DIM_BITS.values())


def mask(*names: str) -> int:
    return sum(DIM_BITS[name] for name in names)


GROUPING_SETS: tuple[int, ...] = (
    0,
    mask("tenant"),
    mask("feature"),
    mask("tenant", "feature"),
    mask("provider", "model"),
    mask("tenant", "provider", "model"),
    mask("feature", "provider", "model"),
    ALL_DIMS,
)

# The distributions each row keeps, by name: (indexes column, counts column).
DISTRIBUTIONS = ("e2e_ms", "ttft_ms", "tpot_ms", "queue_ms", "output_tokens")


def _sketch() -> ArrayField:
    return ArrayField(models.IntegerField(), default=list)


class RollupHour(models.Model):
    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, db_constraint=False)
    bucket = models.DateTimeField(help_text="start of the UTC hour")
    grouping = models.SmallIntegerField(help_text="bitmask of DIMENSIONS this row is grouped by")
    tenant = models.TextField(null=True)
    feature = models.TextField(null=True)
    provider = models.TextField(null=True)
    model = models.TextField(null=True)
    service = models.TextField(null=True)

    # LLM calls: LLM spans whose parent is not itself an LLM span (see docs/metrics.md).
    requests = models.IntegerField(default=0)
    errors = models.IntegerField(default=0)
    errors_by_type = models.JSONField(default=dict)
    retries = models.IntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    tokens_unknown = models.IntegerField(default=0, help_text="calls whose input or output count is unknown")
    cost_usd = models.DecimalField(max_digits=24, decimal_places=10, default=0)
    cost_unknown = models.IntegerField(default=0, help_text="calls whose cost is unknown")
    cache_savings_usd = models.DecimalField(max_digits=24, decimal_places=10, default=0)
    semantic_cache_lookups = models.IntegerField(default=0)
    semantic_cache_hits = models.IntegerField(default=0)
    tasks = models.IntegerField(default=0)
    successful_tasks = models.IntegerField(default=0)
    # Output tokens and generation time (e2e - TTFT) of calls that report both: tokens per second.
    generation_tokens = models.BigIntegerField(default=0)
    generation_ms = models.FloatField(default=0)

    # Distributions (sketch.py): bucket indexes and their counts, for each of DISTRIBUTIONS.
    e2e_ms_idx, e2e_ms_cnt = _sketch(), _sketch()
    ttft_ms_idx, ttft_ms_cnt = _sketch(), _sketch()
    tpot_ms_idx, tpot_ms_cnt = _sketch(), _sketch()
    queue_ms_idx, queue_ms_cnt = _sketch(), _sketch()
    output_tokens_idx, output_tokens_cnt = _sketch(), _sketch()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "bucket", "grouping", "tenant", "feature", "provider", "model", "service"],
                name="rollup_hour_identity",
                nulls_distinct=False,
            )
        ]
        # The query layer's reads: one grouping set of one project over a time range.
        indexes = [models.Index(fields=["project", "grouping", "bucket"], name="rollup_hour_read")]


class DirtyHour(models.Model):
    """A note that an hour's raw spans changed: written in the same transaction as the
    change (ingest, re-pricing), so the note is visible exactly when the spans are.

    Insert-only, with no unique key, so ingest never waits on a row lock. The rollup task
    reads notes, recomputes each noted hour from raw spans under an advisory lock, and then
    deletes exactly the notes it read: a note written meanwhile survives and causes one more
    recompute, and a killed worker leaves its notes in place (no lock flag to clear).
    """

    id = models.BigAutoField(primary_key=True)
    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, db_constraint=False)
    hour = models.DateTimeField()
    noted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # The rollup task's read: the oldest noted hours first.
        indexes = [models.Index(fields=["hour", "project"], name="dirty_hour_read")]


class DayChange(models.Model):
    """A write to some RollupHour rows of a UTC day: the version of that day's rows.

    Written by statement triggers on rollups_rolluphour (migration 0003), so every INSERT,
    UPDATE and DELETE of rollup rows, whoever runs it, adds one row per (project, day) it
    touched, in its own transaction: a reader sees the rows and their change notes in one
    snapshot. The query layer keeps whole closed days it has read under their version
    (count, sum and max of the ids here, apps/metrics/days.py), so a changed day is read
    again. Insert-only from the triggers, so concurrent rollup workers never wait on each
    other here; compact_day_changes folds each day's notes into one fresh row (a new id, so
    never an earlier version).

    No foreign key: a project's rollup rows are deleted with it, and their notes must not
    stop that.
    """

    id = models.BigAutoField(primary_key=True)
    project_id = models.BigIntegerField()
    day = models.DateTimeField(help_text="UTC midnight of the day whose rollup rows changed")

    class Meta:
        indexes = [models.Index(fields=["project_id", "day", "id"], name="day_change_read")]
