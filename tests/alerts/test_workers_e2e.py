"""Two real Celery workers on the test run's Redis evaluate the same rules at the same time:
exactly one notification per alert reaches a local HTTP server (webhook) and a real SMTP
server on loopback (aiosmtpd).

Each worker is a `celery -A observatory worker -Q alerts` subprocess on this run's test
database. The test sends several forced evaluations of the same rules (`alerts.evaluate_rules`,
which skips the due-claim, so both workers really judge the same alerts at once) and two
sweeps (`alerts.evaluate_due`); the workers then deliver through `alerts.deliver`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import Project
from apps.alerts.models import AlertRule, AlertState, Channel, Delivery, Notification
from observatory.celery import app
from tests.alerts.conftest import SmtpInbox, WebhookReceiver, store_calls
from tests.support.servers import database_url

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
WAIT_SECONDS = 90
FORCED_EVALUATIONS = 8


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process, self.log = process, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def two_workers(
    transactional_db: None,
    broker_url: str,
    tmp_path: Path,
    smtp_inbox: SmtpInbox,
) -> Iterator[list[Worker]]:
    from django.db import connection

    env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict), "REDIS_URL": broker_url,
           "EMAIL_HOST": smtp_inbox.host, "EMAIL_PORT": str(smtp_inbox.port), "LOG_LEVEL": "INFO"}  # fmt: skip
    workers = []
    for name in ("a", "b"):
        log = tmp_path / f"worker-{name}.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "observatory", "worker", "-Q", "alerts", "--concurrency", "1",
                 "--hostname", f"alerts-{name}-{os.getpid()}@%h", "--loglevel", "INFO", "--without-gossip",
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


def wait_until(condition: Any, workers: list[Worker], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        for worker in workers:
            assert worker.process.poll() is None, f"a worker exited:\n{worker.output()}"
        if time.monotonic() > deadline:
            logs = "\n\n".join(worker.output()[-4000:] for worker in workers)
            pytest.fail(f"{what} within {WAIT_SECONDS}s:\n{logs}")
        time.sleep(0.2)


def test_two_workers_evaluating_the_same_rules_send_one_notification_per_alert(
    two_workers: list[Worker],
    broker_url: str,
    webhook: WebhookReceiver,
    smtp_inbox: SmtpInbox,
) -> None:
    project = Project.objects.create(name="two-workers")
    now = timezone.now()
    store_calls(project, [1000.0] * 40 + [9500.0] * 10, end=now, tenant="acme", feature="checkout", errors=20)
    store_calls(project, [300.0] * 50, end=now, tenant="globex", feature="search", errors=25)
    hook = Channel.objects.create(name="hook", kind="webhook", config={"url": webhook.url})
    mail = Channel.objects.create(name="mail", kind="email", config={"to": ["lead@example.com"]})
    latency = AlertRule.objects.create(name="checkout p99", kind="latency", features=["checkout"],
                                       critical_threshold=8000, min_samples=20)  # fmt: skip
    errors = AlertRule.objects.create(name="errors per tenant", kind="error_rate", group_by=["tenant"],
                                      critical_threshold=0.2, min_samples=20)  # fmt: skip
    for rule in (latency, errors):
        rule.channels.set([hook, mail])
    expected_alerts = 3  # checkout p99; error rate of acme and of globex
    ids = [latency.pk, errors.pk]
    # Both workers consuming before anything is sent, so they take the first evaluations together.
    wait_until(lambda: all(" ready." in worker.output() for worker in two_workers), two_workers,
               "the workers did not start")  # fmt: skip

    with app.connection_for_write(broker_url) as connection:
        for _ in range(FORCED_EVALUATIONS):
            app.send_task("alerts.evaluate_rules", args=(ids,), connection=connection)
        for _ in range(2):
            app.send_task("alerts.evaluate_due", connection=connection)

    def evaluations_done() -> bool:
        done = sum(len(re.findall(r"Task alerts\.evaluate_(rules|due)\[[0-9a-f-]+\] succeeded", worker.output()))
                   for worker in two_workers)  # fmt: skip
        return done == FORCED_EVALUATIONS + 2

    wait_until(evaluations_done, two_workers, "the evaluations did not finish")
    wait_until(lambda: Delivery.objects.filter(result="sent").count() >= 2 * expected_alerts
               and not Delivery.objects.filter(result="pending").exists(), two_workers,
               "the deliveries were not sent")  # fmt: skip

    # Both workers evaluated: the claims, not luck, kept the notifications single.
    for worker in two_workers:
        assert re.search(r"Task alerts\.evaluate_(rules|due)\[[0-9a-f-]+\] succeeded", worker.output()), worker.output()
    assert Notification.objects.count() == expected_alerts
    assert AlertState.objects.exclude(level="ok").count() == expected_alerts
    titles = sorted(body["title"] for body in webhook.bodies())
    assert titles == ["[CRITICAL] checkout p99", "[CRITICAL] errors per tenant (tenant acme)",
                      "[CRITICAL] errors per tenant (tenant globex)"]  # fmt: skip
    assert sorted(message["Subject"] for message in smtp_inbox.messages) == titles
    assert Delivery.objects.count() == 2 * expected_alerts
