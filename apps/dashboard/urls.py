from __future__ import annotations

from django.urls import path

from apps.dashboard import trace_views, views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("vendor/plotly.min.js", views.plotly_js, name="plotly-js"),
    path("traces/", trace_views.traces, name="traces"),
    path("traces/<str:trace_hex>/", trace_views.trace_detail, name="trace-detail"),
]
