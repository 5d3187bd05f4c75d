"""Query-string parsing for the API: every mistake becomes a BadRequest with a message that
names the parameter and what it accepts. Nothing here touches the database."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.http import QueryDict

from apps.metrics.query import DIMENSIONS, GRANULARITIES, Filters, Query, metric_spec
from observatory.moments import parse_moment

RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_RANGE = "24h"
# The longest span one question may cover (a little over a year: year-on-year views).
MAX_RANGE = timedelta(days=400)
FORMATS = ("json", "csv")
# Query parameter -> Filters field. Each is repeatable and takes comma lists.
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
# Dates outside these years are typing mistakes, and near datetime's limits arithmetic on
# them (a week bucket, a time zone shift) would overflow.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# "+02:00" sent unencoded in a query string arrives as " 02:00": the space can only be a plus.
_DECODED_PLUS_OFFSET = re.compile(r"([T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


class BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime
    range_name: str | None


@dataclass(frozen=True)
class MetricsRequest:
    query: Query
    range_name: str | None
    output_format: str


def reject_unknown_params(params: QueryDict, allowed: frozenset[str]) -> None:
    # A misspelt filter silently ignored would show unfiltered totals as if filtered.
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}; accepted: {', '.join(sorted(allowed))}")


def single(params: QueryDict, name: str) -> str | None:
    values = params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"{name} may be given once")
    if not values[0].strip():
        raise BadRequest(f"{name} is empty; leave it out for the default")
    return values[0].strip()


def comma_list(params: QueryDict, name: str, *, strict: bool = False) -> list[str]:
    """Values of a repeatable, comma-separated parameter, in order, without repeats.

    Blank entries are skipped in filters; in a list of names (`strict`) they are an error,
    since "requests,,cost_usd" is more likely a lost name than a deliberate blank.
    """
    seen: dict[str, None] = {}
    for raw in params.getlist(name):
        for part in raw.split(","):
            if part.strip():
                seen.setdefault(part.strip(), None)
            elif strict:
                raise BadRequest(f"{name} has an empty entry")
    return list(seen)


def parse_instant(name: str, raw: str) -> datetime:
    text = _DECODED_PLUS_OFFSET.sub(r"\1+\2", raw.strip())
    try:
        value = parse_moment(text)
    except ValueError as exc:
        raise BadRequest(
            f"{name} {raw!r} is not an ISO 8601 date-time (e.g. 2025-01-31T00:00:00Z; "
            "without an offset it is read as UTC)"
        ) from exc
    except OverflowError as exc:
        raise BadRequest(f"{name} {raw!r} is out of range") from exc
    if not EARLIEST <= value < LATEST:
        raise BadRequest(f"{name} must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return value


def parse_time_range(params: QueryDict, now: datetime) -> TimeRange:
    range_name = single(params, "range")
    raw_start, raw_end = single(params, "start"), single(params, "end")
    if range_name is not None and (raw_start is not None or raw_end is not None):
        raise BadRequest("give either range or start/end, not both")
    if raw_start is not None or raw_end is not None:
        if raw_start is None:
            raise BadRequest("end needs a start")
        start = parse_instant("start", raw_start)
        end = parse_instant("end", raw_end) if raw_end is not None else now
        if end <= start:
            raise BadRequest("end must be after start")
        if end - start > MAX_RANGE:
            raise BadRequest(f"the time range may cover at most {MAX_RANGE.days} days")
        return TimeRange(start, end, None)
    range_name = range_name or DEFAULT_RANGE
    if range_name not in RANGES:
        raise BadRequest(f"range must be one of {', '.join(RANGES)} (or give start and end)")
    return TimeRange(now - RANGES[range_name], now, range_name)


def _choices(name: str, values: Iterable[str], allowed: Iterable[str], what: str) -> tuple[str, ...]:
    allowed = tuple(allowed)
    for value in values:
        if value not in allowed:
            raise BadRequest(f"unknown {what} {value!r} in {name}; known: {', '.join(allowed)}")
    return tuple(values)


def _project_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PROJECT_ID:
        raise BadRequest(f"project takes project ids (positive integers), not {raw!r}")
    return value


def parse_filters(params: QueryDict) -> Filters:
    fields: dict[str, tuple[str, ...] | tuple[int, ...]] = {}
    for param, field in FILTER_PARAMS.items():
        values = comma_list(params, param)
        if any("\x00" in value for value in values):
            # PostgreSQL text cannot hold NUL, so no stored value could match it anyway.
            raise BadRequest(f"{param} may not contain NUL characters")
        fields[field] = tuple(_project_id(value) for value in values) if param == "project" else tuple(values)
    return Filters(**fields)  # type: ignore[arg-type]


def parse_metrics_request(params: QueryDict, now: datetime) -> MetricsRequest:
    reject_unknown_params(params, METRICS_PARAMS)
    if not "".join(params.getlist("metrics")).strip():
        raise BadRequest("metrics is required: a comma-separated list of metric names (see /api/v1/openapi.json)")
    names = comma_list(params, "metrics", strict=True)
    for name in names:
        try:
            metric_spec(name)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
    time_range = parse_time_range(params, now)
    granularity = single(params, "granularity")
    if granularity is not None and granularity not in GRANULARITIES:
        raise BadRequest(f"granularity must be one of {', '.join(GRANULARITIES)}")
    group_by = _choices("group_by", comma_list(params, "group_by", strict=True), DIMENSIONS, "dimension")
    output_format = single(params, "format") or "json"
    if output_format not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
    try:
        query = Query(
            metrics=tuple(names),
            start=time_range.start,
            end=time_range.end,
            filters=parse_filters(params),
            group_by=group_by,
            granularity=granularity,
        )
    except ValueError as exc:  # the query layer's own checks, should any be stricter than ours
        raise BadRequest(str(exc)) from exc
    return MetricsRequest(query=query, range_name=time_range.range_name, output_format=output_format)


def parse_dimension(dimension: str) -> str:
    if dimension not in DIMENSIONS:
        raise BadRequest(f"unknown dimension {dimension!r}; known: {', '.join(DIMENSIONS)}")
    return dimension
