from __future__ import annotations

from django.urls import path

from apps.reports import views

app_name = "reports"
urlpatterns = [
    path("", views.archive, name="reviews"),
    path("<int:review_id>/", views.review_detail, name="review-detail"),
    path("preview/", views.preview, name="review-preview"),
    path("settings/", views.review_settings, name="review-settings"),
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
]
