"""The one-sided tests the regression detector makes ("is the current window worse?").

scipy is not in the environment, so the three tests are written here on one special
function, the regularised incomplete beta I_x(a, b) (continued fraction, modified Lentz),
which gives both tails we need:

- binomial upper tail: P(X >= k | n, p) = I_p(k, n - k + 1);
- Student's t upper tail: P(T >= t | df) = I_{df / (df + t^2)}(df / 2, 1 / 2) / 2 for t >= 0.

Each is checked against direct sums (math.comb) and textbook values in
tests/insights/test_regressions_stats.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_EPSILON = 1e-15
_TINY = 1e-300


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), a, b > 0, 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry
    # I_x(a, b) = 1 - I_{1-x}(b, a) on the other side.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            result *= c * d
        if abs(c * d - 1.0) < _EPSILON:
            break
    return result


def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return betainc(k, n - k + 1, p)


def normal_upper_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def t_upper_tail(t: float, df: float) -> float:
    """P(T >= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def fisher_greater(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided Fisher exact test: P(first sample has >= x1 events) given both margins."""
    total_events = x1 + x2
    total = n1 + n2

    def log_probability(events: int) -> float:
        return _log_comb(n1, events) + _log_comb(n2, total_events - events) - _log_comb(total, total_events)

    highest = min(n1, total_events)
    return min(1.0, sum(math.exp(log_probability(events)) for events in range(x1, highest + 1)))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


# Below this many expected events (or non-events) in a cell, the normal approximation of
# the two-proportion test is poor and Fisher's exact test is used instead.
MIN_EXPECTED = 5.0


def two_proportion_greater(x1: int, n1: int, x2: int, n2: int) -> tuple[str, float, float]:
    """Is the first proportion (current) greater than the second (baseline)?

    Returns (test name, statistic, one-sided p-value): the pooled two-proportion z test, or
    Fisher's exact test (statistic: the first sample's events) when a cell is too small."""
    pooled = (x1 + x2) / (n1 + n2)
    expected = min(n1 * pooled, n2 * pooled, n1 * (1 - pooled), n2 * (1 - pooled))
    if expected < MIN_EXPECTED:
        return "fisher", float(x1), fisher_greater(x1, n1, x2, n2)
    standard_error = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (x1 / n1 - x2 / n2) / standard_error
    return "two-proportion", z, normal_upper_tail(z)


def welch_greater(current: Sequence[float], baseline: Sequence[float]) -> tuple[float, float]:
    """Welch's t test, one-sided (current mean greater): (t, p-value). Needs >= 2 per side."""
    n1, n2 = len(current), len(baseline)
    if n1 < 2 or n2 < 2:
        raise ValueError("Welch's test needs at least two values on each side")
    mean1, mean2 = sum(current) / n1, sum(baseline) / n2
    var1 = sum((value - mean1) ** 2 for value in current) / (n1 - 1)
    var2 = sum((value - mean2) ** 2 for value in baseline) / (n2 - 1)
    se2 = var1 / n1 + var2 / n2
    if se2 <= 0.0:
        # No spread on either side: the means differ or they do not.
        return (math.inf, 0.0) if mean1 > mean2 else (0.0, 1.0)
    t = (mean1 - mean2) / math.sqrt(se2)
    df = se2**2 / ((var1 / n1) ** 2 / (n1 - 1) + (var2 / n2) ** 2 / (n2 - 1))
    return t, t_upper_tail(t, df)
