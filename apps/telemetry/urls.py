from __future__ import annotations

from django.urls import path

from apps.telemetry import health, views

urlpatterns = [
    path("v1/traces", views.receive_traces, name="otlp-traces"),
    path("healthz", health.healthz, name="healthz"),
]
