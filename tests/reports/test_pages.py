"""The archive, the preview, the settings form and the unsubscribe link."""

from __future__ import annotations

import html as html_lib
import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from apps.reports import delivery
from apps.reports.compose import unsubscribe_token
from apps.reports.models import ReviewSubscription, WeeklyReview
from tests.reports.conftest import NOW, WEEK, Sink
from tests.reports.test_email import subscribe

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_archive_shows_a_sent_review_exactly_as_sent(
    owner: Any, outsider: Any, traffic: None, at_now: Any, smtp: Sink
) -> None:
    subscribe(owner)
    (review_id,) = delivery.sweep(NOW).ready
    delivery.send_review(review_id)
    review = WeeklyReview.objects.get(pk=review_id)
    page = client_for(owner).get("/reviews/")
    assert page.status_code == 200
    assert f'href="/reviews/{review_id}/"' in page.content.decode() and review.subject in page.content.decode()
    detail = client_for(owner).get(f"/reviews/{review_id}/").content.decode()
    assert html_lib.escape(review.html_body) in detail  # the stored HTML part, in the iframe
    assert html_lib.escape(review.text_body) in detail
    # Someone else's review is not theirs to read.
    assert client_for(outsider).get(f"/reviews/{review_id}/").status_code == 404
    assert "Reviews" in client_for(owner).get("/reviews/").content.decode()  # navigation link


def test_the_preview_builds_any_past_week_as_the_sweep_would(
    owner: Any, outsider: Any, traffic: None, at_now: Any, smtp: Sink
) -> None:
    subscribe(outsider)
    (review_id,) = delivery.sweep(NOW).ready
    sent = WeeklyReview.objects.get(pk=review_id)
    page = client_for(outsider).get("/reviews/preview/", {"week": WEEK.label})
    assert page.status_code == 200
    body = page.content.decode()
    # Same build: the subject and the text part are those the sweep stored (the unsubscribe
    # token is the same too; only the Message-ID, not shown, differs).
    shown = html_lib.unescape(body)
    assert sent.subject in shown, shown
    assert sent.text_body in shown, (sent.text_body, shown)
    assert "acme" not in body
    # Staff preview anyone's, with that reader's scope; others only their own.
    staff_view = client_for(owner).get("/reviews/preview/", {"week": WEEK.label, "user": "outsider"})
    assert staff_view.status_code == 200 and "acme" not in staff_view.content.decode()
    assert client_for(outsider).get("/reviews/preview/", {"user": "owner"}).status_code == 404
    not_over = client_for(owner).get("/reviews/preview/", {"week": "2026-W48"})
    assert not_over.status_code == 400 and "has not ended yet" in not_over.content.decode()
    assert client_for(owner).get("/reviews/preview/", {"week": "48"}).status_code == 400


def test_settings_choose_day_hour_and_zone(teammate: Any, at_now: Any) -> None:
    client = client_for(teammate)
    assert not ReviewSubscription.for_user(teammate).enabled  # opt-in for non-staff
    response = client.post(
        "/reviews/settings/", {"enabled": "on", "weekday": "2", "hour": "7", "timezone": "Asia/Tokyo"}
    )
    assert response.status_code == 302
    subscription = ReviewSubscription.objects.get(user=teammate)
    assert subscription.enabled and subscription.next_send_at.isoformat() == "2026-11-24T22:00:00+00:00"
    bad = client.post("/reviews/settings/", {"enabled": "on", "weekday": "2", "hour": "25", "timezone": "Mars/X"})
    assert bad.status_code == 400


def test_one_click_unsubscribe_and_the_confirmation_page(owner: Any, at_now: Any) -> None:
    subscribe(owner)
    url = f"/reviews/unsubscribe/{unsubscribe_token(owner.pk)}/"
    anonymous = Client(enforce_csrf_checks=True)
    # A GET (a mail scanner following the link) changes nothing.
    page = anonymous.get(url)
    assert page.status_code == 200 and "Stop sending me" in page.content.decode()
    assert ReviewSubscription.objects.get(user=owner).enabled
    # RFC 8058: the mail provider POSTs this body, without cookies or CSRF token.
    done = anonymous.post(url, {"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    assert not ReviewSubscription.objects.get(user=owner).enabled
    assert delivery.due_subscriptions(NOW) == []
    # A staff user who unsubscribed is not subscribed again by the sweep's staff default.
    ReviewSubscription.subscribe_staff()
    assert not ReviewSubscription.objects.get(user=owner).enabled
    # The link of an account deleted since: nothing to stop, no error.
    gone = f"/reviews/unsubscribe/{unsubscribe_token(owner.pk + 1000)}/"
    assert anonymous.post(gone, {"List-Unsubscribe": "One-Click"}).status_code == 200


def test_a_forged_unsubscribe_token_is_a_400(owner: Any, caplog: pytest.LogCaptureFixture) -> None:
    token = unsubscribe_token(owner.pk)
    forged = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
    response = Client().post(f"/reviews/unsubscribe/{forged}/", {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 400
    assert "did not sign" in caplog.text


def test_the_command_dry_run_prints_the_text_and_writes_the_html(
    outsider: Any, traffic: None, at_now: Any, tmp_path: Path, smtp: Sink
) -> None:
    out = io.StringIO()
    target = tmp_path / "{user}-{week}.html"
    call_command("send_weekly_review", user="outsider", week=WEEK.label, dry_run=True, html_out=str(target),
                 stdout=out)  # fmt: skip
    printed = out.getvalue()
    assert "Subject: Weekly cost review 16-22 Nov 2026: $0.35 (+40%)" in printed
    assert "COST: $0.35" in printed
    written = tmp_path / f"outsider-{WEEK.label}.html"
    assert written.read_text().startswith("<!doctype html>")
    assert smtp.received == [] and not WeeklyReview.objects.exists()


def test_the_command_sends_once_and_again_only_when_asked(
    outsider: Any, traffic: None, at_now: Any, smtp: Sink
) -> None:
    out = io.StringIO()
    call_command("send_weekly_review", user="outsider", week=WEEK.label, stdout=out)
    call_command("send_weekly_review", user="outsider", week=WEEK.label, stdout=out)
    assert len(smtp.to("outsider@example.com")) == 1
    assert "already claimed or sent" in out.getvalue()
    call_command("send_weekly_review", user="outsider", week=WEEK.label, resend=True, stdout=out)
    assert len(smtp.to("outsider@example.com")) == 2
    with pytest.raises(Exception, match="not an ISO week"):
        call_command("send_weekly_review", user="outsider", week="48", stdout=out)
