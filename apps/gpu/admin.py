from __future__ import annotations

from django.contrib import admin

from apps.gpu.models import CostInterval, GpuPrice, ScrapeTarget, ServingInstance


@admin.register(ScrapeTarget)
class ScrapeTargetAdmin(admin.ModelAdmin):
    list_display = ("url", "kind", "project", "enabled", "interval_seconds", "last_success_at",
                    "consecutive_failures", "last_error", "next_scrape_at")  # fmt: skip
    list_filter = ("kind", "enabled", "project")
    search_fields = ("url", "instance")
    readonly_fields = ("last_scraped_at", "last_success_at", "last_error", "consecutive_failures",
                       "last_sample_count")  # fmt: skip


@admin.register(GpuPrice)
class GpuPriceAdmin(admin.ModelAdmin):
    """Editing a price re-attributes nothing by itself: intervals are recomputed when late data
    arrives, or for a range with `manage.py attribute_gpu_costs --since ... --until ...`."""

    list_display = ("provider", "gpu_model_pattern", "usd_per_gpu_hour", "effective_from", "effective_to",
                    "retrieved_on")  # fmt: skip
    list_filter = ("provider",)
    search_fields = ("gpu_model_pattern", "notes")


@admin.register(ServingInstance)
class ServingInstanceAdmin(admin.ModelAdmin):
    list_display = ("name", "gpu_instance", "price_provider", "project")
    list_filter = ("project",)
    search_fields = ("name", "gpu_instance")


@admin.register(CostInterval)
class CostIntervalAdmin(admin.ModelAdmin):
    list_display = ("start", "gpu_instance", "gpus", "gpu_cost_usd", "attributed_usd", "idle_usd", "requests",
                    "unpriced_gpus", "project")  # fmt: skip
    list_filter = ("project", "gpu_instance")
    date_hierarchy = "start"

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
