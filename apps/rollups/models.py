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

from datetime import datetime, timedelta

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

# Per-call counts by a text key, as {key: calls} JSON (capped: compute.MAX_COUNT_KEYS):
# the first finish reason, the responded model name, the provider's system fingerprint.
# The drift detector reads them (apps/insights/drift.py); day rows merge them key by key.
COUNT_COLUMNS = ("finish_reasons", "response_models", "fingerprints")

# The distributions each row keeps, by name: (indexes column, counts column).
DISTRIBUTIONS = ("e2e_ms", "ttft_ms", "tpot_ms", "queue_ms", "output_tokens")


def _sketch() -> ArrayField:
    return ArrayField(models.IntegerField(), default=list)


class RollupRow(models.Model):
    """The columns of a rollup row, hourly (RollupHour) or daily (RollupDay)."""

    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, db_constraint=False)
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
    # What the drift detector reads (docs/metrics.md, "Drift"): {key: calls} per COUNT_COLUMNS,
    # and answer counts: empty (no output token, no error), refused by the provider, judged by
    # the app's observatory.output.valid, and judged invalid by it.
    finish_reasons = models.JSONField(default=dict)
    response_models = models.JSONField(default=dict)
    fingerprints = models.JSONField(default=dict)
    empty_answers = models.IntegerField(default=0)
    refused_answers = models.IntegerField(default=0)
    validated_outputs = models.IntegerField(default=0)
    invalid_outputs = models.IntegerField(default=0)

    # Distributions (sketch.py): bucket indexes and their counts, for each of DISTRIBUTIONS.
    e2e_ms_idx, e2e_ms_cnt = _sketch(), _sketch()
    ttft_ms_idx, ttft_ms_cnt = _sketch(), _sketch()
    tpot_ms_idx, tpot_ms_cnt = _sketch(), _sketch()
    queue_ms_idx, queue_ms_cnt = _sketch(), _sketch()
    output_tokens_idx, output_tokens_cnt = _sketch(), _sketch()

    class Meta:
        abstract = True


class RollupHour(RollupRow):
    bucket = models.DateTimeField(help_text="start of the UTC hour")

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


class RollupDay(RollupRow):
    """A closed UTC day's rollup rows: its RollupHour rows added up (sums added, errors_by_type
    merged key by key, distributions merged by adding counts per bucket index), so a 30-day
    page reads 30 rows a group instead of 720, in a fresh process as fast as in a warm one.

    Rebuilt from the day's hour rows (day_rows.py), never from spans, so a day row is exactly
    the sum of its hours. A DayChange note says the hour rows changed since: while a day has
    one, the query layer reads that day by the hour, never a stale day row.
    """

    bucket = models.DateTimeField(help_text="UTC midnight of the day")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "bucket", "grouping", "tenant", "feature", "provider", "model", "service"],
                name="rollup_day_identity",
                nulls_distinct=False,
            )
        ]
        # The query layer's reads: one grouping set of one project over some days.
        indexes = [models.Index(fields=["project", "grouping", "bucket"], name="rollup_day_read")]


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
    """A write to some RollupHour rows of a UTC day: that day's RollupDay rows are stale.

    Written by statement triggers on rollups_rolluphour (migration 0003), so every INSERT,
    UPDATE and DELETE of rollup rows, whoever runs it, adds one row per (project, day) it
    touched, in its own transaction: a reader sees the rows and their change notes in one
    snapshot. The query layer reads a day with a note by the hour (apps/metrics/days.py);
    day_rows.rebuild_days replaces the day's RollupDay rows from its hour rows and deletes
    exactly the notes it read (in the rollup's own transaction for a range rebuild, from the
    sweep after noted hours), so a note that commits later keeps the day stale. Insert-only
    from the triggers, so concurrent rollup workers never wait on each other here;
    compact_day_changes folds an open day's many notes into one fresh row.

    No foreign key: a project's rollup rows are deleted with it, and their notes must not
    stop that.
    """

    id = models.BigAutoField(primary_key=True)
    project_id = models.BigIntegerField()
    day = models.DateTimeField(help_text="UTC midnight of the day whose rollup rows changed")

    class Meta:
        indexes = [models.Index(fields=["project_id", "day", "id"], name="day_change_read")]


class DayBuild(models.Model):
    """When a (project, day)'s RollupDay rows were last built: `id`, fresh from the sequence on
    every rebuild (day_rows.rebuild_days deletes and inserts it with the day rows, in their
    transaction), so it names exactly one version of those rows. The query layer keeps days
    it has read in the process under it (apps/metrics/days.py)."""

    id = models.BigAutoField(primary_key=True)
    project_id = models.BigIntegerField()
    day = models.DateTimeField(help_text="UTC midnight")

    class Meta:
        # One build a day; the query layer reads the builds of some projects' days from it
        # alone (an Index Only Scan: the id is included).
        constraints = [models.UniqueConstraint(fields=["project_id", "day"], include=["id"], name="day_build_identity")]


class RollupFailure(models.Model):
    """A noted (project, hour) whose recompute failed: set aside so it cannot block the others.

    The sweep takes the oldest noted hours first; one hour that always fails (a value the
    rollup's INSERT cannot store, say) would otherwise be taken first on every trigger and
    stop every later hour of every project. Its notes stay (nothing is lost: the query layer
    reads a noted hour from raw spans), the sweep goes on with the next hours, and the hour
    is tried again at next_attempt_at, backing off exponentially up to a cap. A successful
    recompute deletes the row in its own transaction.
    """

    BACKOFF_BASE_SECONDS = 60
    BACKOFF_CAP_SECONDS = 3600

    id = models.BigAutoField(primary_key=True)
    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, db_constraint=False)
    hour = models.DateTimeField(help_text="start of the UTC hour that failed to roll up")
    error = models.TextField(help_text="the last error")
    attempts = models.IntegerField(default=1)
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField(help_text="the sweep leaves the hour alone until then")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "hour"], name="rollup_failure_identity")]
        ordering = ["hour", "project"]

    def __str__(self) -> str:
        return f"project {self.project_id}, {self.hour:%Y-%m-%d %H:00} UTC: {self.attempts} attempt(s)"

    @classmethod
    def backoff(cls, attempts: int) -> timedelta:
        """The wait after `attempts` failures in a row: 1, 2, 4, ... minutes, at most an hour."""
        return timedelta(seconds=min(cls.BACKOFF_CAP_SECONDS, cls.BACKOFF_BASE_SECONDS * 2 ** (attempts - 1)))

    @classmethod
    def record(cls, project_id: int, hour: datetime, error: str, now: datetime) -> RollupFailure:
        """Count one more failure of (project, hour) and set its next attempt."""
        failure, created = cls.objects.select_for_update().get_or_create(
            project_id=project_id,
            hour=hour,
            defaults={"error": error, "first_failed_at": now, "last_failed_at": now,
                      "next_attempt_at": now + cls.backoff(1)},
        )  # fmt: skip
        if not created:
            failure.attempts += 1
            failure.error = error
            failure.last_failed_at = now
            failure.next_attempt_at = now + cls.backoff(failure.attempts)
            failure.save(update_fields=["attempts", "error", "last_failed_at", "next_attempt_at"])
        return failure
