"""One reader's review: the week's figures (shared by scope) put into words, tables, charts
and links for that reader, as the subject, text and HTML parts of one email.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from email.utils import make_msgid
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core import signing
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from apps.metrics.query import Scope
from apps.reports import charts as chart_images
from apps.reports.events import AlertLine, FindingLine
from apps.reports.figures import Line, WeekFigures, dashboard_link, ratio_change
from apps.reports.formatting import (
    UNKNOWN,
    count,
    duration_ms,
    money,
    percent,
    plural,
    signed_money,
    signed_percent,
)
from apps.reports.narrative import what_changed
from apps.reports.weeks import zone

UNSUBSCRIBE_SALT = "reports.unsubscribe"
ROWS_SHOWN = 10
# The most severe findings and alerts are listed; past these, a count and a link to the rest.
FINDINGS_SHOWN = 8
ALERTS_SHOWN = 8


@dataclass
class Image:
    content_id: str  # without angle brackets
    alt: str
    png: bytes


@dataclass
class RenderedCharts:
    """A scope's charts, rendered once and shared by every reader of that scope."""

    charts: list[chart_images.Chart]
    pngs: list[bytes | None]

    @classmethod
    def of(cls, figures: WeekFigures) -> RenderedCharts:
        charts = chart_images.charts_for(figures)
        return cls(charts, chart_images.render_png(charts))


@dataclass
class ComposedReview:
    subject: str
    text: str
    html: str
    images: list[Image] = field(default_factory=list)


def absolute(path: str) -> str:
    return f"{settings.PUBLIC_URL}{path}"


def unsubscribe_token(user_id: int) -> str:
    # Not timestamped: an unsubscribe link in a months-old email must still work.
    return signing.dumps(user_id, salt=UNSUBSCRIBE_SALT)


def user_for_token(token: str) -> int:
    """The user id a token was made for; signing.BadSignature when it was not made here."""
    return int(signing.loads(token, salt=UNSUBSCRIBE_SALT))


def unsubscribe_url(user_id: int) -> str:
    return absolute(reverse("reports:unsubscribe", args=[unsubscribe_token(user_id)]))


def describe_scope(scope: Scope) -> str:
    if not scope.limited:
        return "all tenants"
    tenants = scope.tenants or ()
    if not tenants:
        return "no tenants (ask an administrator for access)"
    return ("tenant " if len(tenants) == 1 else "tenants ") + ", ".join(tenants)


def compose(user: Any, figures: WeekFigures, rendered: RenderedCharts) -> ComposedReview:
    context = review_context(user, figures, rendered)
    subject = render_to_string("email/weekly_review_subject.txt", context).strip()
    text = render_to_string("email/weekly_review.txt", context)
    html = render_to_string("email/weekly_review.html", context)
    images = [image for image in context["images"] if image is not None]
    return ComposedReview(subject=" ".join(subject.split()), text=text, html=html, images=images)


def review_context(user: Any, figures: WeekFigures, rendered: RenderedCharts) -> dict[str, Any]:
    week, totals, previous = figures.week, figures.totals, figures.previous
    overview = absolute(dashboard_link("overview", week, compare="1"))
    images: list[Image | None] = []
    for chart, png in zip(rendered.charts, rendered.pngs, strict=True):
        images.append(Image(f"{chart.name}.{week.label}@observatory", chart.alt, png) if png else None)
    by_name = {chart.name: image for chart, image in zip(rendered.charts, images, strict=True)}
    up, down = figures.movers(settings.REVIEW_TOP_MOVERS)
    largest_day = max(cost or Decimal(0) for day in figures.days for cost in (day.cost, day.previous_cost))
    cost_change = ratio_change(totals["cost_usd"], previous["cost_usd"])
    events = figures.events
    tz = zone(week.timezone)
    return {
        "user": user,
        "week": week,
        "week_text": week.describe(),
        "scope_text": describe_scope(figures.scope),
        "has_data": figures.has_data,
        "cost": money(totals["cost_usd"]),
        "cost_change": signed_percent(cost_change) if previous["cost_usd"] else "no week before",
        "cost_change_amount": signed_money(_delta(totals["cost_usd"], previous["cost_usd"])),
        "cost_unknown": totals["cost_usd"] is None,
        "unpriced": totals["cost_unknown_requests"] or 0,
        "unpriced_share": percent((totals["cost_unknown_requests"] or 0) / totals["requests"], 1)
        if totals["requests"]
        else "0%",
        "what_changed": what_changed(figures),
        "tiles": _tiles(figures, overview),
        "overview_url": overview,
        "prices_url": absolute(dashboard_link("prices", week)),
        "features": _rows(figures.features),
        "tenants": _rows(figures.tenants),
        "models": _rows(figures.models),
        "movers_up": _rows(up, bars=False),
        "movers_down": _rows(down, bars=False),
        "days": [
            {
                "label": f"{day.day:%a %d %b}",
                "cost": money(day.cost),
                "previous": money(day.previous_cost),
                "bar": chart_images.bar_width(day.cost, largest_day),
                "previous_bar": chart_images.bar_width(day.previous_cost, largest_day),
            }
            for day in figures.days
        ],
        "split": _split(figures),
        "findings": [_finding(line, tz) for line in events.findings[:FINDINGS_SHOWN]],
        "findings_count": len(events.findings),
        "findings_more": max(len(events.findings) - FINDINGS_SHOWN, 0),
        "findings_url": absolute(events.findings_link),
        "alerts": [_alert(line, tz) for line in events.alerts[:ALERTS_SHOWN]],
        "alerts_count": len(events.alerts),
        "alerts_more": max(len(events.alerts) - ALERTS_SHOWN, 0),
        "alerts_url": absolute(reverse("alert-history")),
        "scope_limited": figures.scope.limited,
        "daily_image": by_name.get("daily-cost"),
        "feature_image": by_name.get("cost-by-feature"),
        "images": images,
        "settings_url": absolute(reverse("reports:review-settings")),
        "archive_url": absolute(reverse("reports:reviews")),
        "unsubscribe_url": unsubscribe_url(user.pk),
        "public_host": urlsplit(settings.PUBLIC_URL).netloc,
    }


def _when(moment: datetime, tz: ZoneInfo) -> str:
    return f"{moment.astimezone(tz):%a %d %b %H:%M}"


def _finding(line: FindingLine, tz: ZoneInfo) -> dict[str, Any]:
    state = f"{line.status} {_when(line.ended_at, tz)}" if line.ended_at is not None else "still open"
    seen = ("new: first seen " if line.new_this_week else "first seen ") + _when(line.first_seen_at, tz)
    if line.started_at is not None:
        seen += f", change began {_when(line.started_at, tz)}"
    return {
        "title": line.title,
        "severity": line.severity,
        "kind": "regression" if line.kind == "regression" else "drift",
        "slice": line.slice_text,
        "seen": seen,
        "state": state,
        "url": absolute(line.link),
    }


def _alert(line: AlertLine, tz: ZoneInfo) -> dict[str, Any]:
    state = f"resolved {_when(line.resolved_at, tz)}" if line.resolved_at is not None else "still firing"
    sent = plural(line.notifications, "notification")
    if line.silenced:
        sent += f" ({line.silenced} silenced)"
    if line.deliveries_failed:
        failed = line.deliveries_failed
        sent += f", {failed:,} failed deliver{'y' if failed == 1 else 'ies'}"
    label = line.rule_name if line.group_label in ("", "whole slice") else f"{line.rule_name}: {line.group_label}"
    return {
        "label": label,
        "level": line.level,
        "fired": _when(line.fired_at, tz),
        "state": state,
        "sent": sent,
        "url": absolute(line.link),
    }


def _split(figures: WeekFigures) -> dict[str, Any] | None:
    """Self-hosted vs API cost rows, or None when neither week had a self-hosted call or idle
    GPU cost (no GPU tier: the section would only repeat the total)."""
    split, week = figures.split, figures.week
    if not split.has_self_hosted:
        return None

    def row(name: str, cost: Decimal | None, before: Decimal | None, requests: int | None, link: str) -> dict[str, Any]:
        change = signed_percent(ratio_change(cost, before)) if before else "new" if cost else ""
        shown = plural(requests, "request") if requests is not None else ""
        return {"name": name, "cost": money(cost), "was": money(before), "change": change, "requests": shown,
                "url": absolute(link)}  # fmt: skip

    rows = [
        row("Self-hosted (GPU time attributed to calls)", split.self_hosted, split.previous_self_hosted,
            split.self_hosted_requests, dashboard_link("gpu-tier", week)),
        row("API providers", split.api, split.previous_api, split.api_requests, dashboard_link("models", week)),
    ]  # fmt: skip
    idle = None
    if split.idle is not None:
        idle = row("Idle GPU capacity (not in the total)", split.idle, split.previous_idle, None,
                   dashboard_link("gpu-tier", week))  # fmt: skip
    return {"rows": rows, "idle": idle}


def _delta(current: Decimal | None, previous: Decimal | None) -> Decimal | None:
    if current is None and previous is None:
        return None
    return (current or Decimal(0)) - (previous or Decimal(0))


def _tiles(figures: WeekFigures, overview: str) -> list[dict[str, str]]:
    totals, previous = figures.totals, figures.previous

    def tile(name: str, metric: str, shown: Any, link: str = overview) -> dict[str, str]:
        value, before = totals[metric], previous[metric]
        return {"name": name, "value": shown(value), "was": shown(before),
                "change": signed_percent(ratio_change(value, before)) if before else "", "url": link}  # fmt: skip

    def rate(value: Any) -> str:
        return percent(value, 1)

    return [
        tile("Requests", "requests", count),
        tile("Cost per successful task", "cost_per_successful_task", money),
        tile("Cost per 1,000 requests", "cost_per_1k_requests", money),
        tile("Saved by prompt caching", "cache_savings_usd", money),
        tile("Prompt-cache hit rate", "prompt_cache_hit_rate", rate),
        tile("Latency p95", "e2e_ms_p95", duration_ms),
        tile("Latency p99", "e2e_ms_p99", duration_ms),
        tile("Time to first token p95", "ttft_ms_p95", duration_ms),
        tile("Time to first token p99", "ttft_ms_p99", duration_ms),
        tile("Error rate", "error_rate", rate),
        tile("Retry rate", "retry_rate", rate),
        tile("Unpriced calls", "cost_unknown_requests", count, absolute(dashboard_link("prices", figures.week))),
    ]


def _rows(lines: list[Line], bars: bool = True) -> list[dict[str, Any]]:
    shown = lines[:ROWS_SHOWN]
    largest = max((line.cost or Decimal(0) for line in shown), default=Decimal(0))
    return [
        {
            "label": line.label,
            "url": absolute(line.link),
            # A line of unpriced calls only has an unknown cost, not a zero one.
            "cost": UNKNOWN if line.requests and line.unpriced == line.requests else money(line.cost),
            "previous": money(line.previous_cost) if line.previous_requests else "-",
            "change": UNKNOWN if line.requests and line.unpriced == line.requests else signed_money(line.cost_change),
            "change_ratio": signed_percent(line.cost_change_ratio) if line.previous_requests else "new",
            "requests": count(line.requests),
            "requests_text": plural(line.requests, "request"),
            "unpriced": line.unpriced,
            "bar": chart_images.bar_width(line.cost, largest) if bars else 0,
        }
        for line in shown
    ]


def build_message(
    *,
    to: str,
    subject: str,
    text: str,
    html: str,
    images: list[Image],
    user_id: int,
    message_id: str,
) -> EmailMultiAlternatives:
    """The email as sent: text part, HTML part with its inline images (multipart/related),
    RFC 8058 one-click unsubscribe headers."""
    link = unsubscribe_url(user_id)
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers={
            "Message-ID": message_id,
            "List-Unsubscribe": f"<{link}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": f"Observatory weekly cost review <weekly-review.{urlsplit(settings.PUBLIC_URL).hostname}>",
            "Auto-Submitted": "auto-generated",
        },
    )
    # The HTML and the images it references travel together (multipart/related).
    message.mixed_subtype = "related"  # type: ignore[attr-defined]  # Django 5.2 has it; the stubs do not
    message.attach_alternative(html, "text/html")
    from email.mime.image import MIMEImage

    for image in images:
        part = MIMEImage(image.png, "png")
        part.add_header("Content-ID", f"<{image.content_id}>")
        part.add_header("Content-Disposition", "inline", filename=f"{image.content_id.split('@')[0]}.png")
        message.attach(part)
    return message


def new_message_id() -> str:
    return make_msgid("weekly-review", domain=urlsplit(settings.PUBLIC_URL).hostname or "observatory")


def html_with_data_uris(html: str, images: list[Image]) -> str:
    """The HTML part with its cid: images inlined, for showing it in a browser (preview, archive)."""
    for image in images:
        data = base64.b64encode(image.png).decode()
        html = html.replace(f"cid:{image.content_id}", f"data:image/png;base64,{data}")
    return html
