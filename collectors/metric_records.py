"""Canonical metric points: what the OTLP metrics decoder, the Prometheus scraper and the GPU
sampler all produce, whatever the bytes looked like.

Pure Python; no Django. `apps.gpu.store` writes these to the metric points table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from collectors.capping import cap_attributes

# Point kinds (the OTLP Metric data oneof, by its field name).
GAUGE = "gauge"
SUM = "sum"
HISTOGRAM = "histogram"
EXPONENTIAL_HISTOGRAM = "exponential_histogram"
KINDS = (GAUGE, SUM, HISTOGRAM, EXPONENTIAL_HISTOGRAM)

# OTLP AggregationTemporality values; a gauge has none.
TEMPORALITY_UNSPECIFIED, TEMPORALITY_DELTA, TEMPORALITY_CUMULATIVE = 0, 1, 2


@dataclass(slots=True)
class MetricPoint:
    """One data point of one metric series, as sent.

    Times are unix nanoseconds; `start_ns` is 0 when the source gave none (a gauge, a scraped
    counter without `_created`). Histogram bucket counts are per bucket (not cumulative as in
    Prometheus' `le` buckets): `bucket_counts[i]` counts values in (bounds[i-1], bounds[i]].
    The interval fields are filled by the store from the previous reading of the series
    (collectors.counters): None until then, or when there is no baseline.
    """

    name: str
    kind: str
    unit: str
    resource: dict[str, Any]
    attributes: dict[str, Any]
    time_ns: int
    start_ns: int = 0
    temporality: int = TEMPORALITY_UNSPECIFIED
    monotonic: bool = False
    scope_name: str = ""
    description: str = ""
    # gauge and sum
    value: float | None = None
    # histogram and exponential histogram
    count: int | None = None
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    bounds: list[float] | None = None
    bucket_counts: list[int] | None = None
    scale: int | None = None
    zero_count: int | None = None
    positive_offset: int | None = None
    positive_counts: list[int] | None = None
    negative_offset: int | None = None
    negative_counts: list[int] | None = None
    # Whether the first reading of a cumulative series counts from its start time (OTLP: the
    # SDK accumulated it since start_ns) or is only a baseline (a scraped server that was up
    # long before we looked).
    first_counts: bool = True
    # Per-interval increase (set by the store): sums and the histograms' count/sum/buckets.
    increase: float | None = None
    interval_count: int | None = None
    interval_sum: float | None = None
    interval_buckets: list[int] | None = None
    interval_zero_count: int | None = None
    interval_negative: list[int] | None = None
    series_id: int = 0

    @property
    def is_cumulative(self) -> bool:
        return self.kind != GAUGE and self.temporality == TEMPORALITY_CUMULATIVE


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def resource_key(resource: dict[str, Any]) -> bytes:
    """The resource's part of series identities; computed once per resource in a batch."""
    return _dumps(resource)


def series_prefix(name: str, resource: dict[str, Any] | bytes) -> bytes:
    """The metric name and resource part of series identities (one per metric in a batch)."""
    return name.encode() + b"\0" + (resource if isinstance(resource, bytes) else _dumps(resource)) + b"\0"


def series_hash_from(prefix: bytes, attributes: dict[str, Any]) -> int:
    digest = hashlib.blake2b(prefix + _dumps(attributes), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def series_hash(name: str, resource: dict[str, Any] | bytes, attributes: dict[str, Any]) -> int:
    """A series' identity: metric name + resource + point attributes, as a signed 64-bit id.

    Key order does not matter (sorted before hashing). 64 bits keep the points table's key
    narrow; a collision needs ~4 billion series in one project to become likely.
    """
    return series_hash_from(series_prefix(name, resource), attributes)


class SeriesIdentities:
    """Series ids and stored attributes of the point attributes seen before, per process.

    Every export of a fleet repeats the same series, so decoding, capping, sorted JSON and
    hashing a point's attributes are done once per series rather than once per point. The
    key is the metric's series prefix and the attributes exactly as they came on the wire
    (the decoder uses each KeyValue's serialised bytes): the same bytes always decode to the
    same attributes, so a hit can never be another series' id; differently encoded equal
    attributes are only separate entries with the same value.

    Entries are pure functions of their key: threads that race on one compute the same value,
    and a miss only costs the slow path. The cache starts over when full.
    """

    def __init__(self, max_value_chars: int, max_total_chars: int, max_entries: int = 100_000) -> None:
        self.max_value_chars = max_value_chars
        self.max_total_chars = max_total_chars
        self.max_entries = max_entries
        self._ids: dict[tuple[bytes, bytes], tuple[int, dict[str, Any]]] = {}

    def get(self, prefix: bytes, wire_key: bytes) -> tuple[int, dict[str, Any]] | None:
        return self._ids.get((prefix, wire_key))

    def add(self, prefix: bytes, wire_key: bytes, attributes: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The series id under `prefix` (series_prefix) of the decoded `attributes`, and the
        attributes as stored (capped); remembered under `wire_key`."""
        capped = cap_attributes(attributes, self.max_value_chars, self.max_total_chars)
        found = (series_hash_from(prefix, capped), capped)
        if len(self._ids) >= self.max_entries:
            self._ids.clear()
        self._ids[(prefix, wire_key)] = found
        return found


_identities: dict[tuple[int, int], SeriesIdentities] = {}


def series_identities(max_value_chars: int, max_total_chars: int) -> SeriesIdentities:
    """This process's cache for one pair of attribute limits (settings rarely change; tests do)."""
    limits = (max_value_chars, max_total_chars)
    cache = _identities.get(limits)
    if cache is None:
        cache = _identities.setdefault(limits, SeriesIdentities(max_value_chars, max_total_chars))
    return cache
