from __future__ import annotations

from django.urls import path

from apps.gpu import views

urlpatterns = [
    path("v1/metrics", views.receive_metrics, name="otlp-metrics"),
]
