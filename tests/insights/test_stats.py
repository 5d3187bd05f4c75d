"""apps/insights/stats.py: sketches and mixes put into scipy correctly (compared live with
scipy on the expanded samples, and with direct sums and definitions), and the hostile inputs:
empty windows, one bucket, all zeros, enormous counts give numbers, never NaN or inf."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from scipy.spatial.distance import jensenshannon

from apps.insights import stats
from apps.insights.episodes import benjamini_hochberg
from apps.rollups.sketch import ZERO_INDEX, bucket_index, bucket_values


def sketch_of(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    indexes = np.array([bucket_index(float(v)) for v in values])
    return tuple(np.unique(indexes, return_counts=True))  # type: ignore[return-value]


def expanded(sketch: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The sample a sketch stands for: each call at its bucket's representative value."""
    indexes, counts = sketch
    return np.repeat(bucket_values(np.asarray(indexes)), np.asarray(counts))


def lognormal_sketches(n: int, m: int, shift: float, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    rng = np.random.default_rng(seed)
    return sketch_of(rng.lognormal(5, 0.5, n)), sketch_of(rng.lognormal(5 + shift, 0.5, m))


# ------------------------------------------------------------------------------------ KS


@pytest.mark.parametrize(
    ("n", "m", "shift"),
    [(3, 5, 2.0), (20, 30, 0.3), (100, 400, 0.2), (800, 1500, 0.05), (10_000, 9_000, 0.02)],
)
def test_ks_on_sketches_is_scipys_exact_ks_on_the_bucket_values(n: int, m: int, shift: float) -> None:
    a, b = lognormal_sketches(n, m, shift, n)
    reference = scipy_stats.ks_2samp(expanded(a), expanded(b), method="exact")
    outcome = stats.ks_sketch(a, b)
    assert outcome.name == "ks"
    assert outcome.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert outcome.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    # Symmetric in its sides.
    assert stats.ks_sketch(b, a).p_value == pytest.approx(outcome.p_value, rel=1e-9)


@pytest.mark.parametrize(("n", "m", "shift"), [(20_000, 30_000, 0.0), (12_000, 50_000, 0.02), (40_000, 15_000, 0.05)])
def test_ks_beyond_the_exact_range_is_scipys_asymptotic_ks(n: int, m: int, shift: float) -> None:
    a, b = lognormal_sketches(n, m, shift, m)
    reference = scipy_stats.ks_2samp(expanded(a), expanded(b), method="asymp")
    outcome = stats.ks_sketch(a, b)
    assert outcome.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert outcome.p_value == pytest.approx(reference.pvalue, rel=1e-9, abs=1e-300)


def test_ks_on_sketches_is_close_to_ks_on_raw_values() -> None:
    # D on buckets compares the ECDFs at bucket edges only: off by at most the mass of one
    # 1%-wide bucket on either side.
    rng = np.random.default_rng(5)
    a, b = rng.lognormal(5, 0.5, 5000), rng.lognormal(5.03, 0.5, 20000)
    raw = scipy_stats.ks_2samp(a, b)
    outcome = stats.ks_sketch(sketch_of(a), sketch_of(b))
    assert abs(outcome.statistic - raw.statistic) <= 0.005
    assert outcome.p_value == pytest.approx(raw.pvalue, rel=0.5, abs=1e-4)


# ---------------------------------------------------------------------------- effect sizes


def test_wasserstein_log_is_scipys_and_the_area_between_the_cdfs() -> None:
    a, b = lognormal_sketches(3000, 5000, 0.3, 9)
    distance = stats.wasserstein_log(a, b)
    assert distance == pytest.approx(scipy_stats.wasserstein_distance(np.log1p(expanded(a)), np.log1p(expanded(b))))
    # By definition: the integral of |F_a - F_b| over log(1 + x).
    union = np.union1d(a[0], b[0])
    cdfs = []
    for indexes, counts in (a, b):
        mass = np.zeros(union.size)
        mass[np.searchsorted(union, indexes)] = counts
        cdfs.append(np.cumsum(mass) / mass.sum())
    area = np.sum(np.abs(cdfs[0] - cdfs[1])[:-1] * np.diff(np.log1p(bucket_values(union))))
    assert distance == pytest.approx(area, rel=1e-9)


def test_wasserstein_log_is_the_shift_of_log_values() -> None:
    rng = np.random.default_rng(7)
    a = rng.lognormal(5, 0.5, 20000)
    # 60% longer answers: log(1.6) = 0.47 in log units.
    assert stats.wasserstein_log(sketch_of(a), sketch_of(a * 1.6)) == pytest.approx(math.log(1.6), abs=0.01)
    assert stats.wasserstein_log(sketch_of(a), sketch_of(a)) == 0.0


def test_js_distance_is_scipys_on_the_shares() -> None:
    assert stats.js_distance({"a": 90, "b": 10}, {"a": 60, "b": 30, "c": 10}) == pytest.approx(
        jensenshannon([0.9, 0.1, 0.0], [0.6, 0.3, 0.1], base=2)
    )
    # The definition: sqrt of the mean KL divergence to the midpoint, in bits.
    p, q = np.array([0.9, 0.1, 0.0]), np.array([0.6, 0.3, 0.1])
    mid = (p + q) / 2
    kl = [float(np.sum(x[x > 0] * np.log2(x[x > 0] / mid[x > 0]))) for x in (p, q)]
    assert stats.js_distance({"a": 9, "b": 1}, {"a": 6, "b": 3, "c": 1}) == pytest.approx(math.sqrt(sum(kl) / 2))
    assert stats.js_distance({"a": 5}, {"a": 50}) == 0.0
    assert stats.js_distance({"a": 5}, {"b": 5}) == pytest.approx(1.0)


# ------------------------------------------------------------------------------ categorical


def test_chi2_mix_is_pearsons_statistic_with_scipys_tail() -> None:
    a, b = {"stop": 900, "length": 80, "tool_calls": 20}, {"stop": 700, "length": 250, "content_filter": 5}
    outcome = stats.chi2_mix(a, b)
    table = np.array([[900, 80, 20, 0], [700, 250, 0, 5]], dtype=float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    pearson = float(np.sum((table - expected) ** 2 / expected))
    assert outcome.name == "chi2"
    assert outcome.statistic == pytest.approx(pearson)
    assert outcome.p_value == pytest.approx(scipy_stats.chi2.sf(pearson, 3), rel=1e-9)
    # Two categories: no continuity correction either.
    two = stats.chi2_mix({"stop": 90, "length": 10}, {"stop": 80, "length": 20})
    assert two.statistic == pytest.approx(scipy_stats.chi2_contingency([[90, 10], [80, 20]], correction=False)[0])


def test_benjamini_hochberg_by_hand() -> None:
    # q_(i) = min over j >= i of p_(j) m / j, in the given order.
    p_values = [0.04, 0.001, 0.3, 0.01, 0.8, 0.02]
    assert benjamini_hochberg(p_values) == pytest.approx([0.06, 0.006, 0.36, 0.03, 0.8, 0.04])
    # Tests that came out unremarkable still count: 12 tests, these two the smallest.
    assert benjamini_hochberg([0.01, 0.001], tested=12) == pytest.approx([0.06, 0.012])
    assert benjamini_hochberg([]) == []
    assert benjamini_hochberg([float("nan"), 0.0]) == [1.0, 0.0]


# --------------------------------------------------------------------------- one-sided tests


def _binomial_tail_by_sum(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


@pytest.mark.parametrize(
    ("k", "n", "p"), [(5, 90, 0.01), (1, 10, 0.5), (10, 10, 0.5), (30, 300, 0.01), (3, 1000, 0.01), (60, 100, 0.5)]
)
def test_binomial_upper_tail_matches_the_sum(k: int, n: int, p: float) -> None:
    assert stats.binomial_upper_tail(k, n, p) == pytest.approx(_binomial_tail_by_sum(k, n, p), rel=1e-9)


def test_binomial_edges() -> None:
    assert stats.binomial_upper_tail(0, 10, 0.3) == 1.0
    assert stats.binomial_upper_tail(11, 10, 0.3) == 0.0
    assert stats.binomial_upper_tail(1, 10, 0.0) == 0.0
    assert stats.binomial_upper_tail(1, 10, 1.0) == 1.0
    # Far in the tail the answer stays a positive, tiny number (BH needs the order of it).
    assert 0.0 < stats.binomial_upper_tail(400, 5000, 0.01) < 1e-100


def test_fisher_for_thin_cells_matches_enumeration() -> None:
    # 3 of 10 current vs 1 of 20 baseline: the hypergeometric tail by hand.
    expected = sum(math.comb(10, x) * math.comb(20, 4 - x) / math.comb(30, 4) for x in range(3, 5))
    outcome = stats.rate_increase(events=3, calls=10, baseline_events=1, baseline_calls=20)
    assert outcome.name == "fisher" and outcome.statistic == 3.0
    assert outcome.p_value == pytest.approx(expected)


def test_two_proportion_z_for_ample_counts() -> None:
    outcome = stats.rate_increase(events=120, calls=1000, baseline_events=200, baseline_calls=4000)
    pooled = 320 / 5000
    z = (0.12 - 0.05) / math.sqrt(pooled * (1 - pooled) * (1 / 1000 + 1 / 4000))
    assert outcome.name == "two-proportion" and outcome.statistic == pytest.approx(z)
    assert outcome.p_value == pytest.approx(scipy_stats.norm.sf(z))
    same = stats.rate_increase(events=40, calls=4000, baseline_events=40, baseline_calls=4000)
    assert same.p_value == pytest.approx(0.5, abs=0.01)
    down = stats.rate_increase(events=10, calls=1000, baseline_events=40, baseline_calls=400)
    assert down.p_value > 0.99


def test_welch_is_scipys_one_sided_welch() -> None:
    baseline = [1.0, 1.2, 0.9, 1.1, 1.0, 0.95, 1.05, 1.1]
    current = [2.0, 2.1, 1.9, 2.2]
    outcome = stats.welch_greater(current, baseline)
    mean_now, mean_before = np.mean(current), np.mean(baseline)
    var_now, var_before = np.var(current, ddof=1) / 4, np.var(baseline, ddof=1) / 8
    t = (mean_now - mean_before) / math.sqrt(var_now + var_before)
    df = (var_now + var_before) ** 2 / (var_now**2 / 3 + var_before**2 / 7)
    assert outcome.statistic == pytest.approx(t) and outcome.p_value == pytest.approx(scipy_stats.t.sf(t, df))
    assert stats.welch_greater([1.0, 1.1, 0.9], baseline).p_value > 0.2
    with pytest.raises(ValueError, match="two values"):
        stats.welch_greater([1.0], baseline)


def test_new_value_pvalue() -> None:
    assert stats.new_value_pvalue(1000, 0.05) == pytest.approx(0.95**1000)
    assert stats.new_value_pvalue(0, 0.5) == 1.0
    assert stats.new_value_pvalue(10, 1.0) == 0.0


# ------------------------------------------------------------------------------ hostile input


def _evidence_safe(*values: float) -> bool:
    """Numbers PostgreSQL's jsonb (and strict JSON) accepts."""
    json.dumps(values, allow_nan=False)
    return True


def test_hostile_inputs_give_numbers_never_nan() -> None:
    empty = (np.empty(0, np.int64), np.empty(0, np.int64))
    one_bucket = ([bucket_index(200.0)], [500])
    zeros = ([ZERO_INDEX], [300])
    outcomes = [
        stats.ks_sketch(empty, empty),
        stats.ks_sketch(empty, one_bucket),
        stats.ks_sketch(one_bucket, one_bucket),
        stats.ks_sketch(zeros, zeros),
        stats.ks_sketch(([1, 2], [0, 0]), one_bucket),  # zero counts are an empty side
        stats.chi2_mix({}, {}),
        stats.chi2_mix({"stop": 5}, {"stop": 9}),
        stats.chi2_mix({"stop": 5, "length": 0}, {"stop": 9, "length": 0}),
        stats.rate_increase(events=0, calls=0, baseline_events=0, baseline_calls=0),
        stats.rate_increase(events=0, calls=100, baseline_events=0, baseline_calls=100),
        stats.rate_increase(events=100, calls=100, baseline_events=100, baseline_calls=100),
        stats.welch_greater([1.0, 1.0], [1.0, 1.0]),
    ]
    for outcome in outcomes:
        assert _evidence_safe(outcome.statistic, outcome.p_value)
        assert outcome.p_value == 1.0, outcome
    assert stats.wasserstein_log(empty, one_bucket) == 0.0
    assert stats.wasserstein_log(zeros, zeros) == 0.0
    assert stats.js_distance({}, {"stop": 3}) == 0.0
    assert stats.median(*empty) is None and stats.mean_log(*empty) is None
    # All-zero answers against ordinary ones: a full shift, D = 1.
    ordinary = ([bucket_index(100.0)], [300])
    shifted = stats.ks_sketch(zeros, ordinary)
    assert shifted.statistic == 1.0 and shifted.p_value < 1e-10
    assert stats.wasserstein_log(zeros, ordinary) == pytest.approx(math.log1p(100), rel=0.01)
    hist_a, hist_b = stats.common_histograms(zeros, ordinary)
    assert [x for x, _ in hist_a] == [x for x, _ in hist_b] and hist_a[0] == [0.0, 1.0]
    assert stats.common_histograms(empty, empty) == ([], [])
    # A constant step with no spread: certain, and still a finite statistic.
    step = stats.welch_greater([2.0, 2.0], [1.0, 1.0])
    assert step.p_value == 0.0 and _evidence_safe(step.statistic)


def test_enormous_counts() -> None:
    huge = 10**12
    a = ([100, 101, 102], [huge, huge, huge])
    b = ([100, 101, 102], [huge, huge, huge + 10**9])
    outcome = stats.ks_sketch(a, b)
    assert _evidence_safe(outcome.statistic, outcome.p_value) and 0.0 <= outcome.p_value <= 1.0
    far = stats.ks_sketch(a, ([300], [huge]))
    assert far.statistic == 1.0 and far.p_value == 0.0
    assert math.isfinite(stats.wasserstein_log(a, b))
    mix = stats.chi2_mix({"stop": huge, "length": huge}, {"stop": huge, "length": 2 * huge})
    assert _evidence_safe(mix.statistic) and mix.p_value == 0.0
    rise = stats.rate_increase(events=2 * huge, calls=10 * huge, baseline_events=huge, baseline_calls=10 * huge)
    assert rise.p_value == 0.0 and _evidence_safe(rise.statistic)
    assert stats.binomial_upper_tail(2 * huge, 10 * huge, 0.1) == 0.0
