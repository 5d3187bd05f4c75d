"""When did it start: change points in a slice's hourly series, by binary segmentation.

The regression detector knows *that* a slice moved (current hours against the same hours of
earlier weeks); this module says *when*. Its input is an hourly series over the last few
days (share of calls above the baseline's p99, error rate, log cost per task), with None for
hours that had too few calls to say anything.

Method: binary segmentation under a Gaussian mean-shift model. A segment is split at the
point that most reduces the sum of squared deviations from the segment means; the split is
kept when that reduction exceeds a penalty of PENALTY_FACTOR x sigma^2 x ln(n) (BIC is
2 sigma^2 ln n; we ask for more, because a false onset on a finding is worse than a late
one), and both halves are searched again. Sigma is the noise level, estimated from the
mean square of successive differences (a step adds to one difference only, so the estimate
is barely moved by the very changes we look for, and unlike a median-based estimate it does
not collapse to 0 on series that are mostly 0, such as hourly error rates).

Why not `ruptures`: it is not installed here (neither is scipy), and the whole method is
the forty lines below, tested on synthetic series in tests/insights/test_changepoint.py.

Cost: O(n) per split with cumulative sums, so O(n x changes); n is a few hundred hours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

PENALTY_FACTOR = 4.0
# On the binomial deviance scale (no estimated noise level to hedge against): the largest
# deviance of a split of a change-free series of ~72 hours stays under ~10 (tested).
BINOMIAL_PENALTY_FACTOR = 3.0
# The fewest points on each side of a change: one odd hour is not a new level.
MIN_SEGMENT = 2


def noise_sigma(values: np.ndarray) -> float:
    """Noise level of a series from its successive differences: sqrt(mean(diff^2) / 2)."""
    if values.size < 2:
        return 0.0
    return float(math.sqrt(float(np.mean(np.diff(values) ** 2)) / 2.0))


def change_points(
    values: Sequence[float | None], *, penalty_factor: float = PENALTY_FACTOR, min_size: int = MIN_SEGMENT
) -> list[int]:
    """Indexes (into `values`) where a new level begins, ascending; [] when there is none.

    None marks a missing hour: it is skipped (the series is segmented over the hours that
    have values) and a change found between two present hours is placed at the later one.
    """
    positions = [index for index, value in enumerate(values) if value is not None and math.isfinite(value)]
    present = np.array([values[index] for index in positions], dtype=np.float64)
    n = present.size
    if n < 2 * min_size:
        return []
    sigma = noise_sigma(present)
    # A perfectly flat stretch has no noise: any step in it is real, but only a step.
    variance = max(sigma**2, 1e-12 * max(1.0, float(np.mean(present**2))))
    penalty = penalty_factor * variance * math.log(n)
    found: list[int] = []
    stack = [(0, n)]
    while stack:
        start, end = stack.pop()
        split = _best_split(present[start:end], min_size, penalty)
        if split is None:
            continue
        found.append(start + split)
        stack.extend([(start, start + split), (start + split, end)])
    return sorted(positions[point] for point in found)


def _best_split(segment: np.ndarray, min_size: int, penalty: float) -> int | None:
    """The split of one segment that reduces the squared error most, if by more than `penalty`."""
    n = segment.size
    if n < 2 * min_size:
        return None
    total = segment.sum()
    left_sums = np.cumsum(segment)[min_size - 1 : n - min_size]  # sums of the first k values
    left_sizes = np.arange(min_size, n - min_size + 1, dtype=np.float64)
    right_sizes = n - left_sizes
    # Reduction of the squared error by splitting after k values: n1 n2 / n (mean1 - mean2)^2.
    difference = left_sums / left_sizes - (total - left_sums) / right_sizes
    reduction = left_sizes * right_sizes / n * difference**2
    best = int(np.argmax(reduction))
    if reduction[best] <= penalty:
        return None
    return best + min_size


def segment_means(values: Sequence[float | None], points: Sequence[int]) -> list[float]:
    """The mean of the present values of each segment that `points` cut `values` into."""
    bounds = [0, *points, len(values)]
    means = []
    for start, end in pairwise(bounds):
        present = [value for value in values[start:end] if value is not None and math.isfinite(value)]
        means.append(float(np.mean(present)) if present else math.nan)
    return means


def onset(
    values: Sequence[float | None], *, direction: int = 1, penalty_factor: float = PENALTY_FACTOR,
    min_size: int = MIN_SEGMENT,
) -> int | None:  # fmt: skip
    """Where the series' current level began, if it got there by moving in `direction`
    (+1 up, -1 down): the earliest change point of the final run of steps in that direction
    (a level that climbed in two steps began at the first). None when the last change was
    the other way or there is no change."""
    points = change_points(values, penalty_factor=penalty_factor, min_size=min_size)
    if not points:
        return None
    means = segment_means(values, points)
    began = None
    for number in range(len(points), 0, -1):
        step = means[number] - means[number - 1]
        if not step * direction > 0:
            break
        began = points[number - 1]
    return began


def _binomial_log_likelihood(events: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """Maximised Bernoulli log-likelihood of segments with these totals (0 log 0 = 0)."""
    rate = np.divide(events, trials, out=np.zeros_like(events), where=trials > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        hits = np.where(events > 0, events * np.log(rate), 0.0)
        misses = np.where(trials - events > 0, (trials - events) * np.log1p(-rate), 0.0)
    return np.asarray(hits + misses)


def binomial_change_points(
    events: Sequence[int], trials: Sequence[int], *, penalty_factor: float = BINOMIAL_PENALTY_FACTOR,
    min_size: int = MIN_SEGMENT,
) -> list[int]:  # fmt: skip
    """Change points of a rate measured as events out of trials per hour (errors of calls,
    calls above a percentile of calls), by binary segmentation on the binomial deviance
    (2 x the log-likelihood gain of a split) against BINOMIAL_PENALTY_FACTOR x ln(n). Each hour
    weighs by its trials, so quiet night hours count for little; hours without trials are
    missing. No noise level to estimate: the binomial model gives it."""
    positions = [index for index, n in enumerate(trials) if n > 0]
    hits = np.array([events[index] for index in positions], dtype=np.float64)
    calls = np.array([trials[index] for index in positions], dtype=np.float64)
    if hits.size < 2 * min_size:
        return []
    penalty = penalty_factor * math.log(hits.size)
    found: list[int] = []
    stack = [(0, hits.size)]
    while stack:
        start, end = stack.pop()
        n = end - start
        if n < 2 * min_size:
            continue
        left_hits = np.cumsum(hits[start:end])[min_size - 1 : n - min_size]
        left_calls = np.cumsum(calls[start:end])[min_size - 1 : n - min_size]
        all_hits, all_calls = hits[start:end].sum(), calls[start:end].sum()
        gain = (
            _binomial_log_likelihood(left_hits, left_calls)
            + _binomial_log_likelihood(all_hits - left_hits, all_calls - left_calls)
            - _binomial_log_likelihood(np.array([all_hits]), np.array([all_calls]))[0]
        )
        best = int(np.argmax(gain))
        if 2 * gain[best] <= penalty:
            continue
        split = start + best + min_size
        found.append(split)
        stack.extend([(start, split), (split, end)])
    return sorted(positions[point] for point in found)


def binomial_onset(
    events: Sequence[int],
    trials: Sequence[int],
    *,
    direction: int = 1,
    penalty_factor: float = BINOMIAL_PENALTY_FACTOR,
) -> int | None:
    """onset() for a rate of events out of trials: where its current level began."""
    points = binomial_change_points(events, trials, penalty_factor=penalty_factor)
    if not points:
        return None
    bounds = [0, *points, len(trials)]
    means = []
    for start, end in pairwise(bounds):
        total = sum(trials[start:end])
        means.append(sum(events[start:end]) / total if total else math.nan)
    began = None
    for number in range(len(points), 0, -1):
        if not (means[number] - means[number - 1]) * direction > 0:
            break
        began = points[number - 1]
    return began
