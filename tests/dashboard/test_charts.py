"""Every kind of figure the pages draw is a valid Plotly figure (the pages skip validation
for speed; the tests validate, see tests/conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from apps.dashboard import charts

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ROWS = [{"time": T0 + timedelta(days=n), "a": n, "b": None, "feature": f"f{n % 3}"} for n in range(5)]


@pytest.mark.parametrize(
    "draw",
    [
        lambda: charts.time_series(ROWS, {"A": "a", "B": "b"}, unit="ms"),
        lambda: charts.time_series(ROWS, {"A": "a"}, unit="calls", kind="bar", stacked=True),
        lambda: charts.stacked_by(ROWS, "feature", "a", unit="USD", top=2),
        lambda: charts.bars(["x", "y"], [1.5, None], unit="USD"),
        lambda: charts.bars(["x", "y"], [1.5, 2], unit="USD", horizontal=False),
        lambda: charts.distribution({"e2e": (np.array([0.0, 10.0, 100.0]), np.array([1, 5, 2]))}, unit="ms"),
    ],
)
def test_each_figure_kind_is_valid_plotly(draw: object) -> None:
    assert charts.VALIDATE
    html = draw()  # type: ignore[operator]
    assert html and "Plotly.newPlot" in html


def test_an_invalid_property_fails_validation() -> None:
    figure = charts.figure_dict([{"type": "bar", "x": [1], "y": [2], "colour": "red"}], unit="ms")
    with pytest.raises(ValueError, match="colour"):
        charts._html(figure)
