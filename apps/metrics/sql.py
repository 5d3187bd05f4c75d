"""The query layer's one statement: rollup rows and on-the-fly rollups of raw spans, merged.

    WITH source AS (
        -- closed, un-noted hours: an index range scan of rollup_hour_read
        -- (project_id, grouping, bucket) per project; a few hundred rows for 30 days of a
        -- small grouping set
        SELECT <time bucket> AS t, <group-by dims>, <needed columns> FROM rollups_rolluphour r
        WHERE project_id = ANY(..) AND grouping = .. AND bucket >= .. AND bucket < ..
          [AND NOT EXISTS (a noted piece covering (r.project_id, r.bucket))]
          [AND r.<dim> = ANY(..) for each filtered dimension]
        UNION ALL
        -- each raw piece (edges, open hour, noted hours): the rollup's own SELECT over raw
        -- spans (apps.rollups.compute.rollup_rows_sql) for just that stretch, partition-pruned
        SELECT ... FROM (<rollup_rows_sql>) r WHERE r.grouping = .. [AND filters]
    )
    SELECT 'sums', t, dims, sum(..) ... FROM source GROUP BY t, dims        -- a few rows
    UNION ALL
    -- a distribution: unnest every (index, count) pair, add counts per (t, dims, index), and
    -- fold each group back into sorted arrays: hash aggregates over ~buckets x rows pairs
    SELECT '<dist>', t, dims, .., array_agg(idx ORDER BY idx), array_agg(cnt ORDER BY idx)
    FROM (SELECT t, dims, u.idx, sum(u.cnt) FROM source, unnest(idx, cnt) u GROUP BY ..) ..
    UNION ALL
    SELECT 'errors_by_type', t, dims, .., jsonb_object_agg(type, calls) FROM (jsonb_each_text ..)

`source` is read by more than one branch, so PostgreSQL materialises it once: the raw
pieces are computed once per query whatever the number of metrics.

Only fixed names are spliced into the text (DIMENSIONS, RollupHour columns, the time
bucket expressions below); every value is a parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from apps.metrics.catalog import SUM_COLUMNS
from apps.metrics.plan import RawPiece, ReadPlan
from apps.rollups.models import ALL_DIMS, DIMENSIONS, DISTRIBUTIONS

# UTC buckets: date_trunc with an explicit zone, whatever the session's TimeZone.
TIME_BUCKETS: dict[str | None, str] = {
    None: "NULL::timestamptz",
    "hour": "r.bucket",
    "day": "date_trunc('day', r.bucket, 'UTC')",
    "week": "date_trunc('week', r.bucket, 'UTC')",
}

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@cache
def raw_rollup_sql(grouping: int) -> str:
    """rollup_rows_sql for one grouping set. Each raw piece embeds its own copy, with its own
    parameters: every placeholder gets the piece's prefix (raw0_start, raw1_start, ...)."""
    from apps.rollups.compute import rollup_params, rollup_rows_sql

    # GROUPING(every dimension) in rollup_rows_sql needs every dimension in some grouping set:
    # ALL_DIMS rides along (its rows are filtered out) until it accepts any set alone.
    text = rollup_rows_sql(grouping_sets=tuple(dict.fromkeys((grouping, ALL_DIMS))))
    known = set(rollup_params((), datetime(2000, 1, 1, tzinfo=UTC), datetime(2000, 1, 2, tzinfo=UTC)))
    unexpected = set(_PLACEHOLDER.findall(text)) - known
    if unexpected:
        raise RuntimeError(f"rollup_rows_sql takes parameters rollup_params does not give: {sorted(unexpected)}")
    return text


def _raw_piece_sql(grouping: int, number: int) -> str:
    return _PLACEHOLDER.sub(lambda match: f"%(raw{number}_{match[1]})s", raw_rollup_sql(grouping))


def _raw_piece_params(number: int, piece: RawPiece) -> dict[str, Any]:
    from apps.rollups.compute import rollup_params

    return {
        f"raw{number}_{name}": value for name, value in rollup_params(piece.project_ids, piece.start, piece.end).items()
    }


def _source_columns(
    granularity: str | None, group_by: Sequence[str], sums: Sequence[str], distributions: Sequence[str], breakdown: bool
) -> str:
    columns = [f"{TIME_BUCKETS[granularity]} AS t"]
    columns += [f"r.{dim}" for dim in group_by]
    columns += [f"r.{column}" for column in sums]
    for dist in distributions:
        columns += [f"r.{dist}_idx", f"r.{dist}_cnt"]
    if breakdown:
        columns.append("r.errors_by_type")
    return ", ".join(columns)


def _filter_sql(filtered: Sequence[str]) -> str:
    return "".join(f" AND r.{dim} = ANY(%(filter_{dim})s::text[])" for dim in filtered)


def build_sql(
    plan: ReadPlan,
    granularity: str | None,
    group_by: Sequence[str],
    filtered: Sequence[str],
    sums: Sequence[str],
    distributions: Sequence[str],
    breakdown: bool,
) -> str:
    for name in (*group_by, *filtered):
        assert name in DIMENSIONS, name
    for column in sums:
        assert column in SUM_COLUMNS, column
    for dist in distributions:
        assert dist in DISTRIBUTIONS, dist
    assert granularity in TIME_BUCKETS, granularity
    assert sums, "the sums part always reads at least requests"

    columns = _source_columns(granularity, group_by, sums, distributions, breakdown)
    where = _filter_sql(filtered)
    branches = []
    if plan.rollup_start is not None:
        skip_noted = ""
        if plan.noted:
            skip_noted = (
                " AND NOT EXISTS (SELECT 1 FROM unnest(%(noted_projects)s::bigint[], %(noted_starts)s::timestamptz[],"
                " %(noted_ends)s::timestamptz[]) AS noted(project_id, start_at, end_at)"
                " WHERE noted.project_id = r.project_id AND r.bucket >= noted.start_at AND r.bucket < noted.end_at)"
            )
        branches.append(
            f"SELECT {columns} FROM rollups_rolluphour r"
            " WHERE r.project_id = ANY(%(project_ids)s::bigint[]) AND r.grouping = %(grouping)s"
            f" AND r.bucket >= %(rollup_start)s AND r.bucket < %(rollup_end)s{skip_noted}{where}"
        )
    for number, _piece in enumerate(plan.raw):
        branches.append(
            f"SELECT {columns} FROM ({_raw_piece_sql(plan.grouping, number)}) r WHERE r.grouping = %(grouping)s{where}"
        )

    keys = ", ".join(["t", *group_by])
    sum_columns = ", ".join(f"sum({column})::{SUM_COLUMNS[column]} AS {column}" for column in sums)
    null_sums = "".join(f"NULL::{SUM_COLUMNS[column]}, " for column in sums)
    parts = [
        f"SELECT 'sums' AS part, {keys}, {sum_columns}, "
        f"NULL::int[] AS idx, NULL::bigint[] AS cnt, NULL::jsonb AS breakdown FROM source GROUP BY {keys}"
    ]
    for dist in distributions:
        parts.append(
            f"SELECT '{dist}', {keys}, {null_sums}array_agg(idx ORDER BY idx), array_agg(cnt ORDER BY idx), NULL"
            f" FROM (SELECT {keys}, u.idx, sum(u.cnt)::bigint AS cnt"
            f" FROM source CROSS JOIN LATERAL unnest(source.{dist}_idx, source.{dist}_cnt) AS u(idx, cnt)"
            f" GROUP BY {keys}, u.idx) AS merged GROUP BY {keys}"
        )
    if breakdown:
        parts.append(
            f"SELECT 'errors_by_type', {keys}, {null_sums}NULL, NULL, jsonb_object_agg(error_type, calls)"
            f" FROM (SELECT {keys}, e.key AS error_type, sum(e.value::bigint) AS calls"
            " FROM source CROSS JOIN LATERAL jsonb_each_text(source.errors_by_type) AS e"
            f" GROUP BY {keys}, e.key) AS merged GROUP BY {keys}"
        )
    union = "\nUNION ALL\n".join(branches)
    return f"WITH source AS (\n{union}\n)\n" + "\nUNION ALL\n".join(parts)


def build_params(plan: ReadPlan, filters: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    params: dict[str, Any] = {
        "project_ids": list(plan.project_ids),
        "grouping": plan.grouping,
        "rollup_start": plan.rollup_start,
        "rollup_end": plan.rollup_end,
    }
    noted = [(project_id, piece) for piece in plan.noted for project_id in piece.project_ids]
    params["noted_projects"] = [project_id for project_id, _ in noted]
    params["noted_starts"] = [piece.start for _, piece in noted]
    params["noted_ends"] = [piece.end for _, piece in noted]
    for dim, values in filters.items():
        params[f"filter_{dim}"] = list(values)
    for number, piece in enumerate(plan.raw):
        params.update(_raw_piece_params(number, piece))
    return params
