"""The read-only JSON API (/api/v1/): thin views over the metrics query layer.

Every figure comes from apps.metrics.query with the caller's scope (scope_for), so a user
limited to some tenants gets only their numbers, totals included, whatever the filters and
group-by ask for. apps/api/README.md describes the API for its users; openapi.py is its
machine-readable description.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from apps.accounts.access import scope_for
from apps.api import openapi
from apps.api.auth import api_endpoint
from apps.api.params import (
    DIMENSION_PARAMS,
    MetricsRequest,
    parse_dimension,
    parse_filters,
    parse_metrics_request,
    parse_time_range,
    reject_unknown_params,
)
from apps.api.render import columns_for, iso, jsonable, to_csv
from apps.dashboard import page_reads
from apps.metrics.query import DIMENSIONS, Filters, Query, dimension_values, metric_spec, run_query
from apps.metrics.request import filters_echo

JSON_OPTIONS = {"ensure_ascii": False}


def _filters_echo(filters: Filters) -> dict[str, list[Any]]:
    return dict(filters_echo(filters))


def _query_echo(query: Query, range_name: str | None) -> dict[str, Any]:
    return {
        "metrics": list(query.metrics),
        "range": range_name,
        "start": iso(query.start),
        "end": iso(query.end),
        "granularity": query.granularity,
        "group_by": list(query.group_by),
        "filters": _filters_echo(query.filters),
    }


def _csv_filename(query: Query) -> str:
    return f"observatory-metrics-{query.start:%Y%m%dT%H%MZ}-{query.end:%Y%m%dT%H%MZ}.csv"


@api_endpoint()
def metrics(request: HttpRequest, user: Any) -> HttpResponse:
    now = timezone.now()
    asked: MetricsRequest = parse_metrics_request(request.GET, now)
    query = asked.query
    # The current hour's raw pieces of this 10-second boundary, read once per process for the
    # pages and this API alike (apps/dashboard/page_reads.py), not once per request.
    result = run_query(query, scope_for(user), shared=page_reads.of_boundary(now))
    rows = [{key: jsonable(value) for key, value in row.items()} for row in result.rows]
    if asked.output_format == "csv":
        columns = columns_for(result.columns, rows)
        body = to_csv(columns, rows, text_columns=frozenset(DIMENSIONS))
        response = HttpResponse(body, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{_csv_filename(query)}"'
        return response
    document = {
        "query": _query_echo(query, asked.range_name),
        # Every metric a row carries: those asked for, and cost_unknown_requests with money.
        "metrics": {
            name: {"unit": metric_spec(name).unit, "description": metric_spec(name).description}
            for name in query.reported
        },
        "rows": rows,
    }
    return JsonResponse(document, json_dumps_params=JSON_OPTIONS)


@api_endpoint()
def dimensions(request: HttpRequest, user: Any, dimension: str) -> HttpResponse:
    dimension = parse_dimension(dimension)
    reject_unknown_params(request.GET, DIMENSION_PARAMS)
    now = timezone.now()
    time_range = parse_time_range(request.GET, now)
    filters = parse_filters(request.GET)
    shared = page_reads.of_boundary(now)
    values = dimension_values(dimension, time_range.start, time_range.end, scope_for(user), filters, shared=shared)
    document = {
        "dimension": dimension,
        "query": {
            "range": time_range.preset,
            "start": iso(time_range.start),
            "end": iso(time_range.end),
            "filters": _filters_echo(filters),
        },
        "values": values,
    }
    return JsonResponse(document, json_dumps_params=JSON_OPTIONS)


@api_endpoint(authenticated=False)
def openapi_document(request: HttpRequest) -> HttpResponse:
    # Public: it describes the API (metric names, parameters), not anyone's data, and tools
    # fetch it before they hold credentials.
    return JsonResponse(openapi.document(), json_dumps_params=JSON_OPTIONS)
