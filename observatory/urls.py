from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

# Refusals before any view (a Host outside ALLOWED_HOSTS): JSON under /api/, OTLP on the receiver.
handler400 = "observatory.errors.bad_request"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/", include("apps.api.urls")),
    path("alerts/", include("apps.alerts.urls")),
    path("findings/", include("apps.insights.urls")),
    path("reviews/", include("apps.reports.urls")),
    path("", include("apps.telemetry.urls")),
    path("", include("apps.gpu.urls")),
    path("", include("apps.dashboard.urls")),
]
