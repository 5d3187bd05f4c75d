"""Mergeable latency (and length) distributions: log-bucketed, DDSketch-style.

A value x > 0 falls in bucket i = ceil(log(x) / log(GAMMA)); every value in bucket i lies in
(GAMMA^(i-1), GAMMA^i], and the bucket's representative 2 * GAMMA^i / (GAMMA + 1) is within
RELATIVE_ACCURACY of each of them. Values at or below ZERO_THRESHOLD go to ZERO_INDEX and
stand for 0. A distribution is two parallel arrays (bucket indexes, counts); merging is
adding counts per index, so any slice over any range merges exactly and percentiles are
never averaged.

The bucket function exists twice, here and in SQL (BUCKET_SQL, used by the rollup); a
test keeps them equal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

# 0.5% per value leaves room under the 1% promise for interpolating between two ranks.
RELATIVE_ACCURACY = 0.005
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LOG_GAMMA = math.log(GAMMA)
ZERO_THRESHOLD = 1e-6
ZERO_INDEX = -(2**31) + 1

# SQL expression for a value column/expression `{x}` (double precision): its bucket index,
# NULL for NULL. Keep in step with bucket_index().
BUCKET_SQL = (
    "CASE WHEN {x} IS NULL THEN NULL WHEN {x} <= " + repr(ZERO_THRESHOLD) + " THEN " + str(ZERO_INDEX) + " "
    "ELSE ceil(ln({x}) / " + repr(LOG_GAMMA) + ")::int END"
)


def bucket_index(x: float) -> int:
    if x <= ZERO_THRESHOLD:
        return ZERO_INDEX
    return math.ceil(math.log(x) / LOG_GAMMA)


def bucket_value(index: int) -> float:
    if index == ZERO_INDEX:
        return 0.0
    return 2.0 * GAMMA**index / (GAMMA + 1.0)


def bucket_values(indexes: np.ndarray) -> np.ndarray:
    values = 2.0 * np.power(GAMMA, indexes.astype(np.float64)) / (GAMMA + 1.0)
    return np.where(indexes == ZERO_INDEX, 0.0, values)


def merge(parts: Iterable[tuple[Sequence[int] | None, Sequence[int] | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Merge (indexes, counts) pairs into one sorted distribution."""
    index_chunks = []
    count_chunks = []
    for indexes, counts in parts:
        if indexes:
            index_chunks.append(np.asarray(indexes, dtype=np.int64))
            count_chunks.append(np.asarray(counts, dtype=np.int64))
    if not index_chunks:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    all_indexes = np.concatenate(index_chunks)
    all_counts = np.concatenate(count_chunks)
    unique, inverse = np.unique(all_indexes, return_inverse=True)
    return unique, np.bincount(inverse, weights=all_counts).astype(np.int64)


def quantiles(indexes: np.ndarray, counts: np.ndarray, qs: Sequence[float]) -> list[float | None]:
    """Quantiles of a merged distribution, interpolated between ranks like percentile_cont.

    percentile_cont(q) over n sorted values is v[floor(r)] + (r - floor(r)) * (v[ceil(r)] - v[floor(r)])
    with r = q * (n - 1); each v here is its bucket's representative, within
    RELATIVE_ACCURACY of the true value, so the interpolation is too.
    """
    total = int(counts.sum()) if counts.size else 0
    if total == 0:
        return [None for _ in qs]
    order = np.argsort(indexes)
    indexes, counts = indexes[order], counts[order]
    cumulative = np.cumsum(counts)  # cumulative[k] = number of values in buckets <= k
    values = bucket_values(indexes)
    results: list[float | None] = []
    for q in qs:
        rank = q * (total - 1)
        low_rank, high_rank = math.floor(rank), math.ceil(rank)
        low = values[int(np.searchsorted(cumulative, low_rank + 1))]
        high = values[int(np.searchsorted(cumulative, high_rank + 1))]
        results.append(float(low + (rank - low_rank) * (high - low)))
    return results
