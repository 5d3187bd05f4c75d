from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import IngestKey, Project, ReadKey, TenantAccess

# Shown beside every place an ingest key can be revoked: the receiver caches no key.
INGEST_REVOKE_HELP = "Set to revoke: the receiver refuses the key from its next request on, in every process."


class _RevokeHelp:
    def formfield_for_dbfield(self, db_field: models.Field[Any, Any], request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "revoked_at":
            kwargs["help_text"] = INGEST_REVOKE_HELP
        return super().formfield_for_dbfield(db_field, request, **kwargs)  # type: ignore[misc]


class IngestKeyInline(_RevokeHelp, admin.TabularInline):
    model = IngestKey
    extra = 0
    fields = ("name", "prefix", "created_at", "revoked_at")
    readonly_fields = ("prefix", "created_at")


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")
    inlines = [IngestKeyInline]


@admin.register(IngestKey)
class IngestKeyAdmin(_RevokeHelp, admin.ModelAdmin):
    list_display = ("name", "project", "prefix", "created_at", "revoked_at")
    list_filter = ("project",)
    fields = ("project", "name", "prefix", "created_at", "revoked_at")
    readonly_fields = ("prefix", "created_at")
    actions = ["revoke"]

    @admin.action(description="Revoke selected ingest keys (refused from their next request on)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[IngestKey]) -> None:
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(
            request, f"Revoked {revoked} ingest key(s): the receiver refuses them from their next request on."
        )

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            plaintext = obj.set_new_secret()
            messages.warning(request, f"New ingest key (shown once, copy it now): {plaintext}")
        super().save_model(request, obj, form, change)


@admin.register(ReadKey)
class ReadKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    fields = ("user", "name", "prefix", "created_at", "revoked_at")
    readonly_fields = ("prefix", "created_at")
    autocomplete_fields = ("user",)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            plaintext = obj.set_new_secret()
            messages.warning(request, f"New read key (shown once, copy it now): {plaintext}")
        super().save_model(request, obj, form, change)


class TenantAccessInline(admin.StackedInline):
    model = TenantAccess
    can_delete = True
    verbose_name_plural = "tenant access (without it, a non-staff user sees nothing)"
    fields = ("all_tenants", "tenants")


class ReadKeyInline(admin.TabularInline):
    """The user's read keys, to revoke; new ones are made on the read key page, which shows
    the secret once."""

    model = ReadKey
    extra = 0
    fields = ("name", "prefix", "created_at", "revoked_at")
    readonly_fields = ("name", "prefix", "created_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


User = get_user_model()


# The stock user admin, with the user's tenant access and read keys on the same page.
# django.contrib.auth registers its UserAdmin first (it comes first in INSTALLED_APPS).
class ObservatoryUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, TenantAccessInline, ReadKeyInline]


admin.site.unregister(User)
admin.site.register(User, ObservatoryUserAdmin)
