"""Reset-aware increases: the one function family behind OTLP cumulative sums and histograms
and scraped Prometheus counters."""

from __future__ import annotations

import pytest

from collectors.counters import Reading, counter_increase, downscale, fill_interval, increases, ratio_of_increases
from collectors.metric_records import EXPONENTIAL_HISTOGRAM, HISTOGRAM, SUM, MetricPoint


def test_increase_is_the_difference_between_readings() -> None:
    assert counter_increase(Reading(5, 100), Reading(5, 130)) == 30


def test_a_value_that_drops_is_a_restart_counted_from_zero() -> None:
    # No start time (a Prometheus counter without _created): only the drop tells.
    assert counter_increase(Reading(0, 1000), Reading(0, 40)) == 40


def test_a_new_start_time_is_a_restart_even_when_the_value_grew() -> None:
    assert counter_increase(Reading(1, 100), Reading(2, 150)) == 150


def test_an_up_down_counter_may_go_down_without_restarting() -> None:
    assert counter_increase(Reading(1, 100), Reading(1, 60), monotonic=False) == -40
    assert counter_increase(Reading(1, 100), Reading(2, 60), monotonic=False) == 60


def test_first_reading_counts_only_when_its_start_is_known_and_the_source_says_so() -> None:
    assert counter_increase(None, Reading(7, 12)) == 12
    assert counter_increase(None, Reading(0, 12)) is None
    assert counter_increase(None, Reading(7, 12), first_counts=False) is None


def test_increases_over_a_sequence_with_two_restarts() -> None:
    readings = [Reading(0, v) for v in (10, 15, 3, 9, 9, 1)]
    assert increases(readings) == [None, 5, 3, 6, 0, 1]


def test_prefix_cache_hit_rate_survives_a_server_restart() -> None:
    # vLLM restarts between the 2nd and 3rd scrape: its counters start again from zero.
    queries = [Reading(100, 10_000), Reading(100, 14_000), Reading(200, 1_000)]
    hits = [Reading(100, 6_000), Reading(100, 9_000), Reading(200, 400)]
    assert ratio_of_increases(hits, queries) == pytest.approx((3_000 + 400) / (4_000 + 1_000))
    # Without reset handling the naive answer would be (400 - 6000) / (1000 - 10000): nonsense.
    assert ratio_of_increases(hits[:1], queries[:1]) is None


def _hist(start: int, buckets: list[int], total: float, bounds: list[float] | None = None) -> MetricPoint:
    return MetricPoint(
        name="h", kind=HISTOGRAM, unit="s", resource={}, attributes={}, time_ns=1, start_ns=start, temporality=2,
        monotonic=True, count=sum(buckets), sum=total, bounds=bounds or [0.1, 1.0], bucket_counts=buckets,
    )  # fmt: skip


def test_histogram_interval_per_bucket() -> None:
    previous, current = _hist(5, [1, 2, 0], 1.5), _hist(5, [3, 2, 1], 4.0)
    fill_interval(previous, current)
    assert (current.interval_count, current.interval_sum, current.interval_buckets) == (3, 2.5, [2, 0, 1])


@pytest.mark.parametrize(
    "current",
    [
        _hist(6, [3, 2, 1], 4.0),  # new start time
        _hist(5, [0, 1, 0], 0.5),  # count dropped
        _hist(5, [1, 0, 5], 9.0),  # a bucket dropped, the count did not
        _hist(5, [3, 2, 1], 4.0, bounds=[0.5, 1.0]),  # new bucket layout
    ],
)
def test_histogram_reset_makes_the_point_its_own_interval(current: MetricPoint) -> None:
    fill_interval(_hist(5, [1, 2, 0], 1.5), current)
    assert current.interval_buckets == current.bucket_counts
    assert current.interval_count == current.count


def test_delta_points_are_their_own_interval() -> None:
    point = MetricPoint(name="c", kind=SUM, unit="", resource={}, attributes={}, time_ns=1, temporality=1, value=4.0)
    fill_interval(None, point)
    assert point.increase == 4.0


def test_downscale_merges_pairs_of_buckets() -> None:
    # Scale s -> s-1: bucket i goes to i >> 1 (floor, so negative indexes too).
    assert downscale(-3, [1, 1, 1, 1, 1], 1) == (-2, [1, 2, 2])
    assert downscale(4, [1, 2, 3, 4], 2) == (1, [10])


def _exp(scale: int, offset: int, counts: list[int], start: int = 5) -> MetricPoint:
    return MetricPoint(
        name="e", kind=EXPONENTIAL_HISTOGRAM, unit="s", resource={}, attributes={}, time_ns=1, start_ns=start,
        temporality=2, monotonic=True, count=sum(counts), sum=float(sum(counts)), scale=scale, zero_count=0,
        positive_offset=offset, positive_counts=counts, negative_offset=0, negative_counts=[],
    )  # fmt: skip


def test_exponential_interval_after_the_sdk_rescaled() -> None:
    # The SDK went from scale 3 to scale 2 between exports: the previous buckets are merged
    # down to scale 2 before subtracting.
    previous = _exp(3, 8, [1, 1, 2, 0])  # scale-2 indexes 4, 4, 5, 5 -> [2, 2] at offset 4
    current = _exp(2, 3, [1, 3, 5, 1])  # indexes 3..6
    fill_interval(previous, current)
    assert current.interval_buckets == [1, 1, 3, 1]
    assert current.interval_count == 6
    assert current.positive_offset == 3


def test_exponential_finer_scale_is_a_restart() -> None:
    current = _exp(4, 0, [2])
    fill_interval(_exp(3, 0, [1]), current)
    assert current.interval_buckets == [2]
