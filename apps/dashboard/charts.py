"""Plotly figures built in Python, one look for every page.

Each chart travels as a Chart: its title, what it shows, the unit, the range and the sample
count are part of it, so a template cannot show a figure without its caption. plotly.js
is served locally (views.plotly_js), never from a CDN.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import plotly.io as pio
from django.utils.html import escape

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


@dataclass(frozen=True)
class Mark:
    """A moment to mark on a time axis: where a finding's change began (its change point).

    Drawn as a dotted vertical line across the plot with a short label above it; the label
    links to the finding when `url` is set."""

    at: datetime
    label: str
    url: str | None = None
    severity: str = "warning"
    hover: str = ""


# Marks take the colour of their severity (the page's --bad / --warn tones), never the series'.
_MARK_COLOURS = {"critical": "#c8506a", "warning": "#d08a2e", "info": "#7f8793"}
MARK_LABEL_CHARS = 38


def with_marks(figure: dict[str, Any], marks: Sequence[Mark], span: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """`figure` with a vertical line and a label per mark. Labels are staggered over three
    heights so that marks close together stay readable, the highest a little below the plot's
    top edge: Plotly's mode bar appears there on hover and would take the click. Plotly draws
    the `<a>` in a label as a link (target _self: the finding opens in place of the dashboard,
    like any other link). A label in the right half of `span` (the x axis' first and last
    value) reads leftwards from its line, so it stays inside the plot."""
    if not marks:
        return figure
    layout = figure["layout"]
    shapes = list(layout.get("shapes", []))
    annotations = list(layout.get("annotations", []))
    for index, mark in enumerate(marks):
        colour = _MARK_COLOURS.get(mark.severity, _MARK_COLOURS["warning"])
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": mark.at, "x1": mark.at, "y0": 0, "y1": 1,
                       "line": {"color": colour, "width": 1.5, "dash": "dot"}})  # fmt: skip
        label = mark.label if len(mark.label) <= MARK_LABEL_CHARS else mark.label[: MARK_LABEL_CHARS - 1] + "…"
        text = str(escape(label))
        if mark.url:
            text = f'<a href="{escape(mark.url)}" target="_self">{text}</a>'
        annotations.append({"x": mark.at, "xref": "x", "yref": "paper", "y": 0.86 - 0.09 * (index % 3),
                            "yanchor": "top", "xanchor": _label_side(mark.at, span), "text": text, "showarrow": False,
                            "font": {"size": 11, "color": colour}, "bgcolor": "rgba(128,128,128,0.10)",
                            "hovertext": escape(mark.hover or mark.label)})  # fmt: skip
    layout["shapes"] = shapes
    layout["annotations"] = annotations
    return figure


def _label_side(at: datetime, span: tuple[Any, Any] | None) -> str:
    if span is None:
        return "left"
    try:
        return "right" if at > span[0] + (span[1] - span[0]) / 2 else "left"
    except TypeError:  # an axis of another kind than the mark's moment: the default side
        return "left"


def _html(figure: dict[str, Any]) -> str:
    return str(pio.to_html(figure, full_html=False, include_plotlyjs=False, config=_CONFIG, validate=VALIDATE))


def time_series(
    rows: Sequence[dict[str, Any]],
    series: dict[str, str],
    *,
    unit: str,
    kind: str = "line",
    stacked: bool = False,
    marks: Sequence[Mark] = (),
) -> str | None:
    """One trace per (label -> row key) over rows' "time", with `marks` on the time axis."""
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
    return _html(with_marks(figure_dict(data, unit=unit, stacked=stacked), marks, (min(times), max(times))))


def stacked_by(
    rows: Sequence[dict[str, Any]],
    group_key: str,
    value_key: str,
    *,
    unit: str,
    top: int = 8,
    marks: Sequence[Mark] = (),
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
    return _html(with_marks(figure_dict(data, unit=unit, stacked=True), marks, (times[0], times[-1])))


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


def overlaid_shares(series: Mapping[str, Sequence[tuple[float, float]]], *, unit: str, log_x: bool) -> str | None:
    """Distributions given as (x, share 0..1) points on common x values, one line per label,
    drawn overlaid as % (the findings' baseline vs current)."""
    data = []
    for label, points in series.items():
        if not points:
            continue
        data.append({"type": "scatter", "name": label, "x": [x for x, _ in points],
                     "y": [share * 100 for _, share in points], "mode": "lines", "line": {"shape": "hvh"},
                     "fill": "tozeroy"})  # fmt: skip
    if not data:
        return None
    return _html(figure_dict(data, unit="% of samples", x_title=unit, xaxis={"type": "log"} if log_x else None))


def mix_bars(mixes: Mapping[str, Mapping[str, float]]) -> str | None:
    """Category shares (0..1) side by side, one bar colour per label (baseline, current);
    categories in the order of their largest share."""
    categories: dict[str, float] = {}
    for mix in mixes.values():
        for name, share in mix.items():
            categories[name] = max(categories.get(name, 0.0), share)
    if not categories:
        return None
    order = [name for name, _ in sorted(categories.items(), key=lambda item: -item[1])]
    data = [{"type": "bar", "name": label, "x": order, "y": [mix.get(name, 0.0) * 100 for name in order]}
            for label, mix in mixes.items()]  # fmt: skip
    return _html(figure_dict(data, unit="% of samples"))


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)
