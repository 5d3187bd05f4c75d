"""Reset-aware increases of cumulative counters and histograms.

One function family for every cumulative source: OTLP cumulative sums and histograms, and
counters scraped from vLLM's or DCGM's /metrics. A counter resets when the process behind
it restarts; the reset shows as a new start time (OTLP `start_time_unix_nano`, Prometheus
`_created`) or, when the source gives none, as a value that went down. After a reset the
increase over the interval is the new value itself (counted from zero since the restart),
as Prometheus' rate() does; the part counted between the last reading and the restart is
lost, and cannot be known.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from collectors.metric_records import EXPONENTIAL_HISTOGRAM, HISTOGRAM, SUM, MetricPoint


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading of a cumulative counter: its start (0 if unknown) and its value."""

    start_ns: int
    value: float


def is_reset(previous: Reading, current: Reading, *, monotonic: bool = True) -> bool:
    if current.start_ns and previous.start_ns and current.start_ns != previous.start_ns:
        return True
    # An up-down counter may go down without restarting; only its start time tells.
    return monotonic and current.value < previous.value


def counter_increase(
    previous: Reading | None, current: Reading, *, monotonic: bool = True, first_counts: bool = True
) -> float | None:
    """The increase from `previous` to `current`, or None when there is no baseline.

    With no previous reading, the value counts as the increase only when the source says
    when it started counting (`first_counts` and a start time); otherwise it is a baseline.
    """
    if previous is None:
        return current.value if first_counts and current.start_ns else None
    if is_reset(previous, current, monotonic=monotonic):
        return current.value
    return current.value - previous.value


def increases(readings: Iterable[Reading], *, first_counts: bool = False) -> list[float | None]:
    """Per-interval increases of a time-ordered sequence of readings of one counter."""
    out: list[float | None] = []
    previous: Reading | None = None
    for reading in readings:
        out.append(counter_increase(previous, reading, first_counts=first_counts))
        previous = reading
    return out


def ratio_of_increases(numerator: Sequence[Reading], denominator: Sequence[Reading]) -> float | None:
    """Δnumerator / Δdenominator over the readings' span, resets included (e.g. prefix-cache
    hit rate = Δhits / Δqueries). None when the denominator did not increase."""
    top = sum(value for value in increases(numerator) if value is not None)
    bottom = sum(value for value in increases(denominator) if value is not None)
    return top / bottom if bottom > 0 else None


# --------------------------------------------------------------------------- points


def fill_interval(previous: MetricPoint | None, current: MetricPoint) -> None:
    """Set `current`'s interval fields from the previous point of the same cumulative series.

    Delta points are their own interval. Gauges have none.
    """
    if current.kind == SUM:
        if current.temporality != 2:
            current.increase = current.value
            return
        assert current.value is not None
        previous_reading = Reading(previous.start_ns, previous.value or 0.0) if previous is not None else None
        current.increase = counter_increase(
            previous_reading,
            Reading(current.start_ns, current.value),
            monotonic=current.monotonic,
            first_counts=current.first_counts,
        )
    elif current.kind == HISTOGRAM:
        _histogram_interval(previous, current)
    elif current.kind == EXPONENTIAL_HISTOGRAM:
        _exponential_interval(previous, current)


def _copy_as_interval(point: MetricPoint) -> None:
    point.interval_count = point.count
    point.interval_sum = point.sum
    if point.kind == HISTOGRAM:
        point.interval_buckets = list(point.bucket_counts or [])
    else:
        point.interval_buckets = list(point.positive_counts or [])
        point.interval_negative = list(point.negative_counts or [])
        point.interval_zero_count = point.zero_count


def _no_interval(point: MetricPoint) -> None:
    point.interval_count = point.interval_sum = point.interval_zero_count = None
    point.interval_buckets = point.interval_negative = None


def _baseline_or_reset(previous: MetricPoint | None, current: MetricPoint) -> bool:
    """True when `current` is its own interval (delta, reset, or counted first reading);
    sets no interval at all for a first reading that is only a baseline."""
    if current.temporality != 2:
        _copy_as_interval(current)
        return True
    if previous is None:
        if current.first_counts and current.start_ns:
            _copy_as_interval(current)
        else:
            _no_interval(current)
        return True
    if current.start_ns and previous.start_ns and current.start_ns != previous.start_ns:
        _copy_as_interval(current)
        return True
    if (current.count or 0) < (previous.count or 0):
        _copy_as_interval(current)
        return True
    return False


def _histogram_interval(previous: MetricPoint | None, current: MetricPoint) -> None:
    if _baseline_or_reset(previous, current):
        return
    assert previous is not None
    now_counts = current.bucket_counts or []
    then_counts = previous.bucket_counts or []
    if (current.bounds or []) != (previous.bounds or []) or len(now_counts) != len(then_counts):
        # New bucket layout: the counts cannot be subtracted, so the series started over.
        _copy_as_interval(current)
        return
    buckets = [now - then for now, then in zip(now_counts, then_counts, strict=True)]
    if any(delta < 0 for delta in buckets):
        _copy_as_interval(current)
        return
    current.interval_buckets = buckets
    current.interval_count = (current.count or 0) - (previous.count or 0)
    current.interval_sum = None if current.sum is None or previous.sum is None else current.sum - previous.sum


def downscale(offset: int, counts: Sequence[int], shift: int) -> tuple[int, list[int]]:
    """Exponential-histogram buckets at a scale `shift` steps coarser: bucket i goes to i >> shift."""
    if shift == 0 or not counts:
        return offset, list(counts)
    first = offset >> shift
    last = (offset + len(counts) - 1) >> shift
    merged = [0] * (last - first + 1)
    for position, count in enumerate(counts):
        merged[((offset + position) >> shift) - first] += count
    return first, merged


def _subtract_buckets(
    now_offset: int, now: Sequence[int], then_offset: int, then: Sequence[int]
) -> tuple[int, list[int]] | None:
    """now - then, index by index, over now's range; None when `then` does not fit in it or
    any bucket went down (a reset)."""
    if not then:
        return now_offset, list(now)
    if (then_offset < now_offset or then_offset + len(then) > now_offset + len(now)) and any(then):
        return None
    result = list(now)
    for position, count in enumerate(then):
        index = then_offset + position - now_offset
        if count == 0:
            continue
        if not 0 <= index < len(result):
            return None
        result[index] -= count
        if result[index] < 0:
            return None
    return now_offset, result


def _exponential_interval(previous: MetricPoint | None, current: MetricPoint) -> None:
    if _baseline_or_reset(previous, current):
        return
    assert previous is not None
    now_scale, then_scale = current.scale or 0, previous.scale or 0
    if now_scale > then_scale:
        # A cumulative exponential histogram only ever gets coarser; finer means it restarted.
        _copy_as_interval(current)
        return
    shift = then_scale - now_scale
    then_pos_offset, then_pos = downscale(previous.positive_offset or 0, previous.positive_counts or [], shift)
    then_neg_offset, then_neg = downscale(previous.negative_offset or 0, previous.negative_counts or [], shift)
    positive = _subtract_buckets(current.positive_offset or 0, current.positive_counts or [], then_pos_offset, then_pos)
    negative = _subtract_buckets(current.negative_offset or 0, current.negative_counts or [], then_neg_offset, then_neg)
    zero = (current.zero_count or 0) - (previous.zero_count or 0)
    if positive is None or negative is None or zero < 0:
        _copy_as_interval(current)
        return
    current.interval_buckets = positive[1]
    current.interval_negative = negative[1]
    current.interval_zero_count = zero
    current.interval_count = (current.count or 0) - (previous.count or 0)
    current.interval_sum = None if current.sum is None or previous.sum is None else current.sum - previous.sum
