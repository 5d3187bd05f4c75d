"""What a dashboard view is looking at, read from and written back to the URL.

Every page takes the same parameters, so a view can be shared by its URL: the time range
(`range=1h|24h|7d|30d` or `start`/`end` ISO dates for a custom one), `compare=1` for the
previous period of the same length, and the dimension filters (`tenant`, `feature`,
`provider`, `model`, `service`, each repeatable).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.http import QueryDict
from django.utils import timezone

from apps.metrics.query import Filters
from observatory.moments import parse_moment

PRESETS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_PRESET = "7d"
MAX_RANGE = timedelta(days=400)
FILTER_DIMENSIONS = ("tenant", "feature", "provider", "model", "service")


class BadParameter(ValueError):
    """A URL parameter a person typed wrong; the page shows the message instead of data."""


@dataclass(frozen=True)
class ViewParams:
    start: datetime
    end: datetime
    preset: str | None  # None = custom range
    compare: bool = False
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def previous(self) -> tuple[datetime, datetime]:
        """The period before, of the preset's length (whole hours) or the custom range's."""
        length = PRESETS[self.preset] if self.preset else self.length
        return self.start - length, self.start

    @property
    def granularity(self) -> str:
        """Chart buckets: hourly up to two days, daily up to ~4 months, then weekly."""
        if self.length <= timedelta(days=2):
            return "hour"
        if self.length <= timedelta(days=120):
            return "day"
        return "week"

    def query_filters(self) -> Filters:
        return Filters(
            tenants=self.filters.get("tenant", ()),
            features=self.filters.get("feature", ()),
            providers=self.filters.get("provider", ()),
            models=self.filters.get("model", ()),
            services=self.filters.get("service", ()),
        )

    def with_filter(self, dimension: str, value: str) -> ViewParams:
        return replace(self, filters={**self.filters, dimension: (value,)})

    def querystring(self, **overrides: str | None) -> str:
        """This view's parameters as a query string, with some replaced (None removes one)."""
        pairs: list[tuple[str, str]] = []
        if self.preset:
            pairs.append(("range", self.preset))
        else:
            pairs += [("start", self.start.isoformat()), ("end", self.end.isoformat())]
        if self.compare:
            pairs.append(("compare", "1"))
        for dimension in FILTER_DIMENSIONS:
            pairs += [(dimension, value) for value in self.filters.get(dimension, ())]
        names = set(overrides)
        if names & {"start", "end"}:
            names |= {"range"}
        if "range" in overrides:
            names |= {"start", "end"}
        pairs = [(name, value) for name, value in pairs if name not in names]
        pairs += [(name, value) for name, value in overrides.items() if value is not None]
        return urlencode(pairs)

    def describe_range(self) -> str:
        if self.preset:
            return f"last {self.preset}"
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"


def parse_moment_param(name: str, raw: str) -> datetime:
    try:
        return parse_moment(raw)
    except ValueError:
        raise BadParameter(f"{name}={raw!r} is not a date or date-time (use ISO 8601, e.g. 2026-11-01)") from None


def parse_params(query: QueryDict, now: datetime | None = None) -> ViewParams:
    now = now or page_now()
    compare = query.get("compare", "") in ("1", "true", "on")
    filters = {}
    for dimension in FILTER_DIMENSIONS:
        values = tuple(dict.fromkeys(v.strip() for v in query.getlist(dimension) if v.strip()))
        if values:
            filters[dimension] = values
    if query.get("start") or query.get("end"):
        if not (query.get("start") and query.get("end")):
            raise BadParameter("a custom range needs both start and end")
        start = parse_moment_param("start", query["start"])
        end = parse_moment_param("end", query["end"])
        if end <= start:
            raise BadParameter("end must be after start")
        if end - start > MAX_RANGE:
            raise BadParameter(f"a range can be at most {MAX_RANGE.days} days")
        return ViewParams(start=start, end=end, preset=None, compare=compare, filters=filters)
    preset = query.get("range") or DEFAULT_PRESET
    if preset not in PRESETS:
        raise BadParameter(f"range={preset!r} is not one of {', '.join(PRESETS)}")
    start, end = preset_window(preset, now)
    return ViewParams(start=start, end=end, preset=preset, compare=compare, filters=filters)


# A preset's window ends at the last FRESHNESS boundary, so every page rendered in those
# seconds asks about the same raw piece (page_reads keeps it that long).
FRESHNESS = timedelta(seconds=10)
# The moment a page is rendered "as of" (page_reads sets it: the FRESHNESS boundary of the
# raw pieces it serves); outside a page, now.
PAGE_AS_OF: ContextVar[datetime | None] = ContextVar("observatory_page_as_of", default=None)


def page_now() -> datetime:
    """Now, for the page being rendered: the moment its figures are as of."""
    return PAGE_AS_OF.get() or timezone.now()


def freshness_boundary(now: datetime) -> datetime:
    """The last FRESHNESS boundary at or before `now`."""
    return now - timedelta(seconds=now.second % FRESHNESS.seconds, microseconds=now.microsecond)


def preset_window(preset: str, now: datetime) -> tuple[datetime, datetime]:
    """ "Last 7d" is the 7 whole hours-aligned days before the current hour, plus the current
    hour so far: closed hours come from rollups, and only the current hour is read raw (and
    the previous period, for comparisons, is whole rolled-up hours)."""
    end = freshness_boundary(now)
    current_hour = end.replace(minute=0, second=0, microsecond=0)
    return current_hour - PRESETS[preset], end


def filter_bar_context(params: ViewParams) -> dict[str, object]:
    """What templates/dashboard/_filters.html needs: preset links and removable filter chips."""
    return {
        "params": params,
        "range_links": [
            {"label": preset, "qs": params.querystring(range=preset), "active": params.preset == preset}
            for preset in PRESETS
        ],
        "filter_chips": [
            {
                "dimension": dimension,
                "value": value,
                "remove_qs": _without(params, dimension, value).querystring(),
            }
            for dimension, values in params.filters.items()
            for value in values
        ],
    }


def _without(params: ViewParams, dimension: str, value: str) -> ViewParams:
    remaining = tuple(v for v in params.filters.get(dimension, ()) if v != value)
    filters = {d: v for d, v in params.filters.items() if d != dimension}
    if remaining:
        filters[dimension] = remaining
    return replace(params, filters=filters)
