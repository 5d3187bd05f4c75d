from __future__ import annotations

from django.contrib import admin

from apps.gpu.models import ScrapeTarget


@admin.register(ScrapeTarget)
class ScrapeTargetAdmin(admin.ModelAdmin):
    list_display = ("url", "kind", "project", "enabled", "interval_seconds", "last_success_at",
                    "consecutive_failures", "last_error", "next_scrape_at")  # fmt: skip
    list_filter = ("kind", "enabled", "project")
    search_fields = ("url", "instance")
    readonly_fields = ("last_scraped_at", "last_success_at", "last_error", "consecutive_failures",
                       "last_sample_count")  # fmt: skip
