from __future__ import annotations

from django.urls import path

from apps.api import views

app_name = "api"

urlpatterns = [
    path("metrics", views.metrics, name="metrics"),
    path("dimensions/<str:dimension>", views.dimensions, name="dimensions"),
    path("openapi.json", views.openapi_document, name="openapi"),
]
