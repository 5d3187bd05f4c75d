"""Rollup hours set aside after failing (RollupFailure): visible, read-only.

Each row is a noted (project, hour) whose recompute raised; the sweep retries it at
next_attempt_at and deletes the row once it succeeds. The hour's figures are meanwhile read
from raw spans, so nothing is missing from the pages: the row says the rollup needs a look
(the error), not that data was lost.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from apps.rollups.models import RollupFailure


@admin.register(RollupFailure)
class RollupFailureAdmin(admin.ModelAdmin):
    list_display = ("project", "hour", "attempts", "next_attempt_at", "last_failed_at", "short_error")
    list_filter = ("project",)
    ordering = ("hour", "project")
    readonly_fields = ("project", "hour", "error", "attempts", "first_failed_at", "last_failed_at", "next_attempt_at")

    @admin.display(description="error")
    def short_error(self, failure: RollupFailure) -> str:
        first_line = failure.error.splitlines()[0] if failure.error else ""
        return first_line[:120]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RollupFailure | None = None) -> bool:
        return False
