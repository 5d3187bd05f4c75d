"""Dashboard pages. Thin: parameters from the URL, numbers from panels (the query layer)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import plotly
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from apps.accounts.access import scope_for
from apps.accounts.models import IngestKey
from apps.alerts.panel import overview_panel
from apps.dashboard import panels
from apps.dashboard.page_reads import page_reads
from apps.dashboard.params import BadParameter, check_text, default_params, filter_bar_context, parse_params
from apps.insights.marks import chart_marks
from observatory.csv_export import csv_response

log = logging.getLogger(__name__)
View = TypeVar("View", bound=Callable[..., HttpResponse])


def bad_request(
    request: HttpRequest,
    message: str,
    template: str = "dashboard/bad_request.html",
    context: dict[str, Any] | None = None,
) -> HttpResponse:
    """A 400 page that says what was wrong, with the filter bar at the default range so the
    person can carry on from there."""
    log.info("400 on %r: %s", request.path, message)
    bar = filter_bar_context(default_params())
    return render(request, template, {**bar, **(context or {}), "error": message}, status=400)


def checked_page(view: View) -> View:
    """Refuse, before the view runs, what the request model refuses on every page: a bad
    time range or filter (apps/metrics/request.py) and a NUL anywhere in the URL's
    parameters or path (PostgreSQL text cannot hold one: it would be a DataError, a 500).
    The view's own parameters (sort, kind, ...) are the view's to check."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return view(request, *args, **kwargs)  # its login_required sends them to log in first
        try:
            for name, value in kwargs.items():
                check_text(name, str(value))
        except BadParameter as exc:
            # This very path is unusable: the filter bar leads to the overview instead.
            return bad_request(request, exc.message, context={"filter_action": reverse("overview")})
        try:
            for name, values in request.GET.lists():
                for value in values:
                    check_text(name, value)
            parse_params(request.GET)
        except BadParameter as exc:
            return bad_request(request, exc.message)
        return view(request, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


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
@checked_page
@page_reads
def overview(request: HttpRequest) -> HttpResponse:
    try:
        params = parse_params(request.GET)
    except BadParameter as exc:
        return bad_request(request, exc.message, "dashboard/overview.html")
    scope = scope_for(request.user)
    csv_table = request.GET.get("csv")
    if csv_table in ("features", "tenants"):
        rows = panels.top_by_cost(params, scope, csv_table[:-1])
        return table_csv(rows, panels.TABLE_COLUMNS, f"observatory top {csv_table} {params.describe_range()}")
    head = panels.headline(params, scope)
    context: dict[str, Any] = {**filter_bar_context(params), **empty_state_context(request), "head": head}
    if head.has_data:
        context["alerts_panel"] = overview_panel(request.user)
        marks = chart_marks(params, scope)  # where the findings of this view's slice began
        context.update(
            charts=[
                panels.cost_by(params, scope, "feature", marks=marks),
                panels.traffic_over_time(params, scope, marks=marks),
                panels.percentiles_over_time(params, scope, "e2e_ms", "Latency percentiles", marks=marks),
                panels.percentiles_over_time(params, scope, "ttft_ms", "Time to first token percentiles", marks=marks),
                panels.caching_over_time(params, scope, marks=marks),
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
