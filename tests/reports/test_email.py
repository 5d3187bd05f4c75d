"""The review as it arrives at a real SMTP server on loopback: both parts, headers, inline
images, links, and nothing of another tenant in a tenant-limited reader's email."""

from __future__ import annotations

import re
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from apps.accounts.models import Project
from apps.reports import delivery
from apps.reports.models import ReviewSubscription, WeeklyReview
from tests.reports.conftest import NOW, PUBLIC_URL, WEEK, Sink, WeekEventRows, self_hosted_traffic

pytestmark = pytest.mark.django_db

# Everything that belongs to tenant acme only: its name, its feature and the model only it uses.
ACME_ONLY = ("acme", "support-chat", "claude-sonnet-4-5", "anthropic")
# What is no one tenant's (tests/reports/conftest.py week_events_rows, self_hosted_traffic).
NO_ONE_TENANTS = ("fingerprint", "Error rate everywhere", "whole slice", "Idle GPU")


def subscribe(user: Any, **fields: Any) -> ReviewSubscription:
    subscription = ReviewSubscription.for_user(user)
    for name, value in {"enabled": True, "next_send_at": NOW - timedelta(hours=1), **fields}.items():
        setattr(subscription, name, value)
    subscription.save()
    return subscription


def sweep_and_send() -> list[int]:
    result = delivery.sweep(NOW)
    for review_id in result.ready:
        assert delivery.send_review(review_id) == (delivery.SendOutcome.SENT, "")
    return result.ready


def parts(message: EmailMessage) -> tuple[str, str, list[EmailMessage]]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    images = [part for part in message.walk() if part.get_content_type() == "image/png"]
    return text.get_content(), html.get_content(), images  # type: ignore[return-value]


def test_a_review_arrives_with_both_parts_headers_and_links(owner: Any, traffic: None, at_now: Any, smtp: Sink) -> None:
    subscribe(owner)
    (review_id,) = sweep_and_send()
    (message,) = smtp.to("owner@example.com")
    text, html, images = parts(message)

    assert message["Subject"].startswith("Weekly cost review 16-22 Nov 2026: $3.75 (+200%)")
    assert message["From"] == "Observatory <reviews@observatory.example.com>"
    review = WeeklyReview.objects.get(pk=review_id)
    assert message["Message-ID"].strip() == review.message_id
    assert review.status == WeeklyReview.Status.SENT and review.sent_at is not None
    # RFC 8058: a one-click unsubscribe URL and the POST body mail providers send to it.
    unsubscribe = re.fullmatch(r"<(https://observatory\.example\.com/reviews/unsubscribe/[^/>]+/)>",
                               message["List-Unsubscribe"].strip())  # fmt: skip
    assert unsubscribe, message["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unsubscribe[1] in text and unsubscribe[1] in html
    # No renderer in this test: HTML/CSS bars, no images, no cid: references.
    assert images == [] and "cid:" not in html and 'class="fill"' in html

    # The text part reads alone: the total, what changed, the breakdowns.
    assert "COST: $3.75 (+200%, +$2.50 against the week before)" in text
    assert "Cost rose 200% ($2.50) to $3.75, 96% of it from support-chat moving to claude-sonnet-4-5 on Tue." in text
    assert "1 call (4.5%) had no known price and is not in the cost figures" in text
    assert "Requests rose 47% to 22, and cost per 1,000 requests rose 105% to $170." in text
    assert "- mystery-model (openai): unknown, unknown (new), 1 request, 1 unpriced" in text
    assert "- support-chat on claude-sonnet-4-5: +$3.00 (new) to $3.00" in text
    assert "- Unpriced calls: 1 / 0" in text
    # Every figure links to the dashboard view that shows it, with the week's range.
    start, end = "start=2026-11-16T00%3A00%3A00%2B00%3A00", "end=2026-11-23T00%3A00%3A00%2B00%3A00"
    assert f"{PUBLIC_URL}/features/support-chat/?{start}&{end}" in text
    assert f"{PUBLIC_URL}/models/anthropic/claude-sonnet-4-5/?{start}&{end}" in text
    assert f"{PUBLIC_URL}/tenants/globex/?{start}&{end}" in text
    assert f'href="{PUBLIC_URL}/?{start}&amp;{end}&amp;compare=1"' in html
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert hrefs and all(href.startswith(PUBLIC_URL + "/") for href in hrefs), hrefs
    assert "<script" not in html and not re.search(r'src="https?:', html)


def test_charts_are_inline_png_images_referenced_by_content_id(
    owner: Any, settings: Any, traffic: None, at_now: Any, smtp: Sink
) -> None:
    settings.REVIEW_CHART_IMAGES = True
    subscribe(owner)
    sweep_and_send()
    (message,) = smtp.to("owner@example.com")
    _, html, images = parts(message)
    assert len(images) == 2
    for image in images:
        content_id = image["Content-ID"].strip("<>")
        assert f'src="cid:{content_id}"' in html
        assert image.get_content_disposition() == "inline"
        png = image.get_content()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    alts = re.findall(r'<img [^>]*alt="([^"]+)"', html)
    assert len(alts) == 2 and alts[0].startswith("Cost per day (USD), 16-22 Nov 2026")
    # The related part holds the HTML and its images together (multipart/related).
    assert message.get_content_type() == "multipart/related"


def test_a_tenant_limited_reader_sees_no_other_tenant_anywhere(
    owner: Any, outsider: Any, project: Project, settings: Any, traffic: None, week_events: WeekEventRows,
    at_now: Any, smtp: Sink,
) -> None:  # fmt: skip
    settings.REVIEW_CHART_IMAGES = True
    self_hosted_traffic(project)
    subscribe(owner)
    subscribe(outsider)
    sweep_and_send()
    (message,) = smtp.to("outsider@example.com")
    text, html, images = parts(message)
    alts = " ".join(re.findall(r'alt="([^"]*)"', html))
    assert len(images) == 2 and alts
    everything = "\n".join([message.as_string(), text, html, alts])
    # Nothing of acme, nor the finding, alert and idle GPU cost that are no one tenant's.
    for name in (*ACME_ONLY, *NO_ONE_TENANTS):
        assert name.lower() not in everything.lower(), name
    # Their own finding and alert are there, in both parts.
    for part in (text, html):
        assert week_events.globex_drift.title in part and "p99 per tenant: tenant globex" in part
    assert "Only findings and alerts about your tenants are listed" in text
    # Its totals are globex's: 7 priced calls at $0.05, one unpriced, 8 self-hosted at $0.03
    # ($0.25 + 4 x $0.02 the week before).
    assert message["Subject"] == "Weekly cost review 16-22 Nov 2026: $0.59 (+79%)"
    assert "covering tenant globex" in text
    # The owner's email, built in the same sweep, does name acme: the scopes did not mix.
    (owners,) = smtp.to("owner@example.com")
    assert "support-chat" in parts(owners)[0]


def test_readers_with_one_scope_share_the_figures(
    owner: Any, teammate: Any, outsider: Any, django_user_model: Any, traffic: None, at_now: Any, smtp: Sink
) -> None:
    second = django_user_model.objects.create_user("lead2", "lead2@example.com", is_staff=True)
    for user in (owner, teammate, outsider, second):
        subscribe(user)
    result = delivery.sweep(NOW)
    # owner, teammate and lead2 see everything; the outsider sees globex.
    assert len(result.ready) == 4 and result.scopes == 2


def test_a_refused_send_is_retried_and_visible(owner: Any, traffic: None, at_now: Any, smtp: Sink) -> None:
    subscribe(owner)
    (review_id,) = delivery.sweep(NOW).ready
    smtp.refuse = 1
    outcome, error = delivery.send_review(review_id)
    assert outcome == delivery.SendOutcome.RETRY and "451" in error
    review = WeeklyReview.objects.get(pk=review_id)
    assert review.status == WeeklyReview.Status.RETRYING and "451" in review.last_error
    assert delivery.send_review(review_id) == (delivery.SendOutcome.SENT, "")
    assert WeeklyReview.objects.get(pk=review_id).attempts == 2
    # Sent: another delivery of the same task sends nothing.
    assert delivery.send_review(review_id)[0] == delivery.SendOutcome.SKIPPED
    assert len(smtp.to("owner@example.com")) == 1


def test_a_permanent_refusal_fails_without_retrying(owner: Any, traffic: None, at_now: Any, smtp: Sink) -> None:
    subscribe(owner)
    (review_id,) = delivery.sweep(NOW).ready
    smtp.refuse, smtp.refuse_with = 1, "550 5.1.1 no such mailbox"
    outcome, error = delivery.send_review(review_id)
    assert outcome == delivery.SendOutcome.FAILED and "550" in error
    assert WeeklyReview.objects.get(pk=review_id).status == WeeklyReview.Status.FAILED


def test_the_sweep_moves_each_subscription_to_its_next_send_time(
    outsider: Any, traffic: None, at_now: Any, smtp: Sink
) -> None:
    subscription = subscribe(outsider, weekday=0, hour=8, timezone="Europe/Paris")
    delivery.sweep(NOW)
    subscription.refresh_from_db()
    assert subscription.next_send_at.isoformat() == "2026-11-30T07:00:00+00:00"
    # Not due again before then: a second sweep claims nothing.
    assert delivery.sweep(NOW + timedelta(minutes=15)).ready == []


def test_the_send_task_retries_then_gives_up_visibly(
    owner: Any, teammate: Any, settings: Any, traffic: None, at_now: Any, smtp: Sink
) -> None:
    from apps.reports.tasks import send_review

    subscribe(owner)
    subscribe(teammate)
    first, second = delivery.sweep(NOW).ready
    # Eagerly applied, a retry runs again at once: two refusals, then the third try is sent.
    smtp.refuse = 2
    result = send_review.apply(args=[first])
    assert result.state == "SUCCESS" and result.result == delivery.SendOutcome.SENT
    assert WeeklyReview.objects.get(pk=first).attempts == 3
    # Out of retries: the review fails for good, visibly, instead of retrying forever.
    settings.REVIEW_SEND_RETRIES = 1
    smtp.refuse = 5
    result = send_review.apply(args=[second])
    assert result.result == delivery.SendOutcome.FAILED
    review = WeeklyReview.objects.get(pk=second)
    assert review.status == WeeklyReview.Status.FAILED and "451" in review.last_error and review.attempts == 2
    assert [message["To"] for message in (item.message for item in smtp.received)] == ["owner@example.com"]


def test_without_a_working_renderer_the_charts_are_html_bars(
    owner: Any, settings: Any, traffic: None, at_now: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.REVIEW_CHART_IMAGES = True
    settings.REVIEW_CHROMIUM = "/bin/false"  # there, but no browser
    composed = delivery.BuildCache().review(owner, WEEK)
    assert composed.images == [] and "cid:" not in composed.html and 'class="fill"' in composed.html
    assert "HTML bars" in caplog.text


def test_findings_alerts_and_the_self_hosted_split_in_both_parts(
    owner: Any, project: Project, traffic: None, week_events: WeekEventRows, at_now: Any, smtp: Sink
) -> None:
    self_hosted_traffic(project)
    subscribe(owner)
    sweep_and_send()
    (message,) = smtp.to("owner@example.com")
    text, html, _ = parts(message)
    text = text.replace("\r\n", "\n")  # as it came over SMTP
    # Most severe first, each with its slice, when it was seen, how the week left it, and a link.
    findings = text.split("FINDINGS (3 open during the week)\n", 1)[1].split("\nALERTS", 1)[0]
    assert findings.splitlines()[0] == f"- [critical regression] {week_events.acme_regression.title}"
    assert findings.splitlines()[1] == (
        "  feature support-chat, model claude-sonnet-4-5, tenant acme; new: first seen Tue 17 Nov 06:00, "
        "change began Tue 17 Nov 04:00; still open"
    )
    assert findings.index(week_events.shared_drift.title) < findings.index(week_events.globex_drift.title)
    assert "; resolved Wed 18 Nov 09:00" in findings
    assert "ALERTS (3 firing during the week)\n- [critical] Error rate everywhere\n" in text
    assert "- [critical] p99 per tenant: tenant acme\n  fired Tue 17 Nov 07:00; resolved Tue 17 Nov 12:00; " \
        "3 notifications, 1 failed delivery this week" in text  # fmt: skip
    assert f"Alert history: {PUBLIC_URL}/alerts/history/" in text
    assert f'href="{PUBLIC_URL}/alerts/rules/' in html and "sev-critical" in html
    assert "The most severe regression of the week (critical, first seen Tue)" in text
    # Self-hosted ($0.48 this week, $0.16 before) and API ($3.75, $1.25) add up to the total.
    assert "COST: $4.23" in text
    assert "- Self-hosted (GPU time attributed to calls): $0.48 / $0.16 / +200%, 16 requests" in text
    assert "- API providers: $3.75 / $1.25 / +200%, 22 requests" in text
    assert "- Idle GPU capacity (not in the total): $0.75 / $0.50 / +50%" in text
    assert f"{PUBLIC_URL}/gpu/?start=2026-11-16T00%3A00%3A00%2B00%3A00" in text
    assert "Self-hosted vs API" in html and "Idle GPU capacity" in html


def test_many_findings_are_counted_and_the_most_severe_listed(
    owner: Any, project: Project, traffic: None, at_now: Any
) -> None:
    from tests.reports.conftest import _finding

    for n in range(12):
        _finding(project, f"Drift number {n}", tenant="globex", severity="critical" if n == 11 else "info",
                 first_seen=WEEK.start + timedelta(hours=n))  # fmt: skip
    composed = delivery.BuildCache().review(owner, WEEK)
    assert "FINDINGS (12 open during the week, the 8 most severe here)" in composed.text
    assert composed.text.count("- [info drift] Drift number") == 7
    assert "- [critical drift] Drift number 11" in composed.text
    assert "12 drift or regression findings open during the week; the 8 most severe below" in composed.html


def test_a_week_without_findings_alerts_or_gpu_says_so_briefly(owner: Any, traffic: None, at_now: Any) -> None:
    composed = delivery.BuildCache().review(owner, WEEK)
    assert "FINDINGS (0 open during the week)\n- none" in composed.text
    assert "ALERTS (0 firing during the week)\n- none" in composed.text
    assert "SELF-HOSTED" not in composed.text and "Self-hosted vs API" not in composed.html
    assert "No drift or regression finding was open during the week." in composed.html
