"""The gpu.attribute_costs task: schedule, route, the lease, and its body on stored data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from apps.gpu.models import AttributionCursor, CostInterval
from apps.gpu.sweep import LEASE, sweep_project
from apps.gpu.tasks import attribute_costs
from observatory.celery import app
from tests.gpu.test_attribution import H100, Traffic, cost_of, gpu_samples

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _interval(settings: Any) -> None:
    settings.GPU_COST_INTERVAL_SECONDS = 300
    settings.GPU_PRICE_PROVIDER = "test"
    settings.GPU_COST_GRACE_SECONDS = 120


def test_scheduled_every_minute_with_expires_on_the_ingest_queue() -> None:
    entries = [e for e in app.conf.beat_schedule.values() if e["task"] == "gpu.attribute_costs"]
    assert len(entries) == 1
    assert entries[0]["schedule"] == timedelta(minutes=1) and entries[0]["options"]["expires"] == 60
    assert app.amqp.router.route({}, "gpu.attribute_costs")["queue"].name == "ingest"


def test_the_task_attributes_due_intervals_and_stops_at_the_grace_period(
    project: Any, h100_price: Any, t0: datetime
) -> None:
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100)], [t0])
    call = Traffic(project.id).call(t0 + timedelta(seconds=10), 0, 60)
    AttributionCursor.objects.create(project=project, computed_until=t0, watermark=datetime.now(UTC))
    result = attribute_costs()
    assert result["projects"] == 1 and result["intervals"] >= 20 and result["spans_changed"] == 1
    assert cost_of(call[0], call[1]) == (Decimal("0.06"), "attributed")
    cursor = AttributionCursor.objects.get(project=project)
    # Not past the last interval that closed GRACE seconds ago, and the lease is given back.
    now = datetime.now(UTC)
    assert now - timedelta(seconds=120 + 300) <= cursor.computed_until <= now - timedelta(seconds=120)
    assert cursor.lease_until is None and cursor.last_error == ""
    assert CostInterval.objects.filter(project=project, start=t0).exists()


def test_a_leased_cursor_is_left_to_its_worker_until_the_lease_runs_out(project: Any, t0: datetime) -> None:
    now = datetime.now(UTC)
    AttributionCursor.objects.create(project=project, computed_until=t0, watermark=now, lease_until=now + LEASE)
    assert sweep_project(project.id, now).skipped
    assert AttributionCursor.objects.get(project=project).computed_until == t0
    # A killed worker's lease expires: the next sweep takes over.
    later = now + LEASE + timedelta(seconds=1)
    assert not sweep_project(project.id, later).skipped
    assert AttributionCursor.objects.get(project=project).computed_until > t0


def test_a_projects_first_sweep_starts_at_its_first_gpu_sample(project: Any, h100_price: Any, t0: datetime) -> None:
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100)], [t0 + timedelta(seconds=7), t0 + timedelta(seconds=400)])
    call = Traffic(project.id).call(t0 + timedelta(seconds=10), 0, 30)
    result = sweep_project(project.id)
    assert result.due >= 20
    assert CostInterval.objects.filter(project=project).order_by("start").first().start == t0  # type: ignore[union-attr]
    assert cost_of(call[0], call[1]) == (Decimal("0.03"), "attributed")


def test_a_deleted_projects_samples_do_not_stop_the_others(project: Any, h100_price: Any, t0: datetime) -> None:
    """Metric series carry no foreign key: a deleted project's samples outlive it. The sweep
    leaves such a project out (its cursor could not be written) and every other project is
    still attributed."""
    from apps.accounts.models import Project

    gone = Project.objects.create(name="gone")
    gpu_samples(gone.id, "vllm-9", [("GPU-z", H100)], [t0])
    Project.objects.filter(pk=gone.pk).delete()
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100)], [t0])
    call = Traffic(project.id).call(t0 + timedelta(seconds=10), 0, 60)
    AttributionCursor.objects.create(project=project, computed_until=t0, watermark=datetime.now(UTC))
    attribute_costs()
    assert not AttributionCursor.objects.filter(project_id=gone.pk).exists()
    assert cost_of(call[0], call[1]) == (Decimal("0.06"), "attributed")
