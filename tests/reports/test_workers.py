"""Two beats, two workers: each subscriber gets one email for the week.

Two real `celery -A observatory worker -Q email` processes on this run's broker (see
tests/test_celery_e2e.py), pointed at the test database and at a real SMTP server on
loopback. Beat's trigger is sent twice at once, and every send task is delivered twice;
still each (user, week) is claimed, built and sent once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from apps.accounts.models import Project
from apps.reports.models import ReviewSubscription, WeeklyReview
from apps.reports.weeks import ReviewWeek
from observatory.celery import app
from tests.reports.conftest import Sink, two_weeks_of_traffic
from tests.support.servers import database_url
from tests.test_celery_e2e import Worker, broker_url  # noqa: F401 - the session's broker fixture

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
WAIT_S = 90


@pytest.fixture
def email_workers(
    transactional_db: None,
    broker_url: str,  # noqa: F811
    smtp: Sink,
    settings: Any,
    tmp_path: Path,
) -> Iterator[list[Worker]]:
    from django.db import connection

    env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict), "REDIS_URL": broker_url,
           "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(settings.EMAIL_PORT), "PUBLIC_URL": settings.PUBLIC_URL,
           "REVIEW_CHART_IMAGES": "false", "LOG_LEVEL": "INFO"}  # fmt: skip
    workers = []
    for number in (1, 2):
        log = tmp_path / f"worker{number}.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "observatory", "worker", "-Q", "email", "--concurrency", "1",
                 "--hostname", f"email{number}-{os.getpid()}@%h", "--loglevel", "INFO", "--without-gossip",
                 "--without-mingle"],
                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        workers.append(Worker(process, log))
    try:
        yield workers
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.terminate()
        for worker in workers:
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


def succeeded(workers: list[Worker], task: str) -> int:
    return sum(len(re.findall(rf"Task {re.escape(task)}\[[0-9a-f-]+\] succeeded", w.output())) for w in workers)


def wait_until(workers: list[Worker], condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        for worker in workers:
            worker.assert_alive()
        assert time.monotonic() < deadline, f"{what} within {WAIT_S}s:\n" + "\n".join(w.output() for w in workers)
        time.sleep(0.2)


def test_two_beats_and_two_workers_send_each_user_one_email(
    owner: Any,
    teammate: Any,
    outsider: Any,
    smtp: Sink,
    email_workers: list[Worker],
    broker_url: str,  # noqa: F811
) -> None:
    now = datetime.now(UTC)
    week = ReviewWeek.last_complete(now)
    two_weeks_of_traffic(Project.objects.create(name="workers"), week)
    users = (owner, teammate, outsider)
    for user in users:
        subscription = ReviewSubscription.for_user(user)
        subscription.enabled, subscription.next_send_at = True, now - timedelta(minutes=1)
        subscription.save()

    with app.connection_for_write(broker_url) as connection:
        for _ in range(2):  # two beats firing the same trigger
            app.send_task("reports.send_due_reviews", connection=connection)
    wait_until(email_workers, lambda: succeeded(email_workers, "reports.send_due_reviews") == 2, "two sweeps")
    assert WeeklyReview.objects.count() == 3
    # Every send delivered twice as well (a redelivered message, a retried trigger).
    with app.connection_for_write(broker_url) as connection:
        for review_id in WeeklyReview.objects.values_list("pk", flat=True):
            app.send_task("reports.send_review", args=[review_id], connection=connection)
    wait_until(email_workers, lambda: succeeded(email_workers, "reports.send_review") == 6, "six send tasks")

    for user in users:
        assert len(smtp.to(user.email)) == 1, user.username
    assert len(smtp.received) == 3
    assert set(WeeklyReview.objects.values_list("status", flat=True)) == {WeeklyReview.Status.SENT}
    assert all(review.week == week.label for review in WeeklyReview.objects.all())
