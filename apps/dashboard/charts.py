"""Plotly figures built in Python, one look for every page.

Each chart travels as a Chart: its title, what it shows, the unit, the range and the sample
count are part of it, so a template cannot show a figure without its caption. plotly.js
is served locally (views.plotly_js), never from a CDN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.io as pio

# Mid-tone colours that keep their contrast on the light and the dark theme alike.
PALETTE = ("#4e79d8", "#e07b39", "#3ea37a", "#c8506a", "#8e6fd1", "#b8962e", "#3fa6b8", "#7f8793", "#d36fb0", "#6b9c3a")
_AXIS = {"gridcolor": "rgba(128,128,128,0.18)", "zerolinecolor": "rgba(128,128,128,0.3)", "automargin": True}
_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


@dataclass(frozen=True)
class Chart:
    title: str
    what: str  # what it shows, one sentence
    unit: str
    range_text: str
    samples: int | None
    html: str | None  # None: nothing to draw (the template shows the empty state)

    @property
    def caption(self) -> str:
        samples = "" if self.samples is None else f", {self.samples:,} samples"
        return f"{self.what} Unit: {self.unit}. {self.range_text}{samples}."


# Figures are built as plain figure dicts and written out unvalidated: building them as
# graph_objects validates every property on every update, which cost ~30 ms a chart (most of
# a detail page's rendering). tests/dashboard/test_charts.py validates each kind of figure
# with graph_objects instead, so a misspelt property still fails a test.
VALIDATE = False


def figure_dict(data: list[dict[str, Any]], *, unit: str, height: int = 300, stacked: bool = False,
                x_title: str = "", xaxis: dict[str, Any] | None = None,
                yaxis: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The one look: transparent background (the page's theme shows through), a horizontal
    legend below, the palette, unified hover."""
    return {
        "data": data,
        "layout": {
            "height": height,
            "margin": {"l": 56, "r": 12, "t": 8, "b": 36},
            "paper_bgcolor": "rgba(0,0,0,0)",
            "plot_bgcolor": "rgba(0,0,0,0)",
            "font": {"color": "#8a94a3", "size": 12},
            "legend": {"orientation": "h", "y": -0.18, "x": 0},
            "barmode": "stack" if stacked else "group",
            "hovermode": "x unified",
            "colorway": list(PALETTE),
            "yaxis": {"title": {"text": unit}, **_AXIS, **(yaxis or {})},
            "xaxis": {"title": {"text": x_title}, **_AXIS, **(xaxis or {})},
        },
    }


def _html(figure: dict[str, Any]) -> str:
    return str(pio.to_html(figure, full_html=False, include_plotlyjs=False, config=_CONFIG, validate=VALIDATE))


def time_series(
    rows: Sequence[dict[str, Any]],
    series: dict[str, str],
    *,
    unit: str,
    kind: str = "line",
    stacked: bool = False,
) -> str | None:
    """One trace per (label -> row key) over rows' "time"."""
    if not rows:
        return None
    times = [row["time"] for row in rows]
    data: list[dict[str, Any]] = []
    for label, key in series.items():
        values = [_number(row.get(key)) for row in rows]
        if kind == "bar":
            data.append({"type": "bar", "name": label, "x": times, "y": values})
        else:
            data.append({"type": "scatter", "name": label, "x": times, "y": values, "mode": "lines+markers",
                         "connectgaps": False})  # fmt: skip
    return _html(figure_dict(data, unit=unit, stacked=stacked))


def stacked_by(
    rows: Sequence[dict[str, Any]], group_key: str, value_key: str, *, unit: str, top: int = 8
) -> str | None:
    """Bars over time, one colour per group value; groups past `top` are summed as "other"."""
    if not rows:
        return None
    totals: dict[str, float] = {}
    for row in rows:
        name = row[group_key] or "(none)"
        totals[name] = totals.get(name, 0.0) + (_number(row[value_key]) or 0)
    keep = [name for name, _ in sorted(totals.items(), key=lambda item: -item[1])[:top]]
    by_group: dict[str, dict[Any, float]] = {}
    for row in rows:
        name = row[group_key] or "(none)"
        name = name if name in keep else "other"
        cell = by_group.setdefault(name, {})
        cell[row["time"]] = cell.get(row["time"], 0.0) + (_number(row[value_key]) or 0)
    times = sorted({row["time"] for row in rows})
    data = [{"type": "bar", "name": name, "x": times, "y": [by_group[name].get(t, 0.0) for t in times]}
            for name in ([*keep, "other"] if "other" in by_group else keep)]  # fmt: skip
    return _html(figure_dict(data, unit=unit, stacked=True))


def bars(labels: Iterable[str], values: Iterable[float | None], *, unit: str, horizontal: bool = True) -> str | None:
    labels, values = list(labels), [_number(v) for v in values]
    if not labels:
        return None
    if horizontal:
        data = [{"type": "bar", "x": values, "y": labels, "orientation": "h", "marker": {"color": PALETTE[0]}}]
        return _html(figure_dict(data, unit="", x_title=unit, height=max(180, 28 * len(labels) + 60),
                                 yaxis={"autorange": "reversed"}))  # fmt: skip
    data = [{"type": "bar", "x": labels, "y": values, "marker": {"color": PALETTE[0]}}]
    return _html(figure_dict(data, unit=unit))


def distribution(series: dict[str, tuple[np.ndarray, np.ndarray]], *, unit: str, log_x: bool = True) -> str | None:
    """Histograms from merged sketches (bucket values, counts), one per label, as shares."""
    data = []
    for label, (values, counts) in series.items():
        total = counts.sum()
        if not total:
            continue
        data.append({"type": "scatter", "name": label, "x": values, "y": counts / total * 100, "mode": "lines",
                     "line": {"shape": "hvh"}, "fill": "tozeroy"})  # fmt: skip
    if not data:
        return None
    return _html(figure_dict(data, unit="% of calls", x_title=unit, xaxis={"type": "log"} if log_x else None))


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)
