"""Metric partitions (created ahead, on demand, dropped past retention) and the ScrapeTarget admin."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse

from apps.accounts.models import Project
from apps.gpu.models import ScrapeTarget
from apps.gpu.partitions import METRIC_POINTS
from apps.gpu.store import insert_points
from apps.gpu.tasks import maintain_partitions
from collectors.metric_records import GAUGE, MetricPoint, series_hash

pytestmark = pytest.mark.django_db


def _gauge(day: date, value: float = 1.0) -> MetricPoint:
    time_ns = int(datetime(day.year, day.month, day.day, 3, tzinfo=UTC).timestamp()) * 10**9
    point = MetricPoint(name="hw.power", kind=GAUGE, unit="W", resource={}, attributes={}, time_ns=time_ns, value=value)
    point.series_id = series_hash("hw.power", {}, {})
    return point


def test_maintenance_creates_ahead_and_drops_past_retention(settings: object) -> None:
    settings.METRIC_RETENTION_DAYS = 10  # type: ignore[attr-defined]
    settings.METRIC_PARTITIONS_AHEAD_DAYS = 2  # type: ignore[attr-defined]
    today = datetime.now(UTC).date()
    old = today - timedelta(days=11)
    assert insert_points(Project.objects.create(name="p").pk, [_gauge(old)]) == 1
    assert old in METRIC_POINTS.existing_days()

    assert maintain_partitions() == {"created": 4, "dropped": 1}
    days = METRIC_POINTS.existing_days()
    assert {today + timedelta(days=n) for n in range(-1, 3)} <= days
    assert old not in days
    # Idempotent: a second run changes nothing.
    assert maintain_partitions() == {"created": 0, "dropped": 0}


def test_insert_is_idempotent_within_and_across_batches() -> None:
    project_id = Project.objects.create(name="p").pk
    day = datetime.now(UTC).date()
    assert insert_points(project_id, [_gauge(day), _gauge(day)]) == 1
    assert insert_points(project_id, [_gauge(day, 2.0)]) == 0  # same series and time: the first one stands


@pytest.fixture
def admin_client(owner: object) -> Client:
    owner.is_superuser = True  # type: ignore[attr-defined]
    owner.save()  # type: ignore[attr-defined]
    client = Client()
    client.force_login(owner)  # type: ignore[arg-type]
    return client


def test_scrape_targets_are_edited_in_the_admin(admin_client: Client, project: Project) -> None:
    add = admin_client.post(
        reverse("admin:gpu_scrapetarget_add"),
        {"project": project.pk, "url": "http://vllm-0:8000/metrics", "kind": "vllm", "instance": "",
         "interval_seconds": 15, "enabled": "on", "next_scrape_at_0": "2026-12-02", "next_scrape_at_1": "09:00:00"},
    )  # fmt: skip
    assert add.status_code == 302, add.content
    target = ScrapeTarget.objects.get()
    target.record_failure(datetime.now(UTC), "cannot reach http://vllm-0:8000/metrics: Connection refused")
    page = admin_client.get(reverse("admin:gpu_scrapetarget_changelist"))
    assert page.status_code == 200
    assert b"Connection refused" in page.content


@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("http://vllm-0:8000/metrics", True),
        ("https://dcgm.gpu-pool.svc.cluster.local:9400/metrics", True),
        ("ftp://vllm-0/metrics", False),
        ("http:///metrics", False),
        ("http://vllm-0:99999/metrics", False),
    ],
)
def test_scrape_urls_may_be_compose_hostnames(url: str, valid: bool) -> None:
    from django.core.exceptions import ValidationError

    from apps.gpu.models import validate_scrape_url

    if valid:
        validate_scrape_url(url)
    else:
        with pytest.raises(ValidationError):
            validate_scrape_url(url)
