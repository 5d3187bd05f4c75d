"""Alerts in admin: rules, channels (status and reason visible), silences, and the history
(notifications and delivery attempts) read-only."""

from __future__ import annotations

from django.contrib import admin

from apps.alerts.models import AlertRule, AlertState, Channel, Delivery, Notification, Silence


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "enabled", "project", "window_minutes", "critical_threshold", "next_evaluation_at")
    list_filter = ("kind", "enabled")
    search_fields = ("name",)
    filter_horizontal = ("channels",)


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "status", "disabled_reason", "consecutive_failures", "owner")
    list_filter = ("kind", "status")
    readonly_fields = ("disabled_at", "owner_told_at", "consecutive_failures")


@admin.register(Silence)
class SilenceAdmin(admin.ModelAdmin):
    list_display = ("__str__", "rule", "tenant", "ends_at", "reason")


@admin.register(AlertState)
class AlertStateAdmin(admin.ModelAdmin):
    list_display = ("rule", "group_key", "tenant", "level", "episode", "value", "opened_at", "resolved_at")
    list_filter = ("level",)
    readonly_fields = [field.name for field in AlertState._meta.fields]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("title", "event", "level", "silenced", "created_at")
    list_filter = ("event", "level", "silenced")
    readonly_fields = [field.name for field in Notification._meta.fields]


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("channel", "attempt", "result", "http_status", "smtp_reply", "created_at")
    list_filter = ("result",)
    readonly_fields = [field.name for field in Delivery._meta.fields]
