"""The drift statistics against reference values (scipy 1.17's, computed on the same inputs:
scipy is not in the project's locks, so its figures are written down here) and on raw samples,
and the hostile inputs: empty windows, one bucket, all zeros, enormous counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from apps.insights import stats
from apps.insights.episodes import benjamini_hochberg
from apps.rollups.sketch import ZERO_INDEX, bucket_index


def sketch_of(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    indexes = np.array([bucket_index(float(v)) for v in values])
    return tuple(np.unique(indexes, return_counts=True))  # type: ignore[return-value]


def raw_ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample D on raw values: the ECDFs compared at every pooled value."""
    pooled = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), pooled, side="right") / a.size
    cdf_b = np.searchsorted(np.sort(b), pooled, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


# (n, m, D) -> scipy.stats.ks_2samp's exact two-sided p-value for that D.
EXACT_KS = [
    (3, 5, 1.0, 0.03571428571428571),
    (20, 30, 0.4, 0.03452032044186146),
    (50, 50, 0.2, 0.2719135601522248),
    (100, 400, 0.235, 0.00024750512724225685),
    (800, 1500, 0.0705, 0.010575867051856907),
]


@pytest.mark.parametrize(("n", "m", "d", "expected"), EXACT_KS)
def test_exact_ks_pvalue_matches_scipy(n: int, m: int, d: float, expected: float) -> None:
    assert stats.ks_2samp_pvalue(d, n, m) == pytest.approx(expected, rel=1e-6)
    assert stats.ks_2samp_pvalue(d, m, n) == pytest.approx(expected, rel=1e-6)


def test_asymptotic_ks_pvalue_is_close_to_scipys_for_large_samples() -> None:
    # scipy's asymptotic two-sample p-value for n=5000, m=40000, D=0.0309: 0.0004036.
    assert stats.ks_2samp_pvalue(0.0309, 5000, 40000) == pytest.approx(0.0004036, rel=0.05)


@pytest.mark.parametrize(
    ("lam", "expected"),
    [(0.2, 0.999999999999495), (0.5, 0.9639452436648751), (0.9, 0.3927307079406543), (1.0, 0.26999967167735456),
     (1.5, 0.022217962616525127), (3.0, 3.045995948942526e-08)],
)  # fmt: skip
def test_kolmogorov_sf_matches_scipy_kstwobign(lam: float, expected: float) -> None:
    assert stats.kolmogorov_sf(lam) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("x", "dof", "expected"),
    [(3.2, 1, 0.07363827012030258), (10, 4, 0.04042768199451279), (100, 50, 3.454931382984871e-05),
     (0.5, 7, 0.9994464813904249), (300, 3, 9.948758346327588e-65)],
)  # fmt: skip
def test_chi2_sf_matches_scipy(x: float, dof: int, expected: float) -> None:
    assert stats.chi2_sf(x, dof) == pytest.approx(expected, rel=1e-9)


def test_js_distance_matches_scipy() -> None:
    # scipy.spatial.distance.jensenshannon([.9, .1, 0], [.6, .3, .1], base=2)
    assert stats.js_distance({"a": 90, "b": 10}, {"a": 60, "b": 30, "c": 10}) == pytest.approx(0.33095532820483803)
    assert stats.js_distance({"a": 5}, {"a": 50}) == 0.0
    assert stats.js_distance({"a": 5}, {"b": 5}) == pytest.approx(1.0)


def test_benjamini_hochberg_matches_scipy_false_discovery_control() -> None:
    p = [0.001, 0.01, 0.02, 0.04, 0.3, 0.8]
    assert benjamini_hochberg(p) == pytest.approx([0.006, 0.03, 0.04, 0.06, 0.36, 0.8])
    # Tests that came out unremarkable still count: 12 tests, these two the smallest.
    assert benjamini_hochberg([0.001, 0.01], tested=12) == pytest.approx([0.012, 0.06])


@pytest.mark.parametrize(("n", "m", "shift"), [(20, 30, 0.3), (100, 400, 0.2), (800, 1500, 0.05), (5000, 20000, 0.03)])
def test_ks_from_sketches_is_close_to_ks_on_raw_values(n: int, m: int, shift: float) -> None:
    rng = np.random.default_rng(n)
    a = rng.lognormal(5, 0.5, n)
    b = rng.lognormal(5 + shift, 0.5, m)
    outcome = stats.ks_sketch(sketch_of(a), sketch_of(b))
    raw_d = raw_ks_statistic(a, b)
    # D on buckets compares the ECDFs at bucket edges only: off by at most the mass of one
    # 1%-wide bucket, a few thousandths here.
    assert abs(outcome.statistic - raw_d) <= 0.005
    raw_p = stats.ks_2samp_pvalue(raw_d, n, m)
    assert outcome.p_value == pytest.approx(raw_p, rel=0.5, abs=1e-4)


def test_wasserstein_log_is_the_shift_of_log_values() -> None:
    rng = np.random.default_rng(7)
    a = rng.lognormal(5, 0.5, 20000)
    # 60% longer answers: log(1.6) = 0.47 in log units.
    assert stats.wasserstein_log(sketch_of(a), sketch_of(a * 1.6)) == pytest.approx(math.log(1.6), abs=0.01)
    assert stats.wasserstein_log(sketch_of(a), sketch_of(a)) == 0.0


def test_two_proportion_and_new_value() -> None:
    up = stats.two_proportion_increase(10, 1000, 40, 400)
    assert up.statistic > 5 and up.p_value < 1e-6
    down = stats.two_proportion_increase(40, 400, 10, 1000)
    assert down.p_value > 0.99
    assert stats.new_value_pvalue(1000, 0.05) == pytest.approx(0.95**1000)
    assert stats.new_value_pvalue(0, 0.5) == 1.0
    assert stats.new_value_pvalue(10, 1.0) == 0.0


def test_hostile_inputs_give_numbers_never_nan() -> None:
    empty = (np.empty(0, np.int64), np.empty(0, np.int64))
    one_bucket = ([bucket_index(200.0)], [500])
    zeros = ([ZERO_INDEX], [300])
    outcomes = [
        stats.ks_sketch(empty, empty),
        stats.ks_sketch(empty, one_bucket),
        stats.ks_sketch(one_bucket, one_bucket),
        stats.ks_sketch(zeros, zeros),
        stats.chi2_mix({}, {}),
        stats.chi2_mix({"stop": 5}, {"stop": 9}),
        stats.two_proportion_increase(0, 0, 0, 0),
        stats.two_proportion_increase(0, 100, 0, 100),
        stats.two_proportion_increase(100, 100, 100, 100),
    ]
    for outcome in outcomes:
        assert math.isfinite(outcome.statistic) and outcome.p_value == 1.0
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


def test_enormous_counts() -> None:
    huge = 10**12
    a = ([100, 101, 102], [huge, huge, huge])
    b = ([100, 101, 102], [huge, huge, huge + 10**9])
    outcome = stats.ks_sketch(a, b)
    assert math.isfinite(outcome.statistic) and 0.0 <= outcome.p_value <= 1.0
    far = stats.ks_sketch(a, ([300], [huge]))
    assert far.statistic == 1.0 and far.p_value == 0.0
    mix = stats.chi2_mix({"stop": huge, "length": huge}, {"stop": huge, "length": 2 * huge})
    assert math.isfinite(mix.statistic) and mix.p_value == 0.0
    assert stats.two_proportion_increase(huge, 10 * huge, 2 * huge, 10 * huge).p_value == 0.0
