from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from apps.accounts.models import IngestKey, Project


class IngestKeyInline(admin.TabularInline):
    model = IngestKey
    extra = 0
    fields = ("name", "prefix", "created_at", "revoked_at")
    readonly_fields = ("prefix", "created_at")


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")
    inlines = [IngestKeyInline]


@admin.register(IngestKey)
class IngestKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "prefix", "created_at", "revoked_at")
    list_filter = ("project",)
    fields = ("project", "name", "prefix", "created_at", "revoked_at")
    readonly_fields = ("prefix", "created_at")

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            plaintext = obj.set_new_secret()
            messages.warning(request, f"New ingest key (shown once, copy it now): {plaintext}")
        super().save_model(request, obj, form, change)
