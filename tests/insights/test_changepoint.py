"""Change points on synthetic hourly series with known answers (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from apps.insights.changepoint import binomial_change_points, binomial_onset, change_points, onset, segment_means


def _noise(seed: int, n: int, sigma: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sigma, n)


@pytest.mark.parametrize("seed", range(20))
def test_pure_noise_has_no_change_point(seed: int) -> None:
    values = 10.0 + _noise(seed, 72)
    assert change_points(list(values)) == []
    assert onset(list(values)) is None


@pytest.mark.parametrize("seed", range(20))
def test_noisy_hourly_proportions_without_change_have_none(seed: int) -> None:
    # Hourly error rates near 1% over 60 calls: mostly 0, sometimes 1/60 or 2/60. The noise
    # estimate must not collapse to 0 on such a series (it would see steps everywhere).
    rng = np.random.default_rng(seed)
    values = rng.binomial(60, 0.01, 96) / 60
    assert change_points(list(values)) == []


@pytest.mark.parametrize("seed", range(10))
def test_one_step_is_found_within_two_hours(seed: int) -> None:
    values = np.concatenate([np.full(60, 1.0), np.full(12, 4.0)]) + _noise(seed, 72)
    points = change_points(list(values))
    assert len(points) == 1
    assert abs(points[0] - 60) <= 2
    assert onset(list(values)) == points[0]


def test_a_step_down_is_not_an_onset_upwards() -> None:
    values = list(np.concatenate([np.full(40, 5.0), np.full(20, 1.0)]) + _noise(3, 60, 0.5))
    assert abs(change_points(values)[0] - 40) <= 1
    assert onset(values, direction=1) is None
    assert abs((onset(values, direction=-1) or 0) - 40) <= 1


def test_two_steps_up_begin_at_the_first() -> None:
    values = list(np.concatenate([np.full(40, 0.0), np.full(15, 5.0), np.full(15, 10.0)]) + _noise(4, 70, 0.5))
    points = change_points(values)
    assert len(points) == 2
    assert abs(points[0] - 40) <= 1 and abs(points[1] - 55) <= 1
    assert onset(values) == points[0]


def test_an_incident_that_ended_has_no_current_onset() -> None:
    values = list(np.concatenate([np.full(30, 0.0), np.full(10, 8.0), np.full(30, 0.0)]) + _noise(5, 70, 0.5))
    points = change_points(values)
    assert [round(point / 5) * 5 for point in points] == [30, 40]
    assert onset(values) is None


def test_missing_hours_are_skipped_and_indexes_stay_those_of_the_series() -> None:
    values: list[float | None] = list(np.concatenate([np.full(50, 1.0), np.full(20, 6.0)]) + _noise(6, 70, 0.5))
    for hour in (10, 11, 12, 47, 48, 49, 50, 51, 65):  # night hours without calls, and the hours around the change
        values[hour] = None
    points = change_points(values)
    assert points == [52]  # the first present hour of the new level
    assert onset(values) == 52
    means = segment_means(values, points)
    assert means[0] == pytest.approx(1.0, abs=0.3) and means[1] == pytest.approx(6.0, abs=0.3)


def test_nan_counts_as_missing() -> None:
    values = [1.0] * 20 + [float("nan")] + [5.0] * 10
    assert change_points(values) == [21]


@pytest.mark.parametrize(
    "values",
    [[], [1.0], [1.0, 9.0], [1.0, 1.0, 9.0], [None, None, None, None, None], [None, 1.0, None, 9.0, None]],
)
def test_too_short_series_have_no_change_point(values: list[float | None]) -> None:
    assert change_points(values) == []
    assert onset(values) is None


def test_shortest_series_with_a_clear_step() -> None:
    assert change_points([1.0, 1.0, 9.0, 9.0]) == [2]


def test_flat_series_and_a_clean_step() -> None:
    assert change_points([3.0] * 48) == []
    assert change_points([3.0] * 40 + [3.5] * 8) == [40]


def test_a_single_outlier_is_not_a_change() -> None:
    values = list(10.0 + _noise(7, 72))
    values[30] += 6.0
    assert change_points(values) == []


@pytest.mark.parametrize("seed", range(50))
def test_binomial_rate_without_change_has_no_point(seed: int) -> None:
    rng = np.random.default_rng(seed)
    trials = list(rng.integers(5, 80, 72))  # busy days, quiet nights
    events = [int(rng.binomial(n, 0.01)) for n in trials]
    assert binomial_change_points(events, trials) == []
    assert binomial_onset(events, trials) is None


@pytest.mark.parametrize("seed", range(10))
def test_binomial_step_from_one_to_six_percent_is_found(seed: int) -> None:
    rng = np.random.default_rng(seed)
    trials = [int(n) for n in rng.integers(20, 60, 48)]
    events = [int(rng.binomial(n, 0.01 if hour < 38 else 0.06)) for hour, n in enumerate(trials)]
    began = binomial_onset(events, trials)
    # ~2 events an hour after the change: where it began is known to within a few hours.
    assert began is not None and abs(began - 38) <= 3


def test_binomial_missing_hours_and_short_series() -> None:
    trials = [40] * 20 + [0, 0] + [40] * 6
    events = [1] * 20 + [0, 0] + [12] * 6
    assert binomial_change_points(events, trials) == [22]
    assert binomial_onset(events, trials) == 22
    assert binomial_change_points([1, 9], [10, 10]) == []
    assert binomial_onset([0, 0, 0], [0, 0, 0]) is None
