"""Daily partitions of gpu_metric_point, kept the way apps.telemetry.partitions keeps the
span table's: created ahead by the maintenance task and on demand by ingest (late or
backfilled points), under a transaction-scoped advisory lock so two receivers meeting a new
day never race on CREATE TABLE, and dropped past retention. Every step is idempotent.

apps.telemetry.partitions is written for telemetry_span alone (its table name and lock key
are module constants), so the same steps are parameterised here by table; the integrator
may move telemetry_span onto this class.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from django.db import connection, transaction
from psycopg import sql

log = logging.getLogger(__name__)


class DailyPartitions:
    def __init__(self, parent: str, lock_key: int) -> None:
        self.parent = parent
        self.lock_key = lock_key
        self._pattern = re.compile(rf"^{re.escape(parent)}_p(\d{{8}})$")
        # Days known to have a partition in this process; saves a catalog query per batch.
        self._known_days: set[date] = set()

    def partition_name(self, day: date) -> str:
        return f"{self.parent}_p{day:%Y%m%d}"

    def existing_days(self) -> set[date]:
        with connection.cursor() as cur:
            cur.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass",
                [self.parent],
            )
            names = [row[0] for row in cur.fetchall()]
        days = set()
        for name in names:
            match = self._pattern.match(name)
            if match:
                days.add(datetime.strptime(match.group(1), "%Y%m%d").date())
        return days

    def ensure(self, days: Iterable[date]) -> None:
        missing = set(days) - self._known_days
        if not missing:
            return
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [self.lock_key])
            present = self.existing_days()
            for day in sorted(missing - present):
                start = datetime.combine(day, time.min, tzinfo=UTC)
                cur.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(self.partition_name(day)),
                        sql.Identifier(self.parent),
                        sql.Literal(start),
                        sql.Literal(start + timedelta(days=1)),
                    )
                )
                log.info("created partition %s", self.partition_name(day))
            self._known_days.update(present | missing)

    def forget(self) -> None:
        """For tests and after a drop: the next batch re-reads the catalog."""
        self._known_days.clear()

    def maintain(
        self, *, retention_days: int, ahead_days: int, today: date | None = None
    ) -> tuple[list[date], list[date]]:
        """Create yesterday's, today's and `ahead_days` coming partitions; drop those past retention."""
        today = today or datetime.now(UTC).date()
        wanted = [today + timedelta(days=offset) for offset in range(-1, ahead_days + 1)]
        self.forget()
        before = self.existing_days()
        self.ensure(wanted)
        oldest_kept = today - timedelta(days=retention_days)
        dropped = []
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [self.lock_key])
            for day in sorted(self.existing_days()):
                if day < oldest_kept:
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.partition_name(day))))
                    dropped.append(day)
                    log.info("dropped partition %s (retention %s days)", self.partition_name(day), retention_days)
        self.forget()
        return sorted(set(wanted) - before), dropped


# pg_advisory_xact_lock key for partition DDL on gpu_metric_point (telemetry_span uses 7_310_001).
METRIC_POINTS = DailyPartitions("gpu_metric_point", 7_310_002)
