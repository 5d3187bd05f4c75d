from __future__ import annotations

from django.contrib import admin

from apps.reports.models import ReviewImage, ReviewSubscription, WeeklyReview


@admin.register(ReviewSubscription)
class ReviewSubscriptionAdmin(admin.ModelAdmin):
    list_display = ("user", "enabled", "weekday", "hour", "timezone", "next_send_at")
    list_filter = ("enabled", "weekday", "timezone")
    search_fields = ("user__username", "user__email")


class ReviewImageInline(admin.TabularInline):
    model = ReviewImage
    extra = 0
    fields = ("content_id", "alt")
    readonly_fields = ("content_id", "alt")


@admin.register(WeeklyReview)
class WeeklyReviewAdmin(admin.ModelAdmin):
    # The delivery log: failed and retrying sends show their last error here.
    list_display = ("user", "week", "status", "attempts", "sent_at", "last_error")
    list_filter = ("status", "week")
    search_fields = ("user__username", "recipient", "week")
    readonly_fields = [field.name for field in WeeklyReview._meta.fields]
    inlines = [ReviewImageInline]
