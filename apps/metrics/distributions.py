"""Whole merged distributions (latency histograms), read the way run_query reads percentiles.

run_query turns a slice's merged distribution into quantiles; a histogram needs the merged
(bucket, count) pairs themselves. They are read exactly as run_query reads them: the same
scope rules, the smallest materialised grouping set that covers the filters (plan.py), rollup
rows for closed un-noted hours and the rollup's own SQL over raw spans for the rest
(reads.py), merged by adding counts per bucket (merge.py). So a histogram's sample count is
the `<dist>_samples` of the same slice, and its percentiles are the page's percentiles.

    values, counts = merged_distribution("e2e_ms", start, end, Filters(features=("chat",)), scope)
    # values: bucket representatives in ms (ascending), counts: calls in each bucket
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from django.utils import timezone

from apps.metrics import days, reads
from apps.metrics.merge import Distribution, merge_distributions
from apps.metrics.plan import choose_grouping, plan_reads
from apps.metrics.query import Filters, Scope, effective_tenants, filtered_project_ids
from apps.metrics.reads import SharedReads
from apps.rollups.models import DISTRIBUTIONS
from apps.rollups.sketch import bucket_values

__all__ = ["merged_distribution", "merged_distributions"]


def merged_distribution(
    dist: str,
    start: datetime,
    end: datetime,
    filters: Filters,
    scope: Scope,
    *,
    shared: SharedReads | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(bucket values, counts) of one distribution over [start, end), within filters and scope.

    Values are the buckets' representatives (sketch.bucket_values, within 0.5% of every value
    in the bucket), ascending; 0.0 stands for values at or below the sketch's zero threshold.
    Empty arrays when nothing is visible.
    """
    return merged_distributions((dist,), start, end, filters, scope, shared=shared)[dist]


def merged_distributions(
    dists: Sequence[str],
    start: datetime,
    end: datetime,
    filters: Filters,
    scope: Scope,
    *,
    shared: SharedReads | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Several distributions of the same slice in one read (one rollup statement)."""
    dists = tuple(dict.fromkeys(dists))
    for dist in dists:
        if dist not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {dist!r}; known: {', '.join(DISTRIBUTIONS)}")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if end <= start:
        raise ValueError("end must be after start")

    # The same scope rules as run_query (its helpers, so they cannot drift apart): the scope's
    # tenants become a tenant filter, and a limited scope always reads a set with the tenant.
    wanted = filters.by_dimension()
    tenants = effective_tenants(filters, scope)
    if tenants is not None:
        wanted["tenant"] = tenants
    needed = list(wanted)
    if scope.limited:
        needed.append("tenant")
    project_ids = filtered_project_ids(filters)
    parts: dict[str, list[Distribution]] = {dist: [] for dist in dists}
    if tenants != () and project_ids:
        grouping = choose_grouping(needed)
        with reads.snapshot():
            plan = plan_reads(grouping, project_ids, start, end, timezone.now())
            if plan.rollup_start is not None:
                kept = days.kept_days(plan)
                for row in days.residual_distribution_rows(plan, kept, (), wanted, dists):
                    # (bucket, idx, cnt, idx, cnt, ...): no group-by, so the arrays start at 1.
                    for number, dist in enumerate(dists):
                        parts[dist].append((row[1 + 2 * number], row[2 + 2 * number]))
                for day_parts in days.read(plan, kept, (), wanted, sums=False, breakdown=False, dists=dists).values():
                    for dist in dists:
                        parts[dist].extend(day_parts[dist].values())
            for piece in plan.raw:
                rows = shared.rows(piece, grouping) if shared else reads.raw_rows(piece, (grouping,))
                for raw in rows:
                    if any(raw[dim] not in values for dim, values in wanted.items()):
                        continue
                    for dist in dists:
                        indexes = raw[f"{dist}_idx"]
                        if indexes is not None and len(indexes):
                            counts = raw[f"{dist}_cnt"]
                            parts[dist].append((np.asarray(indexes, np.int64), np.asarray(counts, np.int64)))
    merged = {}
    for dist in dists:
        indexes, counts = merge_distributions(parts[dist])
        order = np.argsort(indexes, kind="stable")
        merged[dist] = (bucket_values(indexes[order]), counts[order].astype(np.int64))
    return merged


def coarsen(values: np.ndarray, counts: np.ndarray, per_decade: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The same distribution in wider log buckets, for drawing: the sketch's ~1%-wide buckets
    make a spiky histogram of a few hundred calls. Each wide bucket is placed at the geometric
    middle of its bounds; zeros stay at 0."""
    if values.size == 0:
        return values, counts
    zero = values <= 0
    positive, weights = values[~zero], counts[~zero]
    out_values: list[np.ndarray] = []
    out_counts: list[np.ndarray] = []
    if zero.any():
        out_values.append(np.array([0.0]))
        out_counts.append(np.array([int(counts[zero].sum())]))
    if positive.size:
        slots = np.floor(np.log10(positive) * per_decade).astype(np.int64)
        unique, inverse = np.unique(slots, return_inverse=True)
        out_values.append(np.power(10.0, (unique + 0.5) / per_decade))
        out_counts.append(np.bincount(inverse, weights=weights).astype(np.int64))
    return np.concatenate(out_values), np.concatenate(out_counts)
