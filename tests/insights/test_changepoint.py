"""Change points on synthetic hourly series with known answers (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from apps.insights.changepoint import change_points, mean_onset, onset, rate_onset, segment_means


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


def _thin_series(
    seed: int, *, hours: int = 72, start: int, before: float, after: float, low: int = 15, high: int = 60
) -> tuple[list[int], list[int]]:
    """Hourly (events, calls): tens of calls an hour (busy days, quiet nights), the share of
    events `before` until hour `start`, `after` from then on."""
    rng = np.random.default_rng(seed)
    calls = [int(n) for n in rng.integers(low, high, hours)]
    events = [int(rng.binomial(n, before if hour < start else after)) for hour, n in enumerate(calls)]
    return events, calls


@pytest.mark.parametrize("seed", range(50))
def test_rate_at_its_baseline_has_no_onset(seed: int) -> None:
    events, calls = _thin_series(seed, start=72, before=0.01, after=0.01)
    assert rate_onset(events, calls, 0.01) is None
    assert rate_onset(events, calls, 0.01, direction=-1) is None


def test_the_simulators_thin_p99_regression_is_placed_within_two_hours() -> None:
    # 5% of ~40 calls an hour slowed 4x from hour 62 of 72: the p99 exceedance goes from the
    # baseline's ~1% to ~4%, one or two extra calls an hour. Over 200 such series (today:
    # 111 placed within two hours, 26 further off, 63 not claimed), most onsets are placed
    # within two hours, and most claims are right: ten hours of such counts allow little better.
    claimed = placed = 0
    for seed in range(200):
        events, calls = _thin_series(seed, start=62, before=0.01, after=0.04)
        began = rate_onset(events, calls, 0.01)
        claimed += began is not None
        placed += began is not None and abs(began - 62) <= 2
    assert placed >= 100 and placed >= 0.75 * claimed


@pytest.mark.parametrize("seed", range(10))
def test_a_clear_rate_step_is_placed_within_two_hours(seed: int) -> None:
    events, calls = _thin_series(seed, start=50, before=0.01, after=0.08)
    began = rate_onset(events, calls, 0.01)
    assert began is not None and abs(began - 50) <= 2


def test_a_rate_that_was_high_from_the_first_hour_is_not_placed() -> None:
    events, calls = _thin_series(3, start=0, before=0.01, after=0.06)
    assert rate_onset(events, calls, 0.01) is None


def test_a_rate_drop_is_found_downwards_only() -> None:
    # The share of 'stop' among finish reasons falls from 90% to 60%.
    events, calls = _thin_series(4, start=40, before=0.9, after=0.6)
    assert rate_onset(events, calls, 0.9) is None
    began = rate_onset(events, calls, 0.9, direction=-1)
    assert began is not None and abs(began - 40) <= 1


def test_rate_hours_without_calls_are_skipped_and_indexes_stay_those_of_the_series() -> None:
    calls = [40] * 20 + [0, 0] + [40] * 6
    events = [1] * 20 + [0, 0] + [12] * 6
    assert rate_onset(events, calls, 1 / 40) == 22
    assert rate_onset([0, 0, 0], [0, 0, 0], 0.01) is None
    assert rate_onset([], [], 0.01) is None
    assert rate_onset([1], [10], 0.01) is None


def test_rate_onset_in_busy_slices_whose_tails_underflow() -> None:
    # Thousands of calls an hour and a large step: every tail after the change is beyond
    # float range (log p = -inf); the onset is still the step, not the first such tail.
    calls = [10_000] * 48
    events = [100] * 30 + [5_000] * 18
    assert rate_onset(events, calls, 0.01) == 30
    assert rate_onset([9_900] * 30 + [5_000] * 18, calls, 0.99, direction=-1) == 30


def test_rate_baseline_without_events_or_all_events() -> None:
    # A baseline share of 0 (no error in weeks) or 1 is kept inside (0, 1): the onset is the
    # first hour with errors, not a division by zero.
    assert rate_onset([0] * 20 + [3] * 4, [40] * 24, 0.0) == 20
    assert rate_onset([40] * 20 + [30] * 4, [40] * 24, 1.0, direction=-1) == 20


@pytest.mark.parametrize("seed", range(10))
def test_mean_onset_places_a_shift_of_log_lengths(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = [int(n) for n in rng.integers(5, 40, 120)]
    # log output tokens: mean 5.0, sd 0.6 per call; from hour 90, +0.3 (35% longer answers).
    means: list[float | None] = [
        float(np.mean(rng.normal(5.0 if hour < 90 else 5.3, 0.6, n))) for hour, n in enumerate(counts)
    ]
    began = mean_onset(means, counts, 5.0, 0.6)
    assert began is not None and abs(began - 90) <= 2
    assert mean_onset(means, counts, 5.0, 0.6, direction=-1) is None
    means[91] = None
    assert mean_onset(means, counts, 5.0, 0.6) is not None


def test_mean_onset_without_a_shift_or_a_spread() -> None:
    rng = np.random.default_rng(1)
    counts = [30] * 72
    means: list[float | None] = [float(np.mean(rng.normal(5.0, 0.6, 30))) for _ in counts]
    assert mean_onset(means, counts, 5.0, 0.6) is None
    assert mean_onset(means, counts, 5.0, 0.0) is None
    assert mean_onset([None, None], [0, 0], 5.0, 0.6) is None
