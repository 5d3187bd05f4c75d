"""What a dashboard view is looking at, read from and written back to the URL.

Every page takes the same parameters, so a view can be shared by its URL: the time range
(`range=1h|24h|7d|30d` or `start`/`end` ISO dates for a custom one), `compare=1` for the
previous period of the same length, and the filters (`tenant`, `feature`, `provider`,
`model`, `service`, each repeatable, and `project` ids). They are read by the metrics
layer's request model (apps/metrics/request.py) in its page dialect, so a page and the
JSON API given the same parameters look at the same window and filters, and a bad value is
the same BadRequest with the same message (a 400 page here, a 400 JSON error there).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.http import QueryDict
from django.utils import timezone

from apps.metrics.query import Filters
from apps.metrics.request import (
    DEFAULT_RANGE,
    FRESHNESS,
    MAX_RANGE,
    PAGE,
    PRESETS,
    BadRequest,
    TimeWindow,
    check_span,
    check_text,
    freshness_boundary,
    parse_filters,
    parse_instant,
    parse_window,
    preset_window,
)

__all__ = [
    "DEFAULT_PRESET",
    "FILTER_DIMENSIONS",
    "FRESHNESS",
    "MAX_RANGE",
    "PAGE_AS_OF",
    "PRESETS",
    "BadParameter",
    "ViewParams",
    "check_span",
    "check_text",
    "filter_bar_context",
    "freshness_boundary",
    "page_now",
    "parse_moment_param",
    "parse_params",
    "preset_window",
]

DEFAULT_PRESET = DEFAULT_RANGE
FILTER_DIMENSIONS = ("tenant", "feature", "provider", "model", "service")
# A page's bad parameter is the request model's: one class, one message, for pages and API.
BadParameter = BadRequest


@dataclass(frozen=True)
class ViewParams:
    start: datetime
    end: datetime
    preset: str | None  # None = custom range
    compare: bool = False
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    projects: tuple[int, ...] = ()

    @property
    def window(self) -> TimeWindow:
        return TimeWindow(self.start, self.end, self.preset)

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def previous(self) -> tuple[datetime, datetime]:
        """The period before, of the preset's length (whole hours) or the custom range's."""
        return self.window.previous

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
            projects=self.projects,
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
        pairs += [("project", str(project)) for project in self.projects]
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
        return self.window.describe()


def parse_moment_param(name: str, raw: str) -> datetime:
    """A moment parameter of a page's own (compare's a_start, ...), by the request model's rules."""
    return parse_instant(name, raw)


def parse_params(query: QueryDict, now: datetime | None = None) -> ViewParams:
    """A page's window and filters; BadParameter (the request model's BadRequest) when wrong."""
    window = parse_window(query, now or page_now(), dialect=PAGE)
    filters = parse_filters(query, dialect=PAGE)
    compare = query.get("compare", "") in ("1", "true", "on")
    by_dimension = {dim: values for dim, values in filters.by_dimension().items() if dim in FILTER_DIMENSIONS}
    return ViewParams(window.start, window.end, window.preset, compare, by_dimension, filters.projects)


def default_params(now: datetime | None = None) -> ViewParams:
    """The page's parameters when none are given: what a 400 page's filter bar starts from."""
    return parse_params(QueryDict(), now)


# The moment a page is rendered "as of" (page_reads sets it: the FRESHNESS boundary of the
# raw pieces it serves); outside a page, now.
PAGE_AS_OF: ContextVar[datetime | None] = ContextVar("observatory_page_as_of", default=None)


def page_now() -> datetime:
    """Now, for the page being rendered: the moment its figures are as of."""
    return PAGE_AS_OF.get() or timezone.now()


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
