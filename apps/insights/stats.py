"""Two-sample statistics on rolled-up data, for the drift detector (docs/metrics.md, "Drift").

Everything here takes what the rollups keep, not raw spans: a distribution is a pair of
arrays (sketch bucket indexes, counts; apps/rollups/sketch.py), a categorical mix is a
{category: calls} mapping, a rate is (events, calls).

numpy only: scipy is not among the project's locked requirements (the detector must run in
the production image), so the few distribution functions needed are written here, small,
from their textbook definitions, and tested against scipy's values (tests/insights).

- KS on sketches: the empirical CDFs of both samples are exact at every bucket's upper edge,
  so D computed there is the KS statistic of the samples with each value replaced by its
  bucket (identical to ks_2samp on the bucket representatives). The p-value is exact (lattice
  path count, values assumed continuous: ties only make it conservative) when n*m is small,
  else the Kolmogorov limit with Stephens' small-sample correction.
- Effect sizes: Wasserstein-1 distance between the two distributions of log(1 + x) (the
  shift of a typical value in log units: 0.1 ~ 10% longer), Jensen-Shannon distance (base 2,
  0..1) between two mixes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from apps.rollups.sketch import bucket_values

# Exact KS p-values while n*m is at most this (a few ms of numpy); the limit beyond.
KS_EXACT_MAX_CELLS = 2_000_000


@dataclass(frozen=True)
class TestOutcome:
    statistic: float
    p_value: float


Counts = Sequence[int] | np.ndarray
Sketch = tuple[Counts, Counts]  # (bucket indexes, counts)


def _as_arrays(indexes: Counts, counts: Counts) -> tuple[np.ndarray, np.ndarray]:
    idx = np.asarray(indexes, dtype=np.int64)
    cnt = np.asarray(counts, dtype=np.float64)
    keep = cnt > 0
    return idx[keep], cnt[keep]


def _aligned_cdfs(
    a: Sketch,
    b: Sketch,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
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


def ks_sketch(
    a: Sketch,
    b: Sketch,
) -> TestOutcome:
    """Two-sided two-sample KS test of two sketched distributions (indexes, counts).

    An empty side gives D = 0, p = 1 (nothing to compare), never NaN."""
    _union, cdf_a, cdf_b, n_a, n_b = _aligned_cdfs(a, b)
    if not n_a or not n_b:
        return TestOutcome(0.0, 1.0)
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    return TestOutcome(d, ks_2samp_pvalue(d, n_a, n_b))


def ks_2samp_pvalue(d: float, n_a: float, n_b: float) -> float:
    """P(D >= d) for two independent samples of sizes n_a, n_b from one continuous law."""
    if d <= 0 or n_a <= 0 or n_b <= 0:
        return 1.0
    if d >= 1:
        d = 1.0
    if n_a * n_b <= KS_EXACT_MAX_CELLS and float(n_a).is_integer() and float(n_b).is_integer():
        return _ks_exact(d, int(n_a), int(n_b))
    return _ks_limit(d, n_a, n_b)


def _ks_exact(d: float, n: int, m: int) -> float:
    """Exact P(D >= d): the share of the C(n+m, n) monotone lattice paths from (0,0) to (n,m)
    that leave the band |i/n - j/m| < d, all orderings of the pooled sample being equally
    likely under the null. Rows are rescaled as they go (counts overflow floats past ~1000)."""
    if n > m:
        n, m = m, n
    # D * n * m is an integer for a D that two samples of these sizes can produce; the band
    # is |i*m - j*n| < h. Rounding absorbs the float error of d.
    h = round(d * n * m)
    if h <= 0:
        return 1.0
    j = np.arange(m + 1)
    # Row 0: one path to each cell up to the first that leaves the band.
    row = np.cumprod(np.abs(j * n) < h).astype(np.float64)
    log_scale = 0.0
    for i in range(1, n + 1):
        # paths[i][j] = paths[i-1][j] + paths[i][j-1] inside the band, 0 outside. The band is
        # one run of j per row and the cells before it are 0, so a row is the cumulative sum
        # of the row below taken over the band.
        inside = np.abs(i * m - j * n) < h
        row = np.where(inside, np.cumsum(np.where(inside, row, 0.0)), 0.0)
        peak = row.max()
        if peak <= 0:
            return 1.0
        row /= peak
        log_scale += math.log(peak)
    if row[m] <= 0:
        return 1.0
    log_inside = math.log(row[m]) + log_scale
    log_all = math.lgamma(n + m + 1) - math.lgamma(n + 1) - math.lgamma(m + 1)
    return float(min(1.0, max(0.0, 1.0 - math.exp(log_inside - log_all))))


def _ks_limit(d: float, n_a: float, n_b: float) -> float:
    """The Kolmogorov limit of P(D >= d), with Stephens' correction of the scale for finite
    samples (effective size n_a*n_b/(n_a+n_b))."""
    en = n_a * n_b / (n_a + n_b)
    root = math.sqrt(en)
    lam = (root + 0.12 + 0.11 / root) * d
    return kolmogorov_sf(lam)


def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution; each series where it converges fast."""
    if lam <= 0:
        return 1.0
    if lam < 1.0:
        # P(K <= lam) = sqrt(2 pi) / lam * sum_k exp(-(2k-1)^2 pi^2 / (8 lam^2))
        total = sum(math.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * lam * lam)) for k in range(1, 8))
        return float(min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / lam * total)))
    total = sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return float(min(1.0, max(0.0, 2.0 * total)))


def wasserstein_log(
    a: Sketch,
    b: Sketch,
) -> float:
    """W1 distance between the laws of log(1 + x) of two sketched distributions (0 when a
    side is empty). Values are bucket representatives (0.5% relative error: at most 0.005
    in log units)."""
    union, cdf_a, cdf_b, n_a, n_b = _aligned_cdfs(a, b)
    if not n_a or not n_b or union.size < 2:
        return 0.0
    positions = np.log1p(bucket_values(union))
    return float(np.sum(np.abs(cdf_a[:-1] - cdf_b[:-1]) * np.diff(positions)))


def mean_log(indexes: Counts, counts: Counts) -> float | None:
    """Mean of log(1 + x): a side's typical value, for titles (None when empty)."""
    idx, cnt = _as_arrays(indexes, counts)
    if not cnt.sum():
        return None
    return float(np.sum(np.log1p(bucket_values(idx)) * cnt) / cnt.sum())


def median(indexes: Counts, counts: Counts) -> float | None:
    """The bucket representative holding the median (None when empty)."""
    idx, cnt = _as_arrays(indexes, counts)
    total = cnt.sum()
    if not total:
        return None
    order = np.argsort(idx)
    idx, cnt = idx[order], cnt[order]
    position = int(np.searchsorted(np.cumsum(cnt), total / 2.0))
    return float(bucket_values(idx[min(position, idx.size - 1) : min(position, idx.size - 1) + 1])[0])


# --------------------------------------------------------------------------- categorical


def _mix_arrays(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    keys = sorted(k for k in set(a) | set(b) if (a.get(k, 0) or 0) > 0 or (b.get(k, 0) or 0) > 0)
    return (
        keys,
        np.array([float(a.get(k, 0) or 0) for k in keys]),
        np.array([float(b.get(k, 0) or 0) for k in keys]),
    )


def chi2_mix(a: Mapping[str, float], b: Mapping[str, float]) -> TestOutcome:
    """Pearson's chi-square test of homogeneity of two category mixes (a 2 x K table of
    counts). Categories absent from both are dropped; fewer than two left, or an empty side,
    gives statistic 0 and p = 1."""
    keys, counts_a, counts_b = _mix_arrays(a, b)
    n_a, n_b = counts_a.sum(), counts_b.sum()
    if len(keys) < 2 or not n_a or not n_b:
        return TestOutcome(0.0, 1.0)
    table = np.vstack([counts_a, counts_b])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return TestOutcome(statistic, chi2_sf(statistic, len(keys) - 1))


def js_distance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (base 2, 0 = same mix, 1 = disjoint) of two mixes; 0 when a
    side is empty."""
    _keys, counts_a, counts_b = _mix_arrays(a, b)
    if not counts_a.sum() or not counts_b.sum():
        return 0.0
    p = counts_a / counts_a.sum()
    q = counts_b / counts_b.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nonzero = x > 0
        return float(np.sum(x[nonzero] * np.log2(x[nonzero] / m[nonzero])))

    return float(math.sqrt(max(0.0, (kl(p) + kl(q)) / 2)))


def shares(mix: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(v for v in mix.values() if v and v > 0))
    if not total:
        return {}
    return {k: round(float(v) / total, 6) for k, v in sorted(mix.items(), key=lambda kv: (-kv[1], kv[0])) if v > 0}


def two_proportion_increase(k_base: float, n_base: float, k_now: float, n_now: float) -> TestOutcome:
    """One-sided pooled two-proportion z-test that the current rate k_now/n_now is above the
    baseline's. z = 0, p = 1 when a side is empty or the pooled rate is 0 or 1."""
    if n_base <= 0 or n_now <= 0:
        return TestOutcome(0.0, 1.0)
    pooled = (k_base + k_now) / (n_base + n_now)
    if pooled <= 0 or pooled >= 1:
        return TestOutcome(0.0, 1.0)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_base + 1 / n_now))
    z = (k_now / n_now - k_base / n_base) / se
    return TestOutcome(float(z), normal_sf(z))


def new_value_pvalue(n_baseline: float, share_now: float) -> float:
    """The chance that a value taking `share_now` of calls goes unseen in `n_baseline`
    independent baseline calls: (1 - share)^n. Small when the value is truly new."""
    if n_baseline <= 0 or share_now <= 0:
        return 1.0
    if share_now >= 1:
        return 0.0
    return float(math.exp(n_baseline * math.log1p(-share_now)))


# --------------------------------------------------------------------------- distributions


def normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X ~ chi-square(dof): the regularized upper incomplete gamma Q(dof/2, x/2)."""
    if x <= 0:
        return 1.0
    return _gamma_q(dof / 2.0, x / 2.0)


def _gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma function Q(a, x), a > 0, x > 0: the power series
    of P below x < a + 1, Legendre's continued fraction (modified Lentz) above."""
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        denominator = a
        for _ in range(10_000):
            denominator += 1
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return float(min(1.0, max(0.0, 1.0 - total * math.exp(log_prefix))))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-15:
            break
    return float(min(1.0, max(0.0, math.exp(log_prefix) * h)))


def common_histograms(
    a: Sketch,
    b: Sketch,
    per_decade: int = 20,
) -> tuple[list[list[float]], list[list[float]]]:
    """Both distributions as [[x, share], ...] on one common x (log-wide buckets placed at their
    geometric middle, 0 for zeros), for overlay charts; every x of either side is on both."""
    values: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for indexes, counts in (a, b):
        idx, cnt = _as_arrays(indexes, counts)
        values.append(bucket_values(idx))
        weights.append(cnt)
    slots_of = []
    for vals in values:
        with np.errstate(divide="ignore"):
            slots = np.where(vals > 0, np.floor(np.log10(np.where(vals > 0, vals, 1.0)) * per_decade), -(2**40))
        slots_of.append(slots.astype(np.int64))
    union = np.union1d(*slots_of) if all(s.size for s in slots_of) else np.concatenate(slots_of)
    union = np.unique(union)
    xs = np.where(union == -(2**40), 0.0, np.power(10.0, (union + 0.5) / per_decade))
    out: list[list[list[float]]] = []
    for slots, cnt in zip(slots_of, weights, strict=True):
        mass = np.zeros(union.size)
        if slots.size:
            np.add.at(mass, np.searchsorted(union, slots), cnt)
        total = mass.sum()
        share = mass / total if total else mass
        out.append([[round(float(x), 4), round(float(s), 6)] for x, s in zip(xs, share, strict=True)])
    return out[0], out[1]
