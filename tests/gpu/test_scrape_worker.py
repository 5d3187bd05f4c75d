"""gpu.scrape_endpoints once end to end: sent to a real Celery worker on a real broker, which
scrapes the recorded vLLM text from a real HTTP server into the test database."""

from __future__ import annotations

import time

import pytest

from apps.accounts.models import Project
from apps.gpu.models import MetricSeries, ScrapeTarget
from observatory.celery import app
from tests.gpu.exposition_server import exposition_server, fixture
from tests.test_celery_e2e import Worker, broker_url, celery_worker  # noqa: F401 - fixtures

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_scrape_task_in_a_real_worker(celery_worker: Worker, broker_url: str) -> None:  # noqa: F811
    project = Project.objects.create(name="worker")
    with exposition_server() as server:
        server.serve(fixture("vllm_0_33_scrape1.txt"))
        ScrapeTarget.objects.create(project=project, url=server.url, kind="vllm", interval_seconds=15)
        with app.connection_for_write(broker_url) as connection:
            app.send_task("gpu.scrape_endpoints", connection=connection)
        deadline = time.monotonic() + 60
        while not ScrapeTarget.objects.filter(last_success_at__isnull=False).exists():
            celery_worker.assert_alive()
            assert time.monotonic() < deadline, celery_worker.output()
            time.sleep(0.3)
    target = ScrapeTarget.objects.get()
    assert (target.last_sample_count, target.consecutive_failures) == (19, 0)
    assert MetricSeries.objects.filter(project=project, name="vllm:prefix_cache_hits").count() == 1
