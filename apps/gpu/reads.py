"""Reads over the metric points table, for the GPU tier's pages and the metrics query layer.

Every read works on the stored per-interval values (`increase`, `interval_*`), which ingest
derived reset-aware, so a sum over any time range is right across server restarts.

Where things live (docs/gpu.md has the table):
- TTFT per model from openai-v2: series named `gen_ai.client.operation.time_to_first_chunk`
  (histogram, s), point attribute `gen_ai.request.model` (and `gen_ai.response.model` when
  set); `histogram_by_attribute(..., "gen_ai.client.operation.time_to_first_chunk",
  "gen_ai.request.model")`.
- vLLM prefix-cache hit rate: `increase_ratio(..., "vllm:prefix_cache_hits", "vllm:prefix_cache_queries")`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection


@dataclass
class MergedHistogram:
    """Explicit-bucket intervals merged over a range: counts per bucket of `bounds`."""

    bounds: list[float]
    bucket_counts: list[int]
    count: int = 0
    sum: float = 0.0
    layouts_skipped: int = 0
    points: int = 0

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-quantile (coarse: bucket resolution)."""
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        for index, bucket in enumerate(self.bucket_counts):
            seen += bucket
            if seen >= rank and bucket:
                return self.bounds[index] if index < len(self.bounds) else float("inf")
        return float("inf")


def histogram_by_attribute(
    project_id: int, metric: str, attribute: str, start: datetime, end: datetime
) -> dict[str, MergedHistogram]:
    """Explicit-histogram intervals of `metric` in [start, end), merged per value of a point
    attribute (e.g. TTFT per gen_ai.request.model). Points of another bucket layout than the
    first seen for a value are counted in `layouts_skipped`, never mixed in."""
    with connection.cursor() as cur:
        # Series by (project_id, name) index, then points by the primary key within the range's partitions.
        cur.execute(
            """
            SELECT s.attributes ->> %s, p.bounds, p.interval_buckets, p.interval_count, p.interval_sum
            FROM gpu_metric_series s
            JOIN gpu_metric_point p ON p.project_id = s.project_id AND p.series_id = s.series_id
            WHERE s.project_id = %s AND s.name = %s AND s.kind = 'histogram'
              AND p.time >= %s AND p.time < %s AND p.interval_buckets IS NOT NULL
            ORDER BY p.time
            """,
            [attribute, project_id, metric, start, end],
        )
        rows = cur.fetchall()
    merged: dict[str, MergedHistogram] = {}
    for value, bounds, buckets, count, total in rows:
        key = value or ""
        into = merged.get(key)
        if into is None:
            into = merged[key] = MergedHistogram(bounds=list(bounds), bucket_counts=[0] * len(buckets))
        if list(bounds) != into.bounds or len(buckets) != len(into.bucket_counts):
            into.layouts_skipped += 1
            continue
        into.bucket_counts = [a + b for a, b in zip(into.bucket_counts, buckets, strict=True)]
        into.count += count or 0
        into.sum += total or 0.0
        into.points += 1
    return merged


def increase_total(project_id: int, metric: str, start: datetime, end: datetime) -> float:
    """Sum of a counter's increases over [start, end), all its series together."""
    with connection.cursor() as cur:
        cur.execute(
            """
            SELECT coalesce(sum(p.increase), 0)
            FROM gpu_metric_series s
            JOIN gpu_metric_point p ON p.project_id = s.project_id AND p.series_id = s.series_id
            WHERE s.project_id = %s AND s.name = %s AND p.time >= %s AND p.time < %s
            """,
            [project_id, metric, start, end],
        )
        return float(cur.fetchone()[0])


def increase_ratio(project_id: int, numerator: str, denominator: str, start: datetime, end: datetime) -> float | None:
    """Δnumerator / Δdenominator over [start, end), e.g. prefix-cache hits / queries; None
    when the denominator did not grow."""
    bottom = increase_total(project_id, denominator, start, end)
    if bottom <= 0:
        return None
    return increase_total(project_id, numerator, start, end) / bottom
