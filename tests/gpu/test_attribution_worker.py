"""gpu.attribute_costs end to end: sent through the broker as beat sends it, run by a real
Celery worker process (the ingest queue), on stored samples and spans."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command

from apps.accounts.models import Project
from apps.gpu.models import AttributionCursor
from observatory.celery import app
from tests.gpu.test_attribution import H100, Traffic, cost_of, gpu_samples
from tests.test_celery_e2e import WORKER_SECONDS, Worker, broker_url, celery_worker  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_worker_attributes_due_intervals(celery_worker: Worker, broker_url: str, t0: datetime) -> None:  # noqa: F811
    # The worker runs with the default settings: 300 s intervals, the `lambda` price list.
    call_command("load_gpu_prices", stdout=io.StringIO())
    project = Project.objects.create(name="worker")
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100)], [t0 + timedelta(seconds=3)])
    call = Traffic(project.id).call(t0 + timedelta(seconds=20), 0, 60)
    AttributionCursor.objects.create(project=project, computed_until=t0, watermark=datetime.now(UTC))

    with app.connection_for_write(broker_url) as connection:
        app.send_task("gpu.attribute_costs", connection=connection)
    deadline = time.monotonic() + WORKER_SECONDS

    def done() -> bool:
        # The sweep keeps its progress interval by interval and gives the lease back at the end.
        cursor = AttributionCursor.objects.get(project=project)
        return cursor.computed_until > t0 and cursor.lease_until is None

    while not done():
        celery_worker.assert_alive()
        assert time.monotonic() < deadline, f"no attribution within {WORKER_SECONDS}s:\n{celery_worker.output()}"
        time.sleep(0.2)
    # One H100 at $2.99/h for 300 s: 2,491,666,667 units of 1e-10 USD; busy 60 s of 300:
    # 498,333,333.4 units, half up: $0.0498333333.
    assert cost_of(call[0], call[1]) == (Decimal("0.0498333333"), "attributed")
    assert AttributionCursor.objects.get(project=project).last_error == ""
