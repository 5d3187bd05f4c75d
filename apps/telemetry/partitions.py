"""Daily partitions of telemetry_span: created ahead, created on demand, dropped for retention.

Creation is serialised with a transaction-scoped advisory lock, so two receivers that meet a
new day at once never race on CREATE TABLE; every step is idempotent, so the maintenance task
can run any number of times.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db import connection, transaction
from psycopg import sql

log = logging.getLogger(__name__)

PARENT = "telemetry_span"
_NAME = re.compile(r"^telemetry_span_p(\d{8})$")
_LOCK_KEY = 7_310_001  # pg_advisory_xact_lock key for partition DDL on telemetry_span

# Days known to have a partition in this process; saves a catalog query per ingest batch.
_known_days: set[date] = set()


def partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


def existing_partition_days() -> set[date]:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [PARENT],
        )
        names = [row[0] for row in cur.fetchall()]
    days = set()
    for name in names:
        match = _NAME.match(name)
        if match:
            days.add(datetime.strptime(match.group(1), "%Y%m%d").date())
    return days


def ensure_partitions_for(days: Iterable[date]) -> None:
    missing = set(days) - _known_days
    if not missing:
        return
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        present = existing_partition_days()
        for day in sorted(missing - present):
            start = datetime.combine(day, time.min, tzinfo=UTC)
            cur.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(partition_name(day)),
                    sql.Identifier(PARENT),
                    sql.Literal(start),
                    sql.Literal(start + timedelta(days=1)),
                )
            )
            log.info("created partition %s", partition_name(day))
        _known_days.update(present | missing)


def forget_known_partitions() -> None:
    """For tests and after a drop: the next batch re-reads the catalog."""
    _known_days.clear()


def maintain_partitions(today: date | None = None) -> tuple[list[date], list[date]]:
    """Create today's partition and the configured days ahead; drop those past retention."""
    today = today or datetime.now(UTC).date()
    wanted = [today + timedelta(days=offset) for offset in range(-1, settings.SPAN_PARTITIONS_AHEAD_DAYS + 1)]
    forget_known_partitions()
    before = existing_partition_days()
    ensure_partitions_for(wanted)
    oldest_kept = today - timedelta(days=settings.SPAN_RETENTION_DAYS)
    dropped = []
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        for day in sorted(existing_partition_days()):
            if day < oldest_kept:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(partition_name(day))))
                dropped.append(day)
                log.info("dropped partition %s (retention %s days)", partition_name(day), settings.SPAN_RETENTION_DAYS)
    forget_known_partitions()
    created = sorted(set(wanted) - before)
    return created, dropped
