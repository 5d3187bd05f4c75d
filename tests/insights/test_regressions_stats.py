"""The regression detector's tests against direct sums and textbook values (no database)."""

from __future__ import annotations

import math

import pytest

from apps.insights.significance import (
    betainc,
    binomial_upper_tail,
    fisher_greater,
    t_upper_tail,
    two_proportion_greater,
    welch_greater,
)


def _binomial_tail_by_sum(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


@pytest.mark.parametrize(
    ("k", "n", "p"), [(5, 90, 0.01), (1, 10, 0.5), (10, 10, 0.5), (30, 300, 0.01), (3, 1000, 0.01), (60, 100, 0.5)]
)
def test_binomial_upper_tail_matches_the_sum(k: int, n: int, p: float) -> None:
    assert binomial_upper_tail(k, n, p) == pytest.approx(_binomial_tail_by_sum(k, n, p), rel=1e-9)


def test_binomial_edges() -> None:
    assert binomial_upper_tail(0, 10, 0.3) == 1.0
    assert binomial_upper_tail(11, 10, 0.3) == 0.0
    assert binomial_upper_tail(1, 10, 0.0) == 0.0
    # Far in the tail the answer stays a positive, tiny number (BH needs the order of it).
    assert 0.0 < binomial_upper_tail(400, 5000, 0.01) < 1e-100


def test_betainc_symmetry_and_known_values() -> None:
    assert betainc(1, 1, 0.3) == pytest.approx(0.3)  # uniform
    assert betainc(2, 3, 0.4) + betainc(3, 2, 0.6) == pytest.approx(1.0)
    assert betainc(0.5, 0.5, 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize(("t", "df", "tail"), [(2.228, 10, 0.025), (1.96, 1e6, 0.025), (2.576, 1e6, 0.005),
                                                (12.706, 1, 0.025), (0.0, 5, 0.5)])  # fmt: skip
def test_t_upper_tail_textbook_values(t: float, df: float, tail: float) -> None:
    assert t_upper_tail(t, df) == pytest.approx(tail, rel=2e-3)
    assert t_upper_tail(-t, df) == pytest.approx(1 - tail, rel=2e-3)


def test_fisher_matches_enumeration() -> None:
    # 3 of 10 current vs 1 of 20 baseline: hypergeometric tail by hand.
    total, events = 30, 4
    expected = sum(math.comb(10, x) * math.comb(20, events - x) / math.comb(total, events) for x in range(3, 5))
    assert fisher_greater(3, 10, 1, 20) == pytest.approx(expected)


def test_two_proportion_switches_to_fisher_for_small_counts() -> None:
    name, _, p_small = two_proportion_greater(3, 40, 1, 400)
    assert name == "fisher" and p_small < 0.05
    name, z, p_large = two_proportion_greater(120, 1000, 200, 4000)
    assert name == "two-proportion" and z > 5 and p_large < 1e-6
    assert two_proportion_greater(40, 4000, 40, 4000)[2] == pytest.approx(0.5, abs=0.01)


def test_welch() -> None:
    baseline = [1.0, 1.2, 0.9, 1.1, 1.0, 0.95, 1.05, 1.1]
    t, p = welch_greater([2.0, 2.1, 1.9, 2.2], baseline)
    assert t > 10 and p < 1e-4
    _, p_same = welch_greater([1.0, 1.1, 0.9], baseline)
    assert p_same > 0.2
    assert welch_greater([1.0, 1.0], [1.0, 1.0]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="two values"):
        welch_greater([1.0], baseline)
