"""Price catalog in admin: list, filter, search, edit; every change reminds to re-price."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.contrib import admin, messages
from django.db import models
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from apps.pricing.models import Price


def _iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.date().isoformat() if moment.time() == time.min else moment.isoformat()


def reprice_command(periods: list[tuple[datetime, datetime | None]], providers: set[str]) -> str:
    """The `manage.py reprice` line that covers every span the given price periods could price."""
    since = min(start for start, _ in periods)
    ends = [end for _, end in periods]
    if any(end is None for end in ends):
        # Open-ended: up to the end of today (UTC), past any span stored so far.
        until = datetime.combine(timezone.now().astimezone(UTC).date() + timedelta(days=1), time.min, tzinfo=UTC)
    else:
        until = max(end for end in ends if end is not None)
    command = f"python manage.py reprice --since {_iso(since)} --until {_iso(until)}"
    if len(providers) == 1:
        command += f" --provider {next(iter(providers))}"
    return command


class InForceFilter(admin.SimpleListFilter):
    title = "in force"
    parameter_name = "in_force"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("now", "Now"), ("ended", "Ended"), ("future", "Not yet")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Price]) -> QuerySet[Price]:
        now = timezone.now()
        if self.value() == "now":
            return queryset.filter(Q(effective_to__isnull=True) | Q(effective_to__gt=now), effective_from__lte=now)
        if self.value() == "ended":
            return queryset.filter(effective_to__lte=now)
        if self.value() == "future":
            return queryset.filter(effective_from__gt=now)
        return queryset


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = (
        "provider",
        "model_pattern",
        "effective_from",
        "effective_to",
        "input_per_mtok",
        "cached_input_per_mtok",
        "cache_write_per_mtok",
        "output_per_mtok",
        "reasoning_per_mtok",
        "retrieved_on",
    )
    list_filter = ("provider", InForceFilter)
    search_fields = ("model_pattern",)
    date_hierarchy = "effective_from"
    list_per_page = 100
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # pricing pages are https
    fieldsets = (
        (None, {"fields": ("provider", "model_pattern", "effective_from", "effective_to")}),
        (
            "USD per million tokens",
            {
                "fields": (
                    "input_per_mtok",
                    "cached_input_per_mtok",
                    "cache_write_per_mtok",
                    "output_per_mtok",
                    "reasoning_per_mtok",
                )
            },
        ),
        ("Source", {"fields": ("source_url", "retrieved_on", "notes")}),
    )

    def save_model(self, request: HttpRequest, obj: Price, form: Any, change: bool) -> None:
        periods: list[tuple[datetime, datetime | None]] = [(obj.effective_from, obj.effective_to)]
        providers = {obj.provider}
        if change and obj.pk is not None:
            before = Price.objects.filter(pk=obj.pk).values("provider", "effective_from", "effective_to").first()
            if before:
                # Spans the old period priced need re-pricing too (a shortened period frees them).
                periods.append((before["effective_from"], before["effective_to"]))
                providers.add(before["provider"])
        super().save_model(request, obj, form, change)
        self._remind(request, periods, providers)

    def delete_model(self, request: HttpRequest, obj: Price) -> None:
        periods: list[tuple[datetime, datetime | None]] = [(obj.effective_from, obj.effective_to)]
        providers = {obj.provider}
        super().delete_model(request, obj)
        self._remind(request, periods, providers)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Price]) -> None:
        rows = list(queryset.values_list("provider", "effective_from", "effective_to"))
        super().delete_queryset(request, queryset)
        if rows:
            self._remind(request, [(start, end) for _, start, end in rows], {provider for provider, _, _ in rows})

    def _remind(
        self, request: HttpRequest, periods: list[tuple[datetime, datetime | None]], providers: set[str]
    ) -> None:
        # Stored spans keep the cost they were given at ingest until someone re-prices them:
        # cost is data with history, so a price edit never rewrites the past behind anyone's back.
        self.message_user(
            request,
            "Spans already stored keep their old cost until re-priced. Run: " + reprice_command(periods, providers),
            level=messages.WARNING,
        )
