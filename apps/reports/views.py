"""Review pages: the archive of sent reviews, the preview of any past week, the subscription
settings, and the unsubscribe link (with RFC 8058 one-click POST). Nothing here sends mail."""

from __future__ import annotations

import logging
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from apps.reports.compose import Image, html_with_data_uris, user_for_token
from apps.reports.delivery import BuildCache
from apps.reports.models import ReviewSubscription, WeeklyReview
from apps.reports.weeks import ReviewWeek, timezone_names

log = logging.getLogger(__name__)


@login_required
def archive(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    reviews = WeeklyReview.objects.filter(user=user).order_by("-starts_at")[:104]
    subscription = ReviewSubscription.for_user(user)
    return render(request, "reports/archive.html", {"reviews": reviews, "subscription": subscription})


@login_required
def review_detail(request: HttpRequest, review_id: int) -> HttpResponse:
    # A reader sees only their own reviews, staff anyone's (as support does).
    user: Any = request.user
    reviews = WeeklyReview.objects.all() if user.is_staff else WeeklyReview.objects.filter(user=user)
    review = get_object_or_404(reviews, pk=review_id)
    images = [Image(image.content_id, image.alt, bytes(image.png)) for image in review.images.all()]
    return render(
        request,
        "reports/review.html",
        {
            "review": review,
            "subject": review.subject,
            "text": review.text_body,
            "html": html_with_data_uris(review.html_body, images),
            "recipient": review.recipient,
            "as_sent": True,
        },
    )


@login_required
def preview(request: HttpRequest) -> HttpResponse:
    """Any past week's review, built now exactly as the sweep builds it; staff may preview
    any user's (with that user's scope), others their own."""
    user: Any = request.user
    if request.GET.get("user"):
        if not request.user.is_staff:
            raise Http404("only staff preview other users' reviews")
        user = get_object_or_404(get_user_model(), username=request.GET["user"])
    # Read, not created: a preview changes nobody's subscription.
    subscription = ReviewSubscription.objects.filter(user=user).first()
    zone = subscription.timezone if subscription else "UTC"
    now = timezone.now()
    try:
        asked = request.GET.get("week")
        week = ReviewWeek.parse(asked, zone) if asked else ReviewWeek.last_complete(now, zone)
    except ValueError as exc:
        return render(request, "reports/review.html", {"error": str(exc)}, status=400)
    if week.end > now:
        message = f"{week.label} has not ended yet in {week.timezone}: a review covers a whole past week"
        return render(request, "reports/review.html", {"error": message}, status=400)
    composed = BuildCache().review(user, week)
    return render(
        request,
        "reports/review.html",
        {
            "subject": composed.subject,
            "text": composed.text,
            "html": html_with_data_uris(composed.html, composed.images),
            "recipient": user.email or "(no email address)",
            "preview_user": user,
            "week": week,
            "previous_week": week.previous.label,
            "next_week": ReviewWeek(week.monday.fromordinal(week.monday.toordinal() + 7), week.timezone).label
            if week.end + (week.end - week.start) <= now
            else None,
        },
    )


class SubscriptionForm(forms.ModelForm):
    timezone = forms.ChoiceField(choices=[(name, name) for name in timezone_names()])

    class Meta:
        model = ReviewSubscription
        fields = ("enabled", "weekday", "hour", "timezone")
        labels = {"enabled": "Send me the weekly cost review", "hour": "Hour (0-23, local time)"}


@login_required
@require_http_methods(["GET", "POST"])
def review_settings(request: HttpRequest) -> HttpResponse:
    subscription = ReviewSubscription.for_user(request.user)
    form = SubscriptionForm(request.POST or None, instance=subscription)
    if request.method == "POST":
        if form.is_valid():
            subscription = form.save(commit=False)
            subscription.reschedule()
            subscription.save()
            return redirect("reports:reviews")
        return render(request, "reports/settings.html", {"form": form}, status=400)
    return render(request, "reports/settings.html", {"form": form, "subscription": subscription})


@csrf_exempt  # the signed token is the authority; mail providers' one-click POST has no CSRF token
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    try:
        user_id = user_for_token(token)
    except (signing.BadSignature, ValueError):
        log.warning("unsubscribe with a token this server did not sign: %.40s", token)
        return render(request, "reports/unsubscribe.html", {"bad_token": True}, status=400)
    subscription = ReviewSubscription.objects.filter(user_id=user_id).first()
    if request.method == "GET":
        # A GET never unsubscribes: mail scanners follow links. The page asks for a click.
        subscribed = bool(subscription and subscription.enabled)
        return render(request, "reports/unsubscribe.html", {"token": token, "subscribed": subscribed})
    if subscription is None:
        if not get_user_model().objects.filter(pk=user_id).exists():
            # The account is gone, and with it every subscription: nothing left to stop.
            return _unsubscribed(request)
        # A row that says "off" also keeps the sweep from subscribing a staff user again.
        subscription = ReviewSubscription(user_id=user_id)
    subscription.enabled = False
    subscription.save()
    log.info("user %s unsubscribed from the weekly review (%s)", user_id,
             "one-click" if request.POST.get("List-Unsubscribe") == "One-Click" else "page")  # fmt: skip
    return _unsubscribed(request)


def _unsubscribed(request: HttpRequest) -> HttpResponse:
    if request.POST.get("List-Unsubscribe") == "One-Click":
        return HttpResponse("Unsubscribed.\n", content_type="text/plain")
    return render(request, "reports/unsubscribe.html", {"done": True})
