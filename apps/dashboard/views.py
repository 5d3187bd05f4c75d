"""Dashboard pages. Thin: parameters from the URL, numbers from panels (the query layer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from apps.accounts.access import scope_for
from apps.accounts.models import IngestKey
from apps.dashboard import panels
from apps.dashboard.page_reads import page_reads
from apps.dashboard.params import BadParameter, filter_bar_context, parse_params
from observatory.csv_export import csv_response


def table_csv(rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...], filename: str) -> HttpResponse:
    # The one CSV writer (observatory.csv_export): telemetry-sourced names never run as formulas.
    header = [label for _, label in columns]
    return csv_response(header, ([row.get(key) for key, _ in columns] for row in rows), filename)


def empty_state_context(request: HttpRequest) -> dict[str, Any]:
    return {
        "has_keys": IngestKey.objects.active().exists(),
        "otlp_endpoint": request.build_absolute_uri("/").rstrip("/"),
    }


@login_required
@page_reads
def overview(request: HttpRequest) -> HttpResponse:
    try:
        params = parse_params(request.GET)
    except BadParameter as exc:
        return render(request, "dashboard/overview.html", {"error": str(exc)}, status=400)
    scope = scope_for(request.user)
    csv_table = request.GET.get("csv")
    if csv_table in ("features", "tenants"):
        rows = panels.top_by_cost(params, scope, csv_table[:-1])
        return table_csv(rows, panels.TABLE_COLUMNS, f"observatory top {csv_table} {params.describe_range()}")
    head = panels.headline(params, scope)
    context: dict[str, Any] = {**filter_bar_context(params), **empty_state_context(request), "head": head}
    if head.has_data:
        context.update(
            charts=[
                panels.cost_by(params, scope, "feature"),
                panels.traffic_over_time(params, scope),
                panels.percentiles_over_time(params, scope, "e2e_ms", "Latency percentiles"),
                panels.percentiles_over_time(params, scope, "ttft_ms", "Time to first token percentiles"),
                panels.caching_over_time(params, scope),
            ],
            top_features=_with_filter_links(params, panels.top_by_cost(params, scope, "feature"), "feature"),
            top_tenants=_with_filter_links(params, panels.top_by_cost(params, scope, "tenant"), "tenant"),
            csv_features=params.querystring(csv="features"),
            csv_tenants=params.querystring(csv="tenants"),
        )
    return render(request, "dashboard/overview.html", context)


def _with_filter_links(params: Any, rows: list[dict[str, Any]], dimension: str) -> list[dict[str, Any]]:
    for row in rows:
        row["filter_qs"] = params.with_filter(dimension, row[dimension]).querystring()
    return rows


_PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@require_GET
@cache_control(max_age=86400, public=True)
def plotly_js(request: HttpRequest) -> FileResponse:
    """plotly.js from the installed plotly package: users run offline, so no CDN."""
    return FileResponse(_PLOTLY_JS.open("rb"), content_type="text/javascript")
