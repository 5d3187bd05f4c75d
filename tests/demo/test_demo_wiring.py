"""What `run.py demo` does once its servers are up, end to end on the test database: the demo
seeding, a short backfill with the demo's incidents through the real OTLP receiver (spans and
GPU/vLLM metrics), then the settle steps (rollups, GPU attribution, detectors, alert rules, the
weekly review) with mail going to the demo's own SMTP sink. Not the launcher's processes: the
test calls what its children call."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import Q

from apps.accounts.management.commands import demo_setup
from apps.accounts.models import Project
from apps.alerts import delivery
from apps.alerts.models import AlertRule, AlertState, Channel
from apps.gpu.attribution import ATTRIBUTED, floor_interval
from apps.gpu.models import AttributionCursor
from apps.reports import demo as mail
from apps.reports.models import WeeklyReview
from apps.rollups.models import DirtyHour
from apps.telemetry.models import Span
from collectors.simulator import simulate
from collectors.simulator.demo import SCHEDULE, demo_incidents, ongoing
from observatory import demo
from tests.reports.conftest import free_port


def test_the_schedule_gives_absolute_specs_and_the_ongoing_ones_go_live() -> None:
    now = datetime(2026, 11, 16, 12, 0, tzinfo=UTC)
    specs = demo_incidents(now)
    assert specs[0] == "silent-model-change:support-chat@2026-11-15T16:00:00+00:00"
    assert "error-burst:anthropic@2026-11-16T08:00:00+00:00..2026-11-16T09:00:00+00:00" in specs
    assert ongoing(specs) == specs[:2]
    assert len(specs) == len(SCHEDULE) == 5


@pytest.mark.django_db(transaction=True)
def test_seeding_a_short_backfill_and_the_settle_steps_end_to_end(
    live_server: Any, price_catalog: None, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_setup, "STATE_DIR", tmp_path / "state")
    settings.GPU_COST_INTERVAL_SECONDS = 900
    settings.GPU_ATTRIBUTION_BACKFILL_DAYS = 1
    settings.GPU_PRICE_PROVIDER = "lambda"
    call_command("load_gpu_prices", stdout=io.StringIO())
    out = io.StringIO()
    call_command("demo_setup", stdout=out)
    call_command("demo_setup", stdout=io.StringIO())  # every start runs it: nothing doubles
    credentials = dict(line.split("=", 1) for line in out.getvalue().splitlines() if "=" in line)
    assert Channel.objects.get(name=demo.CHANNEL_NAME).config == {"to": [demo.DEMO_EMAIL]}
    assert AlertRule.objects.count() == 5
    assert set(AlertRule.objects.values_list("kind", flat=True)) == {
        "latency", "drift", "regression", "budget", "cache_drop",
    }  # fmt: skip
    assert all(rule.channels.count() == 1 for rule in AlertRule.objects.all())

    # Ten busy hours ending a little before now, with every demo incident placed as the launcher does.
    now = datetime.now(UTC)
    end = now - timedelta(minutes=5)
    summary = simulate(
        live_server.url, credentials["key"], start=end - timedelta(hours=10), end=end, requests=4000, seed=7,
        incidents=demo_incidents(now),
    )  # fmt: skip
    assert summary.failed_spans == 0 and summary.failed_metric_exports == 0
    # Every incident falls inside these ten hours and touched some requests.
    assert set(summary.incident_hits) == set(demo_incidents(now))

    # Beat's sweep during a real backfill runs ahead of the spans: a cursor past them all.
    AttributionCursor.objects.create(project=Project.objects.get(name="demo"), computed_until=now, watermark=now)
    port = free_port()
    sink = mail.smtp_sink(tmp_path / "mail", port=port)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = mail.HOST, port
    said: list[str] = []
    try:
        done = demo.settle(rollup_timeout_s=120, gpu_budget_s=120, say=said.append, after_backfill=True)
        # What the Celery worker would send right after: the alert mails.
        for delivery_id in delivery.due_delivery_ids():
            delivery.send_delivery(delivery_id)
    finally:
        sink.stop()
    assert done == dict.fromkeys(
        ("rollups", "GPU cost attribution", "rollups of attributed costs", "insights", "alert rules", "weekly review"),
        True,
    ), said

    assert not DirtyHour.objects.exists()
    # Every self-hosted call up to the last closed interval carries an attributed cost.
    project = Project.objects.get(name="demo")
    attributed_until = floor_interval(now - timedelta(seconds=settings.GPU_COST_GRACE_SECONDS), 900)
    vllm_calls = Span.objects.filter(project=project, is_llm=True, provider="vllm", kind=3,
                                     start_time__lt=attributed_until - timedelta(minutes=15))  # fmt: skip
    assert vllm_calls.count() > 100
    assert not vllm_calls.filter(Q(cost_usd__isnull=True) | ~Q(cost_source=ATTRIBUTED)).exists()

    # The p99 regression on search-rerank (from 8 h ago) trips the demo's latency rule.
    latency = AlertState.objects.get(rule__name="search-rerank p99 latency")
    assert latency.level in ("warning", "critical"), latency.summary
    assert latency.value is not None and latency.value > 7500

    kept = mail.messages(tmp_path / "mail")
    subjects = [str(message["Subject"]) for message in kept]
    assert any("search-rerank p99 latency" in subject for subject in subjects), subjects
    assert any(subject.startswith("Weekly cost review") for subject in subjects), subjects
    assert all(message["To"] == demo.DEMO_EMAIL for message in kept)
    assert WeeklyReview.objects.filter(user__username="demo", status=WeeklyReview.Status.SENT).exists()
