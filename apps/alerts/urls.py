from __future__ import annotations

from django.urls import path

from apps.alerts import views

urlpatterns = [
    path("", views.index, name="alerts-index"),
    path("rules/new/", views.rule_new, name="alert-rule-new"),
    path("rules/<int:pk>/", views.rule_detail, name="alert-rule"),
    path("channels/", views.channels, name="alert-channels"),
    path("channels/new/", views.channel_new, name="alert-channel-new"),
    path("channels/<int:pk>/", views.channel_detail, name="alert-channel"),
    path("history/", views.history, name="alert-history"),
]
