"""The API's reading of a query string: the metrics layer's request model in its strict
dialect (apps/metrics/request.py), so the API and the pages answer the same parameters
with the same window and filters. Every mistake is a BadRequest (answered 400 with its
message by apps.api.auth.api_endpoint). Nothing here touches the database."""

from __future__ import annotations

from datetime import datetime

from django.http import QueryDict

from apps.metrics.query import Filters
from apps.metrics.request import (
    API,
    DEFAULT_RANGE,
    DIMENSION_PARAMS,
    FORMATS,
    MAX_PROJECT_ID,
    MAX_RANGE,
    METRICS_PARAMS,
    PRESETS,
    BadRequest,
    MetricsRequest,
    TimeWindow,
    parse_dimension,
    parse_window,
    reject_unknown_params,
)
from apps.metrics.request import parse_filters as _parse_filters
from apps.metrics.request import parse_metrics_request as _parse_metrics_request

__all__ = [
    "DEFAULT_RANGE",
    "DIMENSION_PARAMS",
    "FORMATS",
    "MAX_PROJECT_ID",
    "MAX_RANGE",
    "METRICS_PARAMS",
    "RANGES",
    "BadRequest",
    "MetricsRequest",
    "TimeWindow",
    "parse_dimension",
    "parse_filters",
    "parse_metrics_request",
    "parse_time_range",
    "reject_unknown_params",
]

RANGES = PRESETS


def parse_metrics_request(params: QueryDict, now: datetime) -> MetricsRequest:
    return _parse_metrics_request(params, now, dialect=API)


def parse_time_range(params: QueryDict, now: datetime) -> TimeWindow:
    return parse_window(params, now, dialect=API)


def parse_filters(params: QueryDict) -> Filters:
    return _parse_filters(params, dialect=API)
