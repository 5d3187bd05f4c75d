"""bench/alert_delay.py's measurement, against a live server on the real PostgreSQL: the bad
spans go through the real SDK exporter and trip the probe rule, the sink catches that rule's
`fired` notice for that feature only, and the delay is taken from the moment the spans ended.
The whole bench (gunicorn, a worker and beat on the default schedule, minutes of waiting) is
run by hand: `python3 run.py bench alert_delay`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from apps.accounts.models import IngestKey, Project
from apps.alerts.delivery import send_delivery
from apps.alerts.models import AlertRule, Delivery
from apps.alerts.services import claim_due_rules, evaluate_rules
from bench import alert_delay

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sink() -> Iterator[alert_delay.WebhookSink]:
    hook = alert_delay.WebhookSink()
    yield hook
    hook.close()


def _sweep_and_deliver(rule: AlertRule) -> None:
    """What the worker does on a sweep: evaluate, then send the pending first attempts (the
    queued `alerts.deliver` messages go to this run's private broker, which no worker reads)."""
    evaluate_rules([rule], timezone.now())
    for pending in Delivery.objects.filter(result=Delivery.Result.PENDING).values_list("pk", flat=True):
        send_delivery(pending)


def test_bad_spans_trip_the_probe_and_the_delay_runs_from_their_end(
    live_server: Any, price_catalog: None, sink: alert_delay.WebhookSink
) -> None:
    _, key = IngestKey.issue(Project.objects.create(name="bench"), "delay")
    features = ["delay-probe-1", "delay-probe-2"]
    probe = alert_delay.make_probe_rule(features, sink.url)
    endpoint = f"{live_server.url}/v1/traces"

    # Below the rule's 20 samples: no verdict, nothing sent.
    alert_delay.send_bad_spans(endpoint, key, "delay-probe-2", 19)
    bad_at, acknowledged_at = alert_delay.send_bad_spans(endpoint, key, "delay-probe-1", 25)
    assert bad_at <= acknowledged_at <= time.time()
    assert sink.wait_fired("delay-probe-1", 0.3) is None  # no sweep yet, no notice

    _sweep_and_deliver(probe)
    arrival = sink.wait_fired("delay-probe-1", 10)
    assert arrival is not None
    assert arrival.body["level"] == "critical"
    assert arrival.body["details"]["samples"] == 25
    assert arrival.body["details"]["value"] >= alert_delay.BAD_CALL_SECONDS * 1000 * 0.99
    assert acknowledged_at < arrival.at <= time.time()
    assert sink.wait_fired("delay-probe-2", 0.3) is None
    assert len(sink.arrivals) == 1


def test_the_sink_matches_only_the_probe_rules_fired_notice_for_that_feature(sink: alert_delay.WebhookSink) -> None:
    import httpx

    notice = {"event": "fired", "rule": {"name": alert_delay.PROBE_RULE}, "details": {"group": {"feature": "f1"}}}
    others = [
        {**notice, "event": "resolved"},
        {**notice, "rule": {"name": "bench 1"}},
        {**notice, "details": {"group": {"feature": "f2"}}},
    ]
    for body in others:
        assert httpx.post(sink.url, json=body).status_code == 204
    assert sink.wait_fired("f1", 0.2) is None
    sent_at = time.time()
    httpx.post(sink.url, json=notice)
    arrival = sink.wait_fired("f1", 5)
    assert arrival is not None and arrival.at >= sent_at
    assert len(sink.arrivals) == 4


def test_sweeps_are_seen_when_the_probe_rule_is_claimed(sink: alert_delay.WebhookSink) -> None:
    probe = alert_delay.make_probe_rule(["delay-probe-1"], sink.url)

    def sweep() -> None:
        time.sleep(0.5)
        try:
            claim_due_rules(timezone.now())
        finally:
            connection.close()

    thread = threading.Thread(target=sweep)
    thread.start()
    began = time.time()
    seen = alert_delay.wait_for_sweeps(probe.pk, 1, timeout=10)
    thread.join()
    assert len(seen) == 1 and seen[0] >= began + 0.4
    with pytest.raises(SystemExit, match="claimed the probe rule 0 times"):
        alert_delay.wait_for_sweeps(probe.pk, 1, timeout=1)


def test_the_mail_sink_notes_the_probes_alert_mail_and_not_its_resolved_notice() -> None:
    import smtplib
    from email.message import EmailMessage

    from bench.ingest import _free_port

    mail = alert_delay.MailSink(_free_port())
    try:

        def send(subject: str) -> None:
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = "obs@test", "lead@test", subject
            message.set_content("body")
            with smtplib.SMTP("127.0.0.1", mail.port) as client:
                client.send_message(message)

        send("[RESOLVED] delay probe (feature delay-probe-1)")
        send("[CRITICAL] delay probe (feature delay-probe-2)")
        assert mail.wait_fired("delay-probe-1", 0.3) is None
        sent_at = time.time()
        send("[CRITICAL] delay probe (feature delay-probe-1)")
        arrival = mail.wait_fired("delay-probe-1", 5)
        assert arrival is not None and arrival.at >= sent_at
        assert arrival.body["to"] == ["lead@test"]
    finally:
        mail.close()
