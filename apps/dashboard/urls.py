from __future__ import annotations

from django.urls import path

from apps.dashboard import compare_views, detail_views, prices_views, trace_views, views

# The traces explorer's views are wrapped here rather than decorated in trace_views.py (its
# own module, rewritten separately): the shared page check (views.checked_page) answers a
# bad range, a bad filter or a NUL with the same 400 page as every other page.

urlpatterns = [
    path("", views.overview, name="overview"),
    path("vendor/plotly.min.js", views.plotly_js, name="plotly-js"),
    path("compare/", compare_views.compare, name="compare"),
    path("features/", detail_views.features, name="features"),
    path("features/<path:name>/", detail_views.feature_detail, name="feature-detail"),
    path("tenants/", detail_views.tenants, name="tenants"),
    path("tenants/<path:name>/", detail_views.tenant_detail, name="tenant-detail"),
    path("models/", detail_views.models, name="models"),
    path("models/<str:provider>/<path:model>/", detail_views.model_detail, name="model-detail"),
    path("traces/", views.checked_page(trace_views.traces), name="traces"),
    path("traces/<str:trace_hex>/", views.checked_page(trace_views.trace_detail), name="trace-detail"),
    path("prices/", prices_views.prices, name="prices"),
]
