"""A finding's evidence, read for the detail page: figures, the baseline vs current table and
the evidence charts.

Detectors write the evidence JSON (the contract in apps/insights/episodes.py: unit, label,
test, effect, baseline, current, first_seen_at, change_point, series, link). It is read here
defensively: a key missing or of the wrong type leaves its figure out ("not recorded"), it
never makes the page fail, so a detector that writes less (or an older finding written
before a key existed) still has a page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.utils.html import escape

from apps.dashboard import charts
from apps.dashboard.charts import Chart, Mark
from apps.insights.models import Finding

UNIT_NAMES = {"ms": "ms", "tokens": "tokens", "share": "% of samples", "usd": "USD", "count": "count"}
TEST_NAMES = {
    "ks": "Kolmogorov-Smirnov two-sample test",
    "chi2": "chi-square test of the mix",
    "binomial-quantile": "binomial test of the quantile",
    "two-proportion": "two-proportion z-test",
    "welch": "Welch's t-test",
    "new-value": "new value's share of traffic",
}
EFFECT_NAMES = {
    "wasserstein_log": "Wasserstein distance on log values",
    "psi": "population stability index",
    "js_distance": "Jensen-Shannon distance",
    "ratio": "ratio current / baseline",
    "share": "share of traffic",
}
# Series longer than this are cut to their latest points (a 5-week hourly series is ~840).
MAX_SERIES_POINTS = 2000
MAX_HISTOGRAM_POINTS = 2000
MAX_MIX_CATEGORIES = 40


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def figure(value: float | None, unit: str = "") -> str:
    """A figure for people: 3 significant digits, the unit after it; shares as %."""
    if value is None:
        return "not recorded"
    if unit == "share":
        return f"{value * 100:.3g}%"
    if unit == "usd":
        return f"${value:,.4g}" if abs(value) < 1000 else f"${value:,.0f}"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{text} {unit}".strip() if unit not in ("count", "") else text


def p_value(value: float | None) -> str:
    if value is None:
        return "not recorded"
    return "< 1e-300" if value == 0 else f"{value:.3g}"


@dataclass
class Window:
    name: str
    start: datetime | None
    end: datetime | None
    samples: int | None
    value: float | None
    histogram: list[tuple[float, float]] = field(default_factory=list)
    mix: dict[str, float] = field(default_factory=dict)

    @property
    def range_text(self) -> str:
        if self.start is None or self.end is None:
            return "not recorded"
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"


def _window(name: str, raw: Any) -> Window:
    raw = raw if isinstance(raw, dict) else {}
    samples = number(raw.get("n"))
    histogram = []
    for point in raw.get("histogram") or ():
        if isinstance(point, list | tuple) and len(point) == 2:
            x, share = number(point[0]), number(point[1])
            if x is not None and share is not None:
                histogram.append((x, share))
    mix = {}
    if isinstance(raw.get("mix"), dict):
        for category, share in list(raw["mix"].items())[:MAX_MIX_CATEGORIES]:
            value = number(share)
            if value is not None:
                mix[str(category)] = value
    return Window(
        name=name,
        start=moment(raw.get("start")),
        end=moment(raw.get("end")),
        samples=int(samples) if samples is not None and samples >= 0 else None,
        value=number(raw.get("value")),
        histogram=sorted(histogram)[:MAX_HISTOGRAM_POINTS],
        mix=mix,
    )


@dataclass
class Evidence:
    unit: str
    label: str
    test_name: str
    statistic: float | None
    p_value: float | None
    q_value: float | None
    effect_name: str
    effect: float | None
    effect_floor: float | None
    baseline: Window
    current: Window
    first_seen_at: datetime | None
    change_point: datetime | None
    change_method: str
    series: list[tuple[datetime, float | None]]
    link: str

    @property
    def unit_name(self) -> str:
        return UNIT_NAMES.get(self.unit, self.unit)

    @property
    def change(self) -> str | None:
        """Current against baseline, as a relative change."""
        before, after = self.baseline.value, self.current.value
        if before is None or after is None or before == 0:
            return None
        return f"{(after / before - 1) * 100:+.1f}%"

    def figures(self) -> dict[str, str]:
        return {
            "statistic": figure(self.statistic),
            "p_value": p_value(self.p_value),
            "q_value": p_value(self.q_value),
            "effect": figure(self.effect),
            "effect_floor": figure(self.effect_floor),
            "baseline": figure(self.baseline.value, self.unit),
            "current": figure(self.current.value, self.unit),
        }


def read(finding: Finding) -> Evidence:
    raw = finding.evidence if isinstance(finding.evidence, dict) else {}
    test = _dict(raw.get("test"))
    effect = _dict(raw.get("effect"))
    series: list[tuple[datetime, float | None]] = []
    for point in (raw.get("series") or ())[-MAX_SERIES_POINTS:]:
        if isinstance(point, list | tuple) and len(point) == 2 and (at := moment(point[0])) is not None:
            series.append((at, number(point[1])))
    unit = raw["unit"] if isinstance(raw.get("unit"), str) else ""
    test_name, effect_name = str(test.get("name") or ""), str(effect.get("name") or "")
    return Evidence(
        unit=unit,
        label=str(raw.get("label") or finding.metric),
        test_name=TEST_NAMES.get(test_name, test_name) or "not recorded",
        statistic=number(test.get("statistic")),
        p_value=number(test.get("p_value")),
        q_value=number(test.get("q_value")),
        effect_name=EFFECT_NAMES.get(effect_name, effect_name) or "not recorded",
        effect=number(effect.get("value")),
        effect_floor=number(effect.get("floor")),
        baseline=_window("baseline", raw.get("baseline")),
        current=_window("current", raw.get("current")),
        first_seen_at=moment(raw.get("first_seen_at")),
        change_point=moment(raw.get("change_point")),
        change_method=str(raw.get("change_method") or ""),
        series=sorted(series, key=lambda point: point[0]),
        link=dashboard_link(finding, raw.get("link")),
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def dashboard_link(finding: Finding, link: Any) -> str:
    """The evidence's link when it is a path on this site; otherwise the overview filtered to
    the finding's slice. A stored link is not trusted blindly: `//host/...`, `/<tab>/host` or
    `javascript:` would take a person elsewhere."""
    # Browsers drop tabs and newlines from a URL ("/\t/host" is "//host") and read "\\" as "/".
    if (
        isinstance(link, str)
        and link.startswith("/")
        and not link.startswith("//")
        and "\\" not in link
        and not any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in link)
    ):
        parts = urlsplit(link)
        if not parts.scheme and not parts.netloc:
            return link
    query = urlencode(sorted(finding.as_filters().items()))
    return f"{reverse('overview')}?{query}" if query else reverse("overview")


def evidence_charts(finding: Finding, evidence: Evidence) -> list[Chart]:
    """The distributions overlaid, the mixes side by side, the hourly series with the change
    point: each drawn only when the evidence carries it."""
    found = []
    base, cur = evidence.baseline, evidence.current
    windows = f"Baseline {base.range_text}; current {cur.range_text}"
    if base.histogram or cur.histogram:
        xs = [x for x, _ in base.histogram + cur.histogram]
        log_x = evidence.unit in ("ms", "tokens") and min(xs) > 0
        found.append(
            Chart(
                title=f"{_cap(evidence.label)}: baseline vs current distribution",
                what="Share of samples at each value (bucket representatives), the baseline window and the "
                f"current one overlaid{', log scale' if log_x else ''}.",
                unit=f"{evidence.unit_name} (x axis), % of samples (y axis)",
                range_text=windows,
                samples=_total(base.samples, cur.samples),
                html=charts.overlaid_shares(
                    {f"baseline ({_n(base.samples)})": base.histogram, f"current ({_n(cur.samples)})": cur.histogram},
                    unit=evidence.unit_name,
                    log_x=log_x,
                ),
            )
        )
    if base.mix or cur.mix:
        found.append(
            Chart(
                title=f"{_cap(evidence.label)}: baseline vs current mix",
                what="Share of samples in each category, the baseline window beside the current one.",
                unit="% of samples",
                range_text=windows,
                samples=_total(base.samples, cur.samples),
                # Category names come from telemetry (finish reasons, error types): Plotly reads
                # tags in text, so they are escaped like any other telemetry name on a page.
                html=charts.mix_bars(
                    {
                        label: {escape(name): share for name, share in mix.items()}
                        for label, mix in (("baseline", base.mix), ("current", cur.mix))
                    }
                ),
            )
        )
    if evidence.series:
        began = evidence.change_point or finding.started_at
        marks = [Mark(at=began, label="change point", severity=finding.severity,
                      hover=f"change point{f' ({evidence.change_method})' if evidence.change_method else ''}: "
                      f"{began:%Y-%m-%d %H:%M} UTC")] if began else []  # fmt: skip
        scale = 100.0 if evidence.unit == "share" else 1.0
        rows = [{"time": at, "value": None if value is None else value * scale} for at, value in evidence.series]
        found.append(
            Chart(
                title=f"{_cap(evidence.label)}, hourly",
                what="The measured value per hour over the baseline and current windows; the dotted line is where "
                "the change began.",
                unit=evidence.unit_name,
                range_text=f"{evidence.series[0][0]:%Y-%m-%d %H:%M} to {evidence.series[-1][0]:%Y-%m-%d %H:%M} UTC",
                samples=None,
                html=charts.time_series(rows, {escape(evidence.label): "value"}, unit=evidence.unit_name, marks=marks),
            )
        )
    return found


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _n(samples: int | None) -> str:
    return "n not recorded" if samples is None else f"n={samples:,}"


def _total(*counts: int | None) -> int | None:
    known = [count for count in counts if count is not None]
    return sum(known) if known else None
