"""The GPU tier pages: the tier's own figures and self-hosted vs API cost. Thin: figures come
from apps.gpu.panels and apps.gpu.compare."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from apps.accounts.access import scope_for
from apps.dashboard.params import BadParameter, filter_bar_context, parse_params
from apps.dashboard.views import bad_request, checked_page, empty_state_context
from apps.gpu import panels
from apps.gpu.compare import compare

# "What moving a feature would have cost last month": the compare page opens on 30 days.
COMPARE_DEFAULT_RANGE = "30d"


@login_required
@checked_page
def gpu_tier(request: HttpRequest) -> HttpResponse:
    try:
        params = parse_params(request.GET)
    except BadParameter as exc:
        return bad_request(request, exc.message)
    scope = scope_for(request.user)
    window = panels.window_for(params.start, params.end, params.describe_range().capitalize())
    # GPU-level figures have no tenant dimension: only for people who see every tenant.
    sees_everything = not scope.limited
    by_tenant, tenant_rows = panels.attributed_by(window, scope, "tenant", params.query_filters())
    by_feature, feature_rows = panels.attributed_by(window, scope, "feature", params.query_filters())
    context = {
        **filter_bar_context(params),
        **empty_state_context(request),
        "filter_action": reverse("gpu-tier"),
        "sees_everything": sees_everything,
        "attribution_charts": [by_tenant, by_feature],
        "feature_rows": feature_rows,
        "has_attribution": bool(tenant_rows or feature_rows),
    }
    if sees_everything:
        has_data = panels.has_gpu_data(window)
        context["has_gpu_data"] = has_data
        if has_data:
            context["summary"] = panels.cost_summary(window)
            context["gpu_charts"] = [panels.idle_cost_chart(window), *panels.gpu_panels(window)]
            context["engine_charts"] = panels.engine_panels(window)
    return render(request, "gpu/tier.html", context)


@login_required
@checked_page
def gpu_compare(request: HttpRequest) -> HttpResponse:
    query = request.GET.copy()
    if "range" not in query and "start" not in query:
        query["range"] = COMPARE_DEFAULT_RANGE
    try:
        params = parse_params(query)
    except BadParameter as exc:
        return bad_request(request, exc.message)
    scope = scope_for(request.user)
    idle = None
    if not scope.limited:
        window = panels.window_for(params.start, params.end, "")
        idle = panels.cost_summary(window).idle
    comparison = compare(params.start, params.end, scope, idle)
    context = {
        **filter_bar_context(params),
        "filter_action": reverse("gpu-compare"),
        "comparison": comparison,
        "range_days": round((params.end - params.start) / timedelta(days=1)),
    }
    return render(request, "gpu/compare.html", context)
