from __future__ import annotations

from django.urls import path

from apps.insights import views

urlpatterns = [
    path("", views.finding_list, name="findings"),
    path("<int:pk>/", views.finding_detail, name="finding-detail"),
]
