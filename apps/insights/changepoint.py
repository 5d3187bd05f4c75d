"""When did it start: change points in a slice's hourly series.

The detectors know *that* a slice moved (current hours against a baseline); this module says
*when*. Two methods, both small and tested on synthetic series (tests/insights/test_changepoint.py):

- Scans against a known baseline (rate_onset, mean_onset), for what a baseline of weeks
  measures well: rates (calls above the baseline's p99, errors, a finish reason's share) and
  per-call means (log output tokens). For every hour h, how unlikely is everything from h to
  the end under the baseline (exact binomial tail; normal tail of a mean)? The least likely
  tail begins at the onset. This is the generalised likelihood ratio of one change to an
  unknown level, with the level before it known: at tens of calls an hour and a few percent
  of them shifted (the simulator's p99 regression), the known baseline is what makes the
  onset placeable; segmentation that estimates both levels from the thin series cannot.
  The price: a baseline that misjudges the series' normal level (a daily cycle the baseline's
  hours do not see) pulls the onset earlier; such a shift present from the first hour is not
  placed at all.
- Binary segmentation under a Gaussian mean-shift model (change_points, onset), for series
  without a per-call baseline (log hourly cost). A segment is split at the point that most
  reduces the sum of squared deviations from the segment means; the split is kept when that
  reduction exceeds PENALTY_FACTOR x sigma^2 x ln(n) (BIC is 2 sigma^2 ln n; we ask for more,
  because a false onset on a finding is worse than a late one), and both halves are searched
  again. Sigma comes from the mean square of successive differences (a step adds to one
  difference only, and unlike a median-based estimate it does not collapse to 0 on series
  that are mostly 0).

Why not `ruptures`: it is not installed, and each method is a few dozen lines on numpy and
scipy's distribution functions. Cost: O(n) per scan, O(n x changes) per segmentation; n is
a few hundred hours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from scipy import stats as scipy_stats

PENALTY_FACTOR = 4.0
# A scan's onset is claimed when its tail is this unlikely under the baseline after trying
# every hour of the series (Bonferroni over the hours).
ONSET_ALPHA = 0.01
# Baseline rates are kept inside (0, 1): a baseline without a single event does not make
# one event certain proof.
RATE_LIMIT = 1e-6
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


def _claim(positions: Sequence[int], log_p: np.ndarray, alpha: float) -> int | None:
    """The scan's answer: the hour whose tail is least likely under the baseline, if that
    is surprising after trying every hour (Bonferroni) and is not the series' first hour (a
    shift already there when the series begins started before it: not placeable)."""
    if log_p.size < 2:
        return None
    best = int(np.argmin(log_p))
    if best == 0 or log_p[best] > math.log(alpha / log_p.size):
        return None
    return positions[best]


def rate_onset(
    events: Sequence[int], trials: Sequence[int], baseline_rate: float, *, direction: int = 1,
    alpha: float = ONSET_ALPHA,
) -> int | None:  # fmt: skip
    """Where a rate (errors of calls, calls above the baseline percentile of calls) left its
    baseline level for good, in `direction` (+1 up, -1 down); None when no hour qualifies.

    A scan of the last segment against the known baseline: for each hour h, the exact
    binomial tail probability of the events from h to the end under `baseline_rate` (weeks
    of calls measured it: a known null, not one estimated from the thin series). The onset
    is the hour whose tail is least likely. Every hour weighs by its calls, hours without
    calls are skipped, and no pooling of thin hours is needed: a sum of binomials with one
    rate is binomial, so the tail's probability is exact whatever the hourly counts.
    """
    positions = [index for index, n in enumerate(trials) if n > 0]
    hits = np.array([events[index] for index in positions], dtype=np.float64)
    calls = np.array([trials[index] for index in positions], dtype=np.float64)
    rate = min(max(float(baseline_rate), RATE_LIMIT), 1.0 - RATE_LIMIT)
    tail_hits, tail_calls = np.cumsum(hits[::-1])[::-1], np.cumsum(calls[::-1])[::-1]
    if direction > 0:
        log_p = scipy_stats.binom.logsf(tail_hits - 1, tail_calls, rate)
    else:
        log_p = scipy_stats.binom.logcdf(tail_hits, tail_calls, rate)
    log_p = np.nan_to_num(np.asarray(log_p, np.float64), nan=0.0, neginf=-np.inf)
    # Far tails underflow to log 0 = -inf (thousands of calls an hour, a large shift), and
    # ties at -inf would put the onset at the first of them; there the Chernoff exponent,
    # -n KL(observed || baseline), which the log tail approaches, ranks them instead.
    beyond = ~np.isfinite(log_p)
    if beyond.any():
        observed = np.clip(tail_hits[beyond] / tail_calls[beyond], RATE_LIMIT, 1.0 - RATE_LIMIT)
        divergence = observed * np.log(observed / rate) + (1 - observed) * np.log((1 - observed) / (1 - rate))
        log_p[beyond] = -tail_calls[beyond] * divergence
    return _claim(positions, log_p, alpha)


def mean_onset(
    means: Sequence[float | None], counts: Sequence[float], baseline_mean: float, baseline_sd: float, *,
    direction: int = 1, alpha: float = ONSET_ALPHA,
) -> int | None:  # fmt: skip
    """rate_onset() for a per-call value (log output tokens, log latency) known hourly as
    (mean, calls): the tail's z score against the baseline's mean and per-call spread, its
    normal tail probability. Hours without a mean or calls are skipped."""
    positions = [
        index for index, (mean, n) in enumerate(zip(means, counts, strict=True))
        if mean is not None and math.isfinite(mean) and n > 0
    ]  # fmt: skip
    if not positions or not baseline_sd > 0:
        return None
    sums = np.array([float(means[index]) * counts[index] for index in positions])  # type: ignore[arg-type]
    calls = np.array([counts[index] for index in positions], dtype=np.float64)
    tail_sums, tail_calls = np.cumsum(sums[::-1])[::-1], np.cumsum(calls[::-1])[::-1]
    z = direction * (tail_sums - tail_calls * baseline_mean) / (baseline_sd * np.sqrt(tail_calls))
    return _claim(positions, np.asarray(scipy_stats.norm.logsf(z), np.float64), alpha)
