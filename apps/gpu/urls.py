from __future__ import annotations

from django.urls import path

from apps.gpu import page_views, views

urlpatterns = [
    path("v1/metrics", views.receive_metrics, name="otlp-metrics"),
    path("gpu/", page_views.gpu_tier, name="gpu-tier"),
    path("gpu/compare/", page_views.gpu_compare, name="gpu-compare"),
]
