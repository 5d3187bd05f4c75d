"""The statistics of the insights detectors, on scipy (docs/metrics.md, "Drift", "Regressions").

Everything here takes what the rollups keep, not raw spans: a distribution is a pair of
arrays (sketch bucket indexes, counts; apps/rollups/sketch.py), a categorical mix is a
{category: calls} mapping, a rate is (events, calls), a cost series is a list of hourly values.

The distribution functions and tests are scipy's (scipy.stats, scipy.spatial.distance);
what is ours is putting sketches into them and keeping their edge cases out of the evidence
JSON: an empty side, one bucket, all zeros or counts past 10^12 give a finite statistic and a
p-value in [0, 1] (1 when there is nothing to compare), never NaN or inf.

- KS on sketches: both empirical CDFs are exact at every bucket's upper edge, so D computed
  there is the KS statistic of the samples with each value replaced by its bucket, which is
  what scipy.stats.ks_2samp computes on the repeated bucket indexes. Up to KS_EXACT_MAX_N
  calls a side that is what we call (scipy's own cut-over: its exact p-value, ties made
  conservative); beyond, D from the CDFs and scipy's asymptotic branch,
  kstwo.sf(D, round(n m / (n + m))), without materialising millions of values.
- Effect sizes: Wasserstein-1 distance between the two distributions of log(1 + x) (the
  shift of a typical value in log units: 0.1 ~ 10% longer), Jensen-Shannon distance (base 2,
  0..1) between two mixes.
- One-sided "got worse" tests for regressions: binomial upper tail, two proportions (pooled
  z, Fisher's exact test when a cell is thin), Welch's t.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats
from scipy.spatial.distance import jensenshannon

from apps.rollups.sketch import bucket_values

# scipy.stats.ks_2samp computes the exact p-value while the larger sample has at most this
# many values (its MAX_AUTO_N), the asymptotic one beyond; we follow the same cut-over.
KS_EXACT_MAX_N = 10_000
# Below this many expected events (or non-events) in a cell of a 2 x 2 table, the normal
# approximation of the two-proportion test is poor and Fisher's exact test is used instead.
MIN_EXPECTED = 5.0


@dataclass(frozen=True)
class Outcome:
    """One test's result: its statistic, p-value and the name the evidence JSON records."""

    statistic: float
    p_value: float
    name: str = ""


Counts = Sequence[int] | np.ndarray
Sketch = tuple[Counts, Counts]  # (bucket indexes, counts)


def probability(value: float) -> float:
    """A p-value as evidence can hold it: NaN (scipy's "undefined") reads 1, clipped to [0, 1]."""
    value = float(value)
    return 1.0 if math.isnan(value) else min(1.0, max(0.0, value))


def finite(value: float) -> float:
    """A statistic as evidence can hold it: NaN reads 0, +-inf the largest float."""
    value = float(value)
    return 0.0 if math.isnan(value) else float(np.clip(value, -np.finfo(float).max, np.finfo(float).max))


# --------------------------------------------------------------------------- distributions


def _as_arrays(indexes: Counts, counts: Counts) -> tuple[np.ndarray, np.ndarray]:
    idx = np.asarray(indexes, dtype=np.int64)
    cnt = np.asarray(counts, dtype=np.float64)
    keep = cnt > 0
    return idx[keep], cnt[keep]


def _aligned_cdfs(a: Sketch, b: Sketch) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """(union of bucket indexes ascending, CDF of a, CDF of b at each, n_a, n_b)."""
    idx_a, cnt_a = _as_arrays(*a)
    idx_b, cnt_b = _as_arrays(*b)
    union = np.union1d(idx_a, idx_b)
    mass_a = np.zeros(union.size)
    mass_b = np.zeros(union.size)
    # np.add.at: an index may appear twice in an unmerged input.
    np.add.at(mass_a, np.searchsorted(union, idx_a), cnt_a)
    np.add.at(mass_b, np.searchsorted(union, idx_b), cnt_b)
    n_a, n_b = float(mass_a.sum()), float(mass_b.sum())
    cdf_a = np.cumsum(mass_a) / n_a if n_a else np.zeros(union.size)
    cdf_b = np.cumsum(mass_b) / n_b if n_b else np.zeros(union.size)
    return union, cdf_a, cdf_b, n_a, n_b


def ks_sketch(a: Sketch, b: Sketch) -> Outcome:
    """Two-sided two-sample KS test of two sketched distributions (indexes, counts).

    An empty side gives D = 0, p = 1 (nothing to compare)."""
    _union, cdf_a, cdf_b, n_a, n_b = _aligned_cdfs(a, b)
    if not n_a or not n_b:
        return Outcome(0.0, 1.0, "ks")
    whole = float(n_a).is_integer() and float(n_b).is_integer()
    if whole and max(n_a, n_b) <= KS_EXACT_MAX_N:
        idx_a, cnt_a = _as_arrays(*a)
        idx_b, cnt_b = _as_arrays(*b)
        with warnings.catch_warnings():
            # ks_2samp warns when its exact computation falls back to the asymptotic one.
            warnings.simplefilter("ignore", RuntimeWarning)
            result = scipy_stats.ks_2samp(
                np.repeat(idx_a, cnt_a.astype(np.int64)), np.repeat(idx_b, cnt_b.astype(np.int64)), method="exact"
            )
        return Outcome(finite(result.statistic), probability(result.pvalue), "ks")
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    return Outcome(d, ks_asymptotic_pvalue(d, n_a, n_b), "ks")


def ks_asymptotic_pvalue(d: float, n_a: float, n_b: float) -> float:
    """ks_2samp's asymptotic two-sided p-value: the exact one-sample law of D at the
    effective size round(n_a n_b / (n_a + n_b))."""
    if d <= 0 or n_a <= 0 or n_b <= 0:
        return 1.0
    effective = max(1.0, float(np.round(n_a * n_b / (n_a + n_b))))
    return probability(scipy_stats.kstwo.sf(min(d, 1.0), effective))


def wasserstein_log(a: Sketch, b: Sketch) -> float:
    """W1 distance between the laws of log(1 + x) of two sketched distributions (0 when a
    side is empty). Values are bucket representatives (0.5% relative error: at most 0.005
    in log units)."""
    idx_a, cnt_a = _as_arrays(*a)
    idx_b, cnt_b = _as_arrays(*b)
    if not cnt_a.size or not cnt_b.size:
        return 0.0
    distance = scipy_stats.wasserstein_distance(
        np.log1p(bucket_values(idx_a)), np.log1p(bucket_values(idx_b)), u_weights=cnt_a, v_weights=cnt_b
    )
    return finite(distance)


def mean_log(indexes: Counts, counts: Counts) -> float | None:
    """Mean of log(1 + x): a side's typical value, for titles (None when empty)."""
    idx, cnt = _as_arrays(indexes, counts)
    if not cnt.sum():
        return None
    return float(np.average(np.log1p(bucket_values(idx)), weights=cnt))


def median(indexes: Counts, counts: Counts) -> float | None:
    """The bucket representative holding the median (None when empty)."""
    idx, cnt = _as_arrays(indexes, counts)
    total = cnt.sum()
    if not total:
        return None
    order = np.argsort(idx)
    idx, cnt = idx[order], cnt[order]
    position = min(int(np.searchsorted(np.cumsum(cnt), total / 2.0)), idx.size - 1)
    return float(bucket_values(idx[position : position + 1])[0])


def common_histograms(a: Sketch, b: Sketch, per_decade: int = 20) -> tuple[list[list[float]], list[list[float]]]:
    """Both distributions as [[x, share], ...] on one common x (log-wide buckets placed at their
    geometric middle, 0 for zeros), for overlay charts; every x of either side is on both."""
    zero_slot = -(2**40)
    slots_of: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for indexes, counts in (a, b):
        idx, cnt = _as_arrays(indexes, counts)
        values = bucket_values(idx)
        with np.errstate(divide="ignore"):
            slots = np.where(values > 0, np.floor(np.log10(np.where(values > 0, values, 1.0)) * per_decade), zero_slot)
        slots_of.append(slots.astype(np.int64))
        weights.append(cnt)
    union = np.unique(np.concatenate(slots_of))
    xs = np.where(union == zero_slot, 0.0, np.power(10.0, (union + 0.5) / per_decade))
    out: list[list[list[float]]] = []
    for slots, cnt in zip(slots_of, weights, strict=True):
        mass = np.zeros(union.size)
        if slots.size:
            np.add.at(mass, np.searchsorted(union, slots), cnt)
        total = mass.sum()
        share = mass / total if total else mass
        out.append([[round(float(x), 4), round(float(s), 6)] for x, s in zip(xs, share, strict=True)])
    return out[0], out[1]


# --------------------------------------------------------------------------- categorical


def _mix_arrays(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    keys = sorted(k for k in set(a) | set(b) if (a.get(k, 0) or 0) > 0 or (b.get(k, 0) or 0) > 0)
    return (
        keys,
        np.array([max(0.0, float(a.get(k, 0) or 0)) for k in keys]),
        np.array([max(0.0, float(b.get(k, 0) or 0)) for k in keys]),
    )


def chi2_mix(a: Mapping[str, float], b: Mapping[str, float]) -> Outcome:
    """Pearson's chi-square test of homogeneity of two category mixes (a 2 x K table of
    counts, no continuity correction). Categories absent from both are dropped; fewer than
    two left, or an empty side, gives statistic 0 and p = 1."""
    keys, counts_a, counts_b = _mix_arrays(a, b)
    if len(keys) < 2 or not counts_a.sum() or not counts_b.sum():
        return Outcome(0.0, 1.0, "chi2")
    result = scipy_stats.chi2_contingency(np.vstack([counts_a, counts_b]), correction=False)
    return Outcome(finite(result.statistic), probability(result.pvalue), "chi2")


def js_distance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (base 2, 0 = same mix, 1 = disjoint) of two mixes; 0 when a
    side is empty."""
    _keys, counts_a, counts_b = _mix_arrays(a, b)
    if not counts_a.sum() or not counts_b.sum():
        return 0.0
    return min(1.0, finite(jensenshannon(counts_a, counts_b, base=2)))


def shares(mix: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(v for v in mix.values() if v and v > 0))
    if not total:
        return {}
    return {k: round(float(v) / total, 6) for k, v in sorted(mix.items(), key=lambda kv: (-kv[1], kv[0])) if v > 0}


def new_value_pvalue(n_baseline: float, share_now: float) -> float:
    """The chance that a value taking `share_now` of calls goes unseen in `n_baseline`
    independent baseline calls: (1 - share)^n. Small when the value is truly new."""
    if n_baseline <= 0 or share_now <= 0:
        return 1.0
    if share_now >= 1:
        return 0.0
    return probability(math.exp(n_baseline * math.log1p(-share_now)))


# --------------------------------------------------------------------------- one-sided tests


def binomial_upper_tail(k: float, n: float, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p); stays a positive tiny number far in the tail (the
    false-discovery control ranks by it)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return probability(scipy_stats.binom.sf(k - 1, n, p))


def rate_increase(*, events: float, calls: float, baseline_events: float, baseline_calls: float) -> Outcome:
    """Is the current rate events/calls above the baseline's? One-sided.

    The pooled two-proportion z test (name "two-proportion", statistic z), or Fisher's exact
    test (name "fisher", statistic: the current events) when an expected cell is under
    MIN_EXPECTED. An empty side, or a pooled rate of 0 or 1, gives p = 1."""
    if calls <= 0 or baseline_calls <= 0:
        return Outcome(0.0, 1.0, "two-proportion")
    pooled = (events + baseline_events) / (calls + baseline_calls)
    if pooled <= 0 or pooled >= 1:
        return Outcome(0.0, 1.0, "two-proportion")
    expected = min(calls, baseline_calls) * min(pooled, 1 - pooled)
    if expected < MIN_EXPECTED:
        table = [[int(events), int(calls - events)], [int(baseline_events), int(baseline_calls - baseline_events)]]
        result = scipy_stats.fisher_exact(table, alternative="greater")
        return Outcome(float(events), probability(result.pvalue), "fisher")
    standard_error = math.sqrt(pooled * (1 - pooled) * (1 / calls + 1 / baseline_calls))
    z = (events / calls - baseline_events / baseline_calls) / standard_error
    return Outcome(finite(z), probability(scipy_stats.norm.sf(z)), "two-proportion")


def paired_log_rise(current: Sequence[float | None], weeks: Sequence[Sequence[float | None]]) -> Outcome:
    """Whether hourly values rose against the same hours of earlier weeks, on log values.

    `current[i]` is hour i of the window; `weeks[k][i]` the same hour k + 1 weeks earlier
    (None or <= 0: no value). Each current hour is compared with its own hours' mean, so the
    daily cycle inside the window is not noise: d_i = log c_i - mean_k log b_ki. The spread
    under no change comes from the baseline itself, each week against the mean of the others
    (leave-one-out residuals, rescaled to d's variance); the statistic is Student's t of the
    mean d (one-sided, greater), with the residuals' degrees of freedom. Needs >= 2 hours with
    >= 2 baseline values, and >= 3 residuals."""
    logs = [[math.log(v) if v and v > 0 else None for v in week] for week in weeks]
    deviations: list[float] = []
    residuals: list[float] = []
    for i, value in enumerate(current):
        earlier = [week[i] for week in logs if i < len(week) and week[i] is not None]
        if len(earlier) >= 3:
            total = sum(earlier)  # type: ignore[arg-type]
            k = len(earlier)
            for each in earlier:
                rest = (total - each) / (k - 1)  # type: ignore[operator]
                residuals.append((each - rest) / math.sqrt(1 + 1 / (k - 1)))  # type: ignore[operator]
        if value is None or value <= 0 or len(earlier) < 2:
            continue
        k = len(earlier)
        deviations.append((math.log(value) - sum(earlier) / k) / math.sqrt(1 + 1 / k))  # type: ignore[arg-type]
    if len(deviations) < 2 or len(residuals) < 3:
        raise ValueError("the paired test needs two hours with earlier weeks and three baseline residuals")
    sigma = math.sqrt(sum(r * r for r in residuals) / len(residuals))
    mean = sum(deviations) / len(deviations)
    if sigma == 0:
        return Outcome(finite(math.inf if mean > 0 else 0.0), 0.0 if mean > 0 else 1.0, "paired-log-t")
    t = mean / (sigma / math.sqrt(len(deviations)))
    return Outcome(finite(t), probability(scipy_stats.t.sf(t, df=len(residuals))), "paired-log-t")


def welch_greater(current: Sequence[float], baseline: Sequence[float]) -> Outcome:
    """Welch's t test, one-sided (current mean greater). Needs >= 2 values per side."""
    if len(current) < 2 or len(baseline) < 2:
        raise ValueError("Welch's test needs at least two values on each side")
    now, before = np.asarray(current, np.float64), np.asarray(baseline, np.float64)
    if not now.var() and not before.var():
        # No spread on either side (scipy answers NaN): the means differ or they do not.
        return Outcome(finite(math.inf), 0.0, "welch") if now.mean() > before.mean() else Outcome(0.0, 1.0, "welch")
    with warnings.catch_warnings():
        # Nearly constant samples: scipy warns of precision loss; the result is still usable.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy_stats.ttest_ind(now, before, equal_var=False, alternative="greater")
    return Outcome(finite(result.statistic), probability(result.pvalue), "welch")
