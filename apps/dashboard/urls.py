from __future__ import annotations

from django.urls import path

from apps.dashboard import views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("vendor/plotly.min.js", views.plotly_js, name="plotly-js"),
]
