"""What `run.py demo` calls: a local SMTP sink keeping messages, and the demo user's review."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from apps.reports import demo
from apps.reports.models import WeeklyReview
from tests.reports.conftest import WEEK, free_port

pytestmark = pytest.mark.django_db


def test_the_demo_sends_the_last_complete_weeks_review_into_a_local_maildir(
    django_user_model: Any, settings: Any, traffic: None, at_now: Any, tmp_path: Path
) -> None:
    django_user_model.objects.create_user("demo", is_staff=True)  # demo_setup's user has no email
    port = free_port()
    sink = demo.smtp_sink(tmp_path / "mail", port=port)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = demo.HOST, port
    try:
        report = demo.send_demo_review()
        assert report == f"demo {WEEK.label}: sent (sent)"
        out = io.StringIO()
        call_command("send_demo_review", stdout=out)  # the launcher runs it on every start: sent again
        assert out.getvalue().strip() == report
    finally:
        sink.stop()
    kept = demo.messages(tmp_path / "mail")
    assert len(kept) == 2 and kept[0]["To"] == "demo@localhost"
    assert kept[0]["Subject"].startswith("Weekly cost review 16-22 Nov 2026")
    review = WeeklyReview.objects.get(user__username="demo")
    assert review.status == WeeklyReview.Status.SENT and review.week == WEEK.label
