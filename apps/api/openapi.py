"""The OpenAPI 3.1 description of /api/v1/, built from the same constants the views use
(metric catalog, dimensions, ranges), so it cannot list a metric the API does not answer.

tests/api/test_openapi.py validates it with openapi-spec-validator and runs schemathesis
against the live views with it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings

from apps.api.params import DEFAULT_RANGE, FORMATS, MAX_PROJECT_ID, MAX_RANGE, RANGES
from apps.metrics.catalog import COST_UNKNOWN, LISTED_PERCENTILES, MONEY_PLACES
from apps.metrics.query import DIMENSIONS, DISTRIBUTIONS, GRANULARITIES, METRICS, MetricSpec

API_VERSION = "1.0.0"
# USD amounts: fixed-point strings on the one money scale (catalog.MONEY_PLACES decimals).
DECIMAL_PATTERN = rf"^-?[0-9]+(\.[0-9]{{1,{MONEY_PLACES}}})?$"
_DISTS = "|".join(DISTRIBUTIONS)
QUANTILE_PATTERN = rf"^({_DISTS})_p[0-9]{{1,6}}$"
QUANTILE_SAMPLES_PATTERN = rf"^({_DISTS})_p[0-9]{{1,6}}_samples$"

DESCRIPTION = f"""\
Read-only access to the figures Observatory shows: the same metrics query layer as the
pages, CSV exports and emails, with the same definitions (docs/metrics.md).

**Authentication.** A logged-in session (cookie), or `Authorization: Bearer <read key>`.
Read keys are created in admin (Read keys) or with `manage.py create_read_key USERNAME`;
a key acts as its user. Without valid credentials the answer is 401 with a JSON error.

**Access.** Every answer is limited to the tenants the user may see, totals included:
staff see everything; other users see the tenants their tenant access grants, and nothing
without one. Filtering on a tenant outside that scope gives no data, not an error.

**Values.** Datetimes are ISO 8601 in UTC (`2025-01-31T00:00:00Z`). USD amounts are strings
holding a fixed-point decimal with {MONEY_PLACES} decimals (`"12.3400000000"`): every money
figure, sums, savings and per-task or per-1k-requests costs alike, is rounded half-even to
1e-{MONEY_PLACES} USD, the scale costs are stored at. Counts are integers; ratios, rates and
percentiles are numbers; a ratio with a zero denominator or a percentile without samples is
null. Every percentile `<dist>_p<N>` comes with `<dist>_p<N>_samples`, its sample count.

**Unknown cost is never 0.** A money figure over calls none of which is priced (no price
row for the model, or token counts missing) is null, an empty cell in CSV. Whenever a money
metric is asked for, each row also carries `{COST_UNKNOWN}`, the calls of the row whose cost
is unknown: a partly priced figure is the known sum plus that many unpriced calls.

**Time.** Either `range` (default `{DEFAULT_RANGE}`, the same as the pages') or `start` (and
optional `end`), at most {MAX_RANGE.days} days apart, between 2000-01-01 and 2200-01-01. A
range's window is the pages' window: it ends at the last 10-second boundary (`hh:mm:s0`)
and starts on the hour, `range` before the current hour (`7d` at 14:37:23 is 7 days before
14:00 to 14:37:20); whole hours come from rollups. Without `end`, a window ends at that same
boundary. The window is [start, end). Buckets are UTC hours, days or ISO weeks (from
Monday); the first and last may be partial. A date-time without an offset is UTC.

**Errors.** Bad input is a 400 with `{{"error": "<what is wrong>"}}`; unknown parameters are
errors too, so a misspelt filter never passes for a filtered answer.
"""


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "what is wrong, in words"}},
        "additionalProperties": False,
    }


def _metric_name_schema() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "string", "enum": list(METRICS)},
            {
                "type": "string",
                "pattern": QUANTILE_PATTERN,
                "description": "any percentile of a distribution: p50 = 0.5, p999 = 0.999, p100 = max",
            },
        ]
    }


def _value_schema(spec: MetricSpec) -> dict[str, Any]:
    if spec.name == "errors_by_type":
        return {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
    if spec.kind == "quantile":
        return {"type": ["number", "null"]}
    if spec.is_money:
        # null: calls were made and none is priced (or, for a ratio, a zero denominator).
        return {"type": ["string", "null"], "pattern": DECIMAL_PATTERN}
    if spec.kind == "ratio":
        return {"type": ["number", "null"]}
    return {"type": "integer"}


def _row_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "time": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "start of the bucket; null without a granularity (one row of totals)",
        }
    }
    for dim in DIMENSIONS:
        properties[dim] = {"type": "string", "description": f"{dim} of the group ('' = unattributed)"}
    for name, spec in METRICS.items():
        properties[name] = {**_value_schema(spec), "description": f"{spec.description} ({spec.unit})"}
        if spec.kind == "quantile":
            properties[f"{name}_samples"] = {"type": "integer", "minimum": 0, "description": f"samples of {name}"}
    properties[COST_UNKNOWN]["description"] += "; in every row whenever a money metric is asked for, asked or not"
    return {
        "type": "object",
        "required": ["time"],
        "properties": properties,
        "patternProperties": {
            QUANTILE_PATTERN: {"type": ["number", "null"]},
            QUANTILE_SAMPLES_PATTERN: {"type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
    }


def _filters_schema() -> dict[str, Any]:
    strings = {"type": "array", "items": {"type": "string"}}
    return {
        "type": "object",
        "properties": {
            "projects": {"type": "array", "items": {"type": "integer"}},
            "tenants": strings,
            "features": strings,
            "providers": strings,
            "models": strings,
            "services": strings,
        },
        "additionalProperties": False,
    }


def _time_params() -> list[dict[str, Any]]:
    return [
        {
            "name": "range",
            "in": "query",
            "description": f"a preset window (default {DEFAULT_RANGE}): from the hour that long before the "
            "current hour to the last 10-second boundary; not together with start/end",
            "schema": {"type": "string", "enum": list(RANGES)},
        },
        {
            "name": "start",
            "in": "query",
            "description": "ISO 8601 start (inclusive); without an offset, UTC",
            "schema": {"type": "string", "format": "date-time"},
        },
        {
            "name": "end",
            "in": "query",
            "description": f"ISO 8601 end (exclusive; default the last 10-second boundary); after start, at most "
            f"{MAX_RANGE.days} days later",
            "schema": {"type": "string", "format": "date-time"},
        },
    ]


def _filter_params() -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": "project",
            "in": "query",
            "description": "project ids; repeat the parameter or separate with commas",
            "style": "form",
            "explode": True,
            "schema": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": MAX_PROJECT_ID}},
        }
    ]
    for dim in DIMENSIONS:
        params.append(
            {
                "name": dim,
                "in": "query",
                "description": f"only these {dim} values; repeat the parameter or separate with commas",
                "style": "form",
                "explode": True,
                "schema": {"type": "array", "items": {"type": "string"}},
            }
        )
    return params


def _error_responses() -> dict[str, Any]:
    return {
        "400": {"$ref": "#/components/responses/BadRequest"},
        "401": {"$ref": "#/components/responses/Unauthorized"},
    }


def _metrics_operation() -> dict[str, Any]:
    return {
        "operationId": "getMetrics",
        "summary": "Metrics over a time range, filtered, grouped and bucketed",
        "description": (
            "One row per (time bucket, group) with data for the metrics asked (a group of only semantic-cache "
            "lookups, which have no provider or model, is a row when a cache metric is asked). "
            "Without group_by every bucket of the range "
            "is present, empty ones included; without granularity there is one row of totals per group."
        ),
        "parameters": [
            {
                "name": "metrics",
                "in": "query",
                "required": True,
                "description": "comma-separated metric names",
                "style": "form",
                "explode": False,
                "schema": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/MetricName"}},
            },
            *_time_params(),
            {
                "name": "granularity",
                "in": "query",
                "description": "time buckets (UTC); none = totals over the whole range",
                "schema": {"type": "string", "enum": list(GRANULARITIES)},
            },
            {
                "name": "group_by",
                "in": "query",
                "description": "comma-separated dimensions to group by (a repeated one counts once)",
                "style": "form",
                "explode": False,
                "schema": {"type": "array", "items": {"type": "string", "enum": list(DIMENSIONS)}},
            },
            *_filter_params(),
            {
                "name": "format",
                "in": "query",
                "description": "json (default) or csv: the same rows, with a header row, as an attachment",
                "schema": {"type": "string", "enum": list(FORMATS)},
            },
        ],
        "responses": {
            "200": {
                "description": "the rows; text/csv when format=csv",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/MetricsResponse"}},
                    "text/csv": {
                        "schema": {
                            "type": "string",
                            "description": "header row: time, the group_by dimensions, then each metric "
                            "(a percentile followed by its _samples column); null is an empty cell",
                        }
                    },
                },
                "headers": {
                    "Content-Disposition": {
                        "description": "with format=csv: attachment; filename=observatory-metrics-<start>-<end>.csv",
                        "schema": {"type": "string"},
                    }
                },
            },
            **_error_responses(),
        },
    }


def _dimensions_operation() -> dict[str, Any]:
    return {
        "operationId": "getDimensionValues",
        "summary": "Values a dimension takes in a time range (within the caller's scope)",
        "parameters": [
            {
                "name": "dimension",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": list(DIMENSIONS)},
            },
            *_time_params(),
            *_filter_params(),
        ],
        "responses": {
            "200": {
                "description": "the values, sorted",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DimensionValues"}}},
            },
            **_error_responses(),
        },
    }


def _openapi_operation() -> dict[str, Any]:
    return {
        "operationId": "getOpenApiDocument",
        "summary": "This document",
        "security": [],
        "responses": {
            "200": {
                "description": "the OpenAPI 3.1 description of this API",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }


def _schemas() -> dict[str, Any]:
    time_echo = {
        "range": {"type": ["string", "null"], "enum": [*RANGES, None]},
        "start": {"type": "string", "format": "date-time"},
        "end": {"type": "string", "format": "date-time"},
    }
    return {
        "Error": _error_schema(),
        "MetricName": _metric_name_schema(),
        "Filters": _filters_schema(),
        "Row": _row_schema(),
        "MetricsResponse": {
            "type": "object",
            "required": ["query", "metrics", "rows"],
            "additionalProperties": False,
            "properties": {
                "query": {
                    "type": "object",
                    "description": "the question as understood: the resolved start and end included",
                    "required": ["metrics", "range", "start", "end", "granularity", "group_by", "filters"],
                    "additionalProperties": False,
                    "properties": {
                        "metrics": {"type": "array", "items": {"$ref": "#/components/schemas/MetricName"}},
                        **time_echo,
                        "granularity": {"type": ["string", "null"], "enum": [*GRANULARITIES, None]},
                        "group_by": {"type": "array", "items": {"type": "string", "enum": list(DIMENSIONS)}},
                        "filters": {"$ref": "#/components/schemas/Filters"},
                    },
                },
                "metrics": {
                    "type": "object",
                    "description": "unit and description of each metric asked for",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["unit", "description"],
                        "additionalProperties": False,
                        "properties": {"unit": {"type": "string"}, "description": {"type": "string"}},
                    },
                },
                "rows": {"type": "array", "items": {"$ref": "#/components/schemas/Row"}},
            },
        },
        "DimensionValues": {
            "type": "object",
            "required": ["dimension", "query", "values"],
            "additionalProperties": False,
            "properties": {
                "dimension": {"type": "string", "enum": list(DIMENSIONS)},
                "query": {
                    "type": "object",
                    "required": ["range", "start", "end", "filters"],
                    "additionalProperties": False,
                    "properties": {**time_echo, "filters": {"$ref": "#/components/schemas/Filters"}},
                },
                "values": {"type": "array", "items": {"type": "string"}},
            },
        },
    }


def _json_error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


@cache
def document() -> dict[str, Any]:
    percentiles = ", ".join(f"p{digits}" for digits in LISTED_PERCENTILES)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Observatory API",
            "version": API_VERSION,
            "description": DESCRIPTION + f"\nListed percentiles: {percentiles}; any other `_p<N>` works too.\n",
        },
        "paths": {
            "/api/v1/metrics": {"get": _metrics_operation()},
            "/api/v1/dimensions/{dimension}": {"get": _dimensions_operation()},
            "/api/v1/openapi.json": {"get": _openapi_operation()},
        },
        "components": {
            "schemas": _schemas(),
            "responses": {
                "BadRequest": _json_error("bad input: an unknown metric, dimension or parameter, a bad date or range"),
                "Unauthorized": {
                    **_json_error("no session and no valid read key"),
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                },
            },
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "read key (obsr_...)",
                    "description": "a read key: admin > Read keys, or manage.py create_read_key USERNAME",
                },
                "cookieAuth": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": settings.SESSION_COOKIE_NAME,
                    "description": "the session of a logged-in user",
                },
            },
        },
        "security": [{"bearerAuth": []}, {"cookieAuth": []}],
    }
