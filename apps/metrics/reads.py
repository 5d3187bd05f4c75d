"""Reading what a plan names: rollup sums and distributions, and raw pieces, in the
query's snapshot (apps/metrics/snapshot.py: snapshot, session, re-exported here)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from django.db import connection
from psycopg.adapt import Loader

from apps.metrics import sql
from apps.metrics.plan import RawPiece, ReadPlan
from apps.metrics.snapshot import WORK_MEM, ReadSession, remembered, session, snapshot
from apps.rollups.models import GROUPING_SETS

__all__ = ["WORK_MEM", "ReadSession", "SharedReads", "raw_rows", "remembered", "rollup_distributions",
           "rollup_sums", "session", "snapshot"]  # fmt: skip


class _Int4ArrayAsNumpy(Loader):
    """int4[] in binary straight into a numpy array: each element is a 4-byte length and a
    4-byte big-endian value after the header (ndim, flags, element type, ndim x (size, lower
    bound)). No Python int is made per element."""

    format = psycopg.pq.Format.BINARY

    def load(self, data: Any) -> np.ndarray:
        ndim = int.from_bytes(data[0:4], "big")
        if ndim == 0:
            return np.empty(0, dtype=np.int64)
        return np.frombuffer(data, dtype=">i4", offset=12 + 8 * ndim)[1::2].astype(np.int64)


class _JsonbAsText(Loader):
    """jsonb in binary (a version byte, then the text) left as text: a raw piece's rows carry
    four jsonb columns, of which the query layer reads one (errors_by_type, parsed in
    raw_rows), and parsing the per-key count columns (finish reasons, response models,
    fingerprints: the drift detector's, read from rollup rows) cost a third of the Python
    time of reading the open hour."""

    format = psycopg.pq.Format.BINARY

    def load(self, data: Any) -> str:
        return bytes(data[1:]).decode()


_INT4_ARRAY_OID = 1007
_JSONB_OID = 3802


def _binary_cursor() -> psycopg.Cursor[Any]:
    """A server-side-binding cursor on Django's connection (and so in its transaction): Django's
    own cursors bind client-side, and those cannot fetch binary results."""
    connection.ensure_connection()
    cursor = psycopg.Cursor(connection.connection)
    cursor.adapters.register_loader(_INT4_ARRAY_OID, _Int4ArrayAsNumpy)
    return cursor


def rollup_sums(
    plan: ReadPlan,
    granularity: str | None,
    group_by: Sequence[str],
    filters: Mapping[str, Sequence[str]],
    sums: Sequence[str],
    breakdown: bool,
    *,
    days: tuple[str, Sequence[tuple[int, datetime]]] | None = None,
    with_project: bool = False,
    table: str = sql.HOUR_TABLE,
    stretches: Sequence[tuple[datetime, datetime]] | None = None,
) -> list[tuple[Any, ...]]:
    """([project,] t, *dims, *sums[, errors_by_type]) per output row, from the plan's rollup
    hours (or, with table=sql.DAY_TABLE, its day rows); `days` = ("skip" | "only", (project,
    UTC midnight) pairs) leaves out, or reads only, those whole days. `stretches`: read these
    ranges of rollup hours instead of the plan's one, in one statement; an output row may then
    come once per stretch (add them up)."""
    filtered = sorted(filters, key=sql.DIMENSIONS.index)
    clause, params = _days_clause(plan, filters, days, stretches)
    statement = sql.sums_sql(
        plan, granularity, group_by, filtered, sums, breakdown, days=clause, with_project=with_project, table=table,
        stretches=None if stretches is None else len(stretches),
    )  # fmt: skip
    with connection.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall()
    if breakdown:
        # Django's psycopg setup hands jsonb over as text (JSONField decodes it itself).
        rows = [(*row[:-1], json.loads(row[-1]) if isinstance(row[-1], str) else (row[-1] or {})) for row in rows]
    return rows


def rollup_distributions(
    plan: ReadPlan,
    group_by: Sequence[str],
    filters: Mapping[str, Sequence[str]],
    dists: Sequence[str],
    *,
    days: tuple[str, Sequence[tuple[int, datetime]]] | None = None,
    with_project: bool = False,
    table: str = sql.HOUR_TABLE,
    stretches: Sequence[tuple[datetime, datetime]] | None = None,
) -> list[tuple[Any, ...]]:
    """([project,] bucket, *dims, idx, cnt, idx, cnt, ...) per rollup row, arrays as numpy
    int64; `days`, `table` and `stretches` as for rollup_sums."""
    filtered = sorted(filters, key=sql.DIMENSIONS.index)
    clause, params = _days_clause(plan, filters, days, stretches)
    statement = sql.distributions_sql(
        plan, group_by, filtered, dists, days=clause, with_project=with_project, table=table,
        stretches=None if stretches is None else len(stretches),
    )  # fmt: skip
    with _binary_cursor() as cur:
        cur.execute(statement, params, binary=True)
        return cur.fetchall()


def _days_clause(
    plan: ReadPlan,
    filters: Mapping[str, Sequence[str]],
    days: tuple[str, Sequence[tuple[int, datetime]]] | None,
    stretches: Sequence[tuple[datetime, datetime]] | None = None,
) -> tuple[str | None, dict[str, Any]]:
    params = sql.rollup_params(plan, filters, stretches or ())
    if days is None or (days[0] == "skip" and not days[1]):
        return None, params
    params.update(sql.day_params(days[1]))
    return days[0], params


def raw_rows(piece: RawPiece, grouping_sets: Sequence[int]) -> list[dict[str, Any]]:
    """RollupHour-shaped rows computed from the spans of one raw piece, arrays as numpy,
    errors_by_type a dict, the other jsonb columns their JSON text (_JsonbAsText).

    Not prepared: each execution is planned with its own bounds, so the day partitions
    outside the attribution window are pruned at plan time (compute.rollup_params)."""
    from apps.rollups.compute import rollup_params

    with _binary_cursor() as cur:
        cur.adapters.register_loader(_JSONB_OID, _JsonbAsText)
        params = rollup_params(piece.project_ids, piece.start, piece.end)
        cur.execute(sql.raw_rollup_sql(tuple(grouping_sets)), params, binary=True, prepare=False)
        assert cur.description is not None
        names = [column.name for column in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    for row in rows:
        errors = row["errors_by_type"]
        row["errors_by_type"] = {} if errors in (None, "{}") else json.loads(errors)
    return rows


@dataclass
class SharedReads:
    """Raw pieces rolled up once for several queries.

    A page, an API batch or an email asks several questions of the same range, and each reads
    the open hour (and any partial or noted hour) from raw spans. Pass one SharedReads to
    each run_query: a piece is then rolled up once, for all the grouping sets named here at
    once (about the cost of one: the trace attribution dominates), and each query takes its
    set's rows; a set not named is rolled up when first asked for. Make one per page render
    (query.shared_reads_for names the sets of a page's queries): it keeps the rows as they
    were when first read.
    """

    grouping_sets: tuple[int, ...] = GROUPING_SETS
    pieces: dict[tuple[tuple[int, ...], datetime, datetime], dict[int, list[dict[str, Any]]]] = field(
        default_factory=dict
    )

    def rows(self, piece: RawPiece, grouping: int) -> list[dict[str, Any]]:
        by_grouping = self.pieces.setdefault((piece.project_ids, piece.start, piece.end), {})
        if grouping not in by_grouping:
            wanted = (grouping,) if by_grouping else tuple(dict.fromkeys((*self.grouping_sets, grouping)))
            read: dict[int, list[dict[str, Any]]] = {each: [] for each in wanted}
            for row in raw_rows(piece, wanted):
                read[row["grouping"]].append(row)
            # Only once read: a read that failed leaves the piece to be read again, never empty.
            by_grouping.update(read)
        return by_grouping[grouping]
