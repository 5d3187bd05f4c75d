"""The one request model: what a page or an API call asks the metrics layer, read from a
query string the same way for both, so the same parameters give the same window and the
same figures (docs/metrics.md, "Asking a question").

    window = parse_window(request.GET, now, dialect=PAGE)      # or API
    filters = parse_filters(request.GET, dialect=PAGE)
    asked = parse_metrics_request(request.GET, now)            # the API's whole question

Time. `range` is a preset (1h, 24h, 7d, 30d; default DEFAULT_RANGE, the same for pages and
API). A preset's window ends at the last FRESHNESS (10 s) boundary at or before now and
starts on the hour: "7d" is the 7 x 24 whole hours before the current hour plus the
current hour so far. Whole hours come from rollups and every request of the same 10
seconds asks about the same raw piece (apps/dashboard/page_reads shares it). A custom
window is `start` (and `end`, default the same boundary as a preset's end), both ISO 8601
(a bare date is midnight UTC, no offset is UTC), between EARLIEST and LATEST, end after
start, at most MAX_RANGE apart. The window is [start, end).

Filters. `project` (ids), `tenant`, `feature`, `provider`, `model`, `service`, each
repeatable; no value may hold a NUL (PostgreSQL text cannot, so it could match nothing and
would only reach the database as an error).

Two dialects, one set of rules. The API is strict: an unknown parameter, a single-valued
parameter given twice or empty, and blank list entries are errors, and filter values are
also comma-separated lists. Pages carry their own parameters too (sort, compare, kind, ...),
treat an empty field as absent (a cleared form input), and never split a filter value on
commas: their links carry names from telemetry, which may hold one.

Every mistake is a BadRequest whose message names the parameter and what it accepts; the
API answers it as a 400 JSON error, pages as a 400 page with the message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.http import QueryDict

from apps.metrics.query import DIMENSIONS, GRANULARITIES, Filters, Query, metric_spec
from observatory.moments import parse_moment

__all__ = [
    "API",
    "DEFAULT_RANGE",
    "DIMENSION_PARAMS",
    "EARLIEST",
    "FILTER_PARAMS",
    "FORMATS",
    "FRESHNESS",
    "LATEST",
    "MAX_PROJECT_ID",
    "MAX_RANGE",
    "METRICS_PARAMS",
    "PAGE",
    "PRESETS",
    "BadRequest",
    "Dialect",
    "MetricsRequest",
    "TimeWindow",
    "check_span",
    "check_text",
    "filters_echo",
    "freshness_boundary",
    "parse_dimension",
    "parse_filters",
    "parse_instant",
    "parse_metrics_request",
    "parse_window",
    "preset_window",
    "reject_unknown_params",
]

PRESETS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
# The window a question without `range`, `start` or `end` covers, on pages and in the API.
DEFAULT_RANGE = "7d"
# The longest span one question may cover (a little over a year: year-on-year views).
MAX_RANGE = timedelta(days=400)
# Dates outside these years are typing mistakes, and near datetime's limits arithmetic on
# them (the previous period, a week bucket, a time zone shift) would overflow.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# Windows end at the last FRESHNESS boundary, so requests of those seconds share raw reads.
FRESHNESS = timedelta(seconds=10)
FORMATS = ("json", "csv")
# Query parameter -> Filters field.
FILTER_PARAMS: dict[str, str] = {
    "project": "projects",
    "tenant": "tenants",
    "feature": "features",
    "provider": "providers",
    "model": "models",
    "service": "services",
}
TIME_PARAMS = ("range", "start", "end")
METRICS_PARAMS = frozenset({"metrics", *TIME_PARAMS, "granularity", "group_by", "format", *FILTER_PARAMS})
DIMENSION_PARAMS = frozenset({*TIME_PARAMS, *FILTER_PARAMS})
# PostgreSQL bigint: a larger project id would be a database error, not "no such project".
MAX_PROJECT_ID = 2**63 - 1
# "+02:00" sent unencoded in a query string arrives as " 02:00": the space can only be a plus.
_DECODED_PLUS_OFFSET = re.compile(r"([T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


class BadRequest(ValueError):
    """A parameter a person or a script got wrong; `message` says which and what it accepts."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Dialect:
    name: str
    strict: bool  # unknown, repeated and empty parameters are errors
    comma_lists: bool  # filter values are also comma-separated


API = Dialect("api", strict=True, comma_lists=True)
PAGE = Dialect("page", strict=False, comma_lists=False)


# Time --------------------------------------------------------------------------------


def freshness_boundary(now: datetime) -> datetime:
    """The last FRESHNESS boundary at or before `now`."""
    return now - timedelta(seconds=now.second % FRESHNESS.seconds, microseconds=now.microsecond)


def preset_window(preset: str, now: datetime) -> tuple[datetime, datetime]:
    """A preset's [start, end): from the hour `preset` before the current hour to the last
    FRESHNESS boundary (closed hours from rollups; only the current hour is read raw, and
    the previous period, for comparisons, is whole rolled-up hours)."""
    end = freshness_boundary(now)
    current_hour = end.replace(minute=0, second=0, microsecond=0)
    return current_hour - PRESETS[preset], end


@dataclass(frozen=True)
class TimeWindow:
    start: datetime
    end: datetime
    preset: str | None  # None = custom

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def previous(self) -> tuple[datetime, datetime]:
        """The period before, of the preset's length (whole hours) or the custom window's."""
        length = PRESETS[self.preset] if self.preset else self.length
        return self.start - length, self.start

    def describe(self) -> str:
        if self.preset:
            return f"last {self.preset}"
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"


def check_text(name: str, value: str) -> str:
    """A text parameter (a filter value, a page's path segment, a compared name) that can
    reach SQL: NUL is refused here, since PostgreSQL text cannot hold it."""
    if "\x00" in value:
        raise BadRequest(f"{name} may not contain NUL characters")
    return value


def parse_instant(name: str, raw: str) -> datetime:
    """An ISO 8601 date or date-time parameter, in UTC, within [EARLIEST, LATEST)."""
    check_text(name, raw)
    text = _DECODED_PLUS_OFFSET.sub(r"\1+\2", raw.strip())
    try:
        value = parse_moment(text)
    except ValueError as exc:
        raise BadRequest(
            f"{name} {raw!r} is not an ISO 8601 date-time (e.g. 2025-01-31T00:00:00Z; "
            "without an offset it is read as UTC)"
        ) from exc
    except OverflowError as exc:  # an offset that moves a moment past year 1 or 9999
        raise BadRequest(f"{name} {raw!r} is out of range") from exc
    if not EARLIEST <= value < LATEST:
        raise BadRequest(f"{name} must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return value


def check_span(start: datetime, end: datetime, what: str = "the time range") -> None:
    if end <= start:
        raise BadRequest("end must be after start")
    if end - start > MAX_RANGE:
        raise BadRequest(f"{what} may cover at most {MAX_RANGE.days} days")


def _single(params: QueryDict, name: str, dialect: Dialect) -> str | None:
    values = params.getlist(name)
    if dialect.strict:
        if len(values) > 1:
            raise BadRequest(f"{name} may be given once")
        if values and not values[0].strip():
            raise BadRequest(f"{name} is empty; leave it out for the default")
    value = values[-1].strip() if values else ""
    return check_text(name, value) if value else None


def parse_window(params: QueryDict, now: datetime, *, dialect: Dialect) -> TimeWindow:
    """The time window of `range` or `start`/`end`, as of `now`."""
    preset = _single(params, "range", dialect)
    raw_start, raw_end = _single(params, "start", dialect), _single(params, "end", dialect)
    if preset is not None and (raw_start is not None or raw_end is not None):
        raise BadRequest("give either range or start/end, not both")
    if raw_start is not None or raw_end is not None:
        if raw_start is None:
            raise BadRequest("end needs a start")
        start = parse_instant("start", raw_start)
        end = parse_instant("end", raw_end) if raw_end is not None else freshness_boundary(now)
        check_span(start, end)
        return TimeWindow(start, end, None)
    preset = preset or DEFAULT_RANGE
    if preset not in PRESETS:
        raise BadRequest(f"range must be one of {', '.join(PRESETS)} (or give start and end), not {preset!r}")
    start, end = preset_window(preset, now)
    return TimeWindow(start, end, preset)


# Filters -------------------------------------------------------------------------------


def _values(params: QueryDict, name: str, dialect: Dialect, *, names: bool = False) -> list[str]:
    """Values of a repeatable parameter, in order, without repeats.

    Blank entries are skipped in filters; in a list of names (`names`, always comma lists)
    the API refuses them, since "requests,,cost_usd" is more likely a lost name than a
    deliberate blank."""
    seen: dict[str, None] = {}
    for raw in params.getlist(name):
        parts = raw.split(",") if dialect.comma_lists or names else [raw]
        for part in parts:
            if part.strip():
                seen.setdefault(check_text(name, part.strip()), None)
            elif names and dialect.strict:
                raise BadRequest(f"{name} has an empty entry")
    return list(seen)


def _project_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PROJECT_ID:
        raise BadRequest(f"project takes project ids (positive integers), not {raw!r}")
    return value


def parse_filters(params: QueryDict, *, dialect: Dialect) -> Filters:
    fields: dict[str, tuple[str, ...] | tuple[int, ...]] = {}
    for param, field in FILTER_PARAMS.items():
        values = _values(params, param, dialect)
        fields[field] = tuple(_project_id(value) for value in values) if param == "project" else tuple(values)
    return Filters(**fields)  # type: ignore[arg-type]


def reject_unknown_params(params: QueryDict, allowed: frozenset[str]) -> None:
    # A misspelt filter silently ignored would show unfiltered totals as if filtered.
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}; accepted: {', '.join(sorted(allowed))}")


def parse_dimension(dimension: str) -> str:
    if dimension not in DIMENSIONS:
        raise BadRequest(f"unknown dimension {check_text('dimension', dimension)!r}; known: {', '.join(DIMENSIONS)}")
    return dimension


# A whole question ----------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsRequest:
    query: Query
    window: TimeWindow
    output_format: str = "json"

    @property
    def range_name(self) -> str | None:
        return self.window.preset


def parse_metrics_request(params: QueryDict, now: datetime, *, dialect: Dialect = API) -> MetricsRequest:
    """metrics, the window, filters, group_by, granularity and format: one Query."""
    if dialect.strict:
        reject_unknown_params(params, METRICS_PARAMS)
    if not "".join(params.getlist("metrics")).strip():
        raise BadRequest("metrics is required: a comma-separated list of metric names (see /api/v1/openapi.json)")
    names = _values(params, "metrics", dialect, names=True)
    for name in names:
        try:
            metric_spec(name)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
    window = parse_window(params, now, dialect=dialect)
    granularity = _single(params, "granularity", dialect)
    if granularity is not None and granularity not in GRANULARITIES:
        raise BadRequest(f"granularity must be one of {', '.join(GRANULARITIES)}")
    group_by = tuple(_values(params, "group_by", dialect, names=True))
    for dim in group_by:
        if dim not in DIMENSIONS:
            raise BadRequest(f"unknown dimension {dim!r} in group_by; known: {', '.join(DIMENSIONS)}")
    output_format = _single(params, "format", dialect) or "json"
    if output_format not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
    try:
        query = Query(tuple(names), window.start, window.end, parse_filters(params, dialect=dialect), group_by,
                      granularity)  # fmt: skip
    except ValueError as exc:  # the query layer's own checks, should any be stricter than ours
        raise BadRequest(str(exc)) from exc
    return MetricsRequest(query=query, window=window, output_format=output_format)


def filters_echo(filters: Filters) -> Mapping[str, list[object]]:
    """The filters as the API echoes them: only those given."""
    return {name: list(values) for name, values in vars(filters).items() if values}
