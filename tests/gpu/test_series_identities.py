"""The decoder's per-process cache of series identities gives every point the id and stored
attributes the uncached computation gives, for values Python equality would confuse
(1 == 1.0 == True) and ones JSON would (NaN and the infinities are all null)."""

from __future__ import annotations

import math
import time

from collectors.metric_records import SeriesIdentities, series_hash, series_identities
from collectors.otlp_metrics import PointLimits, decode_metrics_protobuf
from tests.gpu.helpers import gauge, now_ns, request_of


def limits() -> PointLimits:
    # Taken when a test decodes, not when the module is imported: the suite may run for
    # many minutes between the two, and points made meanwhile would be "in the future".
    return PointLimits(now_ns=time.time_ns(), max_future_ns=60 * 10**9, oldest_ns=0)


RESOURCE = {"service.name": "support-api", "host.name": "node-1"}
# Equal (and equal-hashing) as Python values, distinct series as sent: 1 == 1.0 == True.
LOOKALIKES: list[dict[str, object]] = [{"gpu.index": 1}, {"gpu.index": 1.0}, {"gpu.index": True}, {"gpu.index": "1"}]


def _decoded(attributes: dict[str, object]) -> tuple[int, dict[str, object]]:
    body = request_of([gauge("hw.gpu.utilization", [(now_ns(), 0.5)], attributes)], RESOURCE)
    points, rejected = decode_metrics_protobuf(body, limits())
    assert rejected == []
    [point] = points
    return point.series_id, point.attributes


def test_lookalike_values_are_distinct_series_however_often_they_repeat() -> None:
    for _ in range(3):  # the second and third rounds are served from the cache
        ids = [_decoded(attributes)[0] for attributes in LOOKALIKES]
        assert ids == [series_hash("hw.gpu.utilization", RESOURCE, attributes) for attributes in LOOKALIKES]
        assert len(set(ids)) == len(LOOKALIKES)


def test_non_finite_values_stay_distinct_series() -> None:
    for _ in range(2):
        seen = {value: _decoded({"reading": value}) for value in (math.nan, math.inf, -math.inf)}
        assert len({series_id for series_id, _ in seen.values()}) == 3
        assert seen[math.inf][1] == {"reading": "inf"}


def test_attributes_are_capped_the_same_from_the_cache() -> None:
    cache = SeriesIdentities(max_value_chars=8, max_total_chars=64)
    prefix = b"m\0{}\0"
    first = cache.add(prefix, b"wire", {"long": "x" * 100})
    assert cache.get(prefix, b"wire") == first
    assert cache.get(b"other\0{}\0", b"wire") is None
    assert first[1]["long"] == "x" * 8


def test_another_limit_pair_gets_its_own_cache() -> None:
    # Tests and settings may change the attribute limits: a capped value from one must not
    # be served under another.
    assert series_identities(8, 64) is not series_identities(1024, 16384)
    assert series_identities(8, 64) is series_identities(8, 64)


def test_a_full_cache_starts_over() -> None:
    cache = SeriesIdentities(max_value_chars=1024, max_total_chars=16384, max_entries=2)
    prefix = b"m\0{}\0"
    results = [cache.add(prefix, bytes([index]), {"i": index}) for index in range(5)]
    assert len(cache._ids) <= 2
    assert cache.get(prefix, bytes([4])) == results[4]
    assert cache.get(prefix, bytes([0])) is None


def test_the_series_a_decoded_point_gets_is_the_hash_of_its_attributes_with_or_without_the_cache() -> None:
    attributes = {"gpu.index": 3, "hw.id": "GPU-3", "ratio": 0.25, "on": False}
    first = _decoded(attributes)
    assert first == _decoded(attributes)  # the second from the cache
    assert first[0] == series_hash("hw.gpu.utilization", RESOURCE, attributes)
