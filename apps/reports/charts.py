"""Chart images for the review: Plotly figures rendered to PNG by kaleido driving Chromium.

Mail clients run no scripts and many block remote images, so each chart travels inside the
email as an inline PNG referenced by Content-ID. One Chromium serves every chart of a sweep
(starting it costs seconds, a chart ~0.2 s), and charts depend only on the figures, so
readers who share a scope share the images. Where no renderer is available (no Chromium,
REVIEW_CHART_IMAGES=false, a render error) the templates draw HTML/CSS bars instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import plotly
from django.conf import settings

from apps.reports.figures import WeekFigures
from apps.reports.formatting import money

log = logging.getLogger(__name__)

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
WIDTH, HEIGHT, SCALE = 600, 260, 2
THIS_WEEK, LAST_WEEK = "#2563eb", "#94a3b8"
FEATURES_SHOWN = 8
TABS = 2


@dataclass(frozen=True)
class Chart:
    name: str  # part of the Content-ID
    alt: str
    figure: dict[str, Any]


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    # A white card in light and dark mail clients alike: the PNG carries its own background.
    return {
        "title": {"text": title, "font": {"size": 16}, "x": 0.02},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "font": {"family": "Helvetica, Arial, sans-serif", "size": 14, "color": "#1f2937"},
        "margin": {"l": 60, "r": 16, "t": 44, "b": 36},
        "legend": {"orientation": "h", "y": -0.18, "x": 0},
        "barmode": "group",
        **extra,
    }


def _number(value: Decimal | None) -> float:
    return float(value) if value is not None else 0.0


def charts_for(figures: WeekFigures) -> list[Chart]:
    if not figures.has_data:
        return []
    days = [f"{day.day:%a %d}" for day in figures.days]
    this_week = [_number(day.cost) for day in figures.days]
    last_week = [_number(day.previous_cost) for day in figures.days]
    busiest = max(figures.days, key=lambda day: day.cost or 0)
    daily = Chart(
        "daily-cost",
        f"Cost per day (USD), {figures.week.describe()}, against the same weekday of the week before: "
        f"total {money(figures.totals['cost_usd'])}, highest on {busiest.day:%A} at {money(busiest.cost)}.",
        {
            "data": [
                {"type": "bar", "name": "this week", "x": days, "y": this_week, "marker": {"color": THIS_WEEK}},
                {"type": "bar", "name": "week before", "x": days, "y": last_week, "marker": {"color": LAST_WEEK}},
            ],
            "layout": _layout("Cost per day (USD)", yaxis={"tickprefix": "$", "gridcolor": "#e5e7eb"}),
        },
    )
    charts = [daily]
    features = figures.features[:FEATURES_SHOWN]
    if features:
        names = [line.label for line in reversed(features)]
        charts.append(
            Chart(
                "cost-by-feature",
                "Cost by feature (USD), this week against the week before: "
                + "; ".join(f"{line.label} {money(line.cost)} (was {money(line.previous_cost)})" for line in features)
                + ".",
                {
                    "data": [
                        _feature_bars("this week", names, [line.cost for line in reversed(features)], THIS_WEEK),
                        _feature_bars(
                            "week before", names, [line.previous_cost for line in reversed(features)], LAST_WEEK
                        ),
                    ],
                    "layout": _layout(
                        "Cost by feature (USD)",
                        height=max(HEIGHT, 60 + 34 * len(features)),
                        xaxis={"tickprefix": "$", "gridcolor": "#e5e7eb"},
                        yaxis={"automargin": True},
                    ),
                },
            )
        )
    return charts


def _feature_bars(name: str, names: list[str], costs: list[Decimal | None], color: str) -> dict[str, Any]:
    return {"type": "bar", "orientation": "h", "name": name, "y": names, "x": [_number(c) for c in costs],
            "marker": {"color": color}}  # fmt: skip


def images_available() -> bool:
    return bool(settings.REVIEW_CHART_IMAGES) and Path(settings.REVIEW_CHROMIUM).exists()


def render_png(charts: list[Chart]) -> list[bytes | None]:
    """PNG bytes of each chart (None where it failed), all in one Chromium session."""
    if not charts or not images_available():
        return [None] * len(charts)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_render(charts))
    # Called from a thread that runs an event loop (Playwright's sync API, an async view):
    # render on a thread of our own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _render(charts)).result()


async def _render(charts: list[Chart]) -> list[bytes | None]:
    import kaleido

    out: list[bytes | None] = [None] * len(charts)

    async def one(renderer: Any, number: int) -> None:
        chart = charts[number]
        layout = chart.figure["layout"]
        options = {"format": "png", "width": WIDTH, "height": layout.get("height", HEIGHT), "scale": SCALE}
        try:
            out[number] = await renderer.calc_fig(chart.figure, opts=options)
        except Exception:
            log.warning("chart %s could not be rendered; the email shows HTML bars", chart.name, exc_info=True)

    try:
        # mathjax=False and the installed plotly.js: the machine may have no network. TABS
        # pages render at once (kaleido queues the rest), so Chromium's own processes keep
        # the cores busy while Python waits.
        async with kaleido.Kaleido(
            n=TABS, timeout=60, mathjax=False, plotlyjs=str(PLOTLY_JS), path=settings.REVIEW_CHROMIUM
        ) as renderer:
            await asyncio.gather(*(one(renderer, number) for number in range(len(charts))))
    except Exception:
        log.warning("Chromium could not be started for chart images; the email shows HTML bars", exc_info=True)
    return out


def bar_width(value: Decimal | None, largest: Decimal | None) -> int:
    """Percent width of an HTML/CSS bar (at least 1 for a non-zero value, so it shows)."""
    if not value or not largest:
        return 0
    return max(1, round(float(value) / float(largest) * 100))
