"""Transitions and deliveries: fire once, repeat after the cooldown, escalate, resolve;
silences; real email to an SMTP server on loopback, real webhooks to a local HTTP server;
transient failures retried with backoff, then the channel disabled and its owner told."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client

from apps.accounts.models import Project
from apps.alerts.delivery import SIGNATURE_HEADER, deliver_due
from apps.alerts.models import AlertRule, AlertState, Channel, Delivery, Notification, Silence
from apps.alerts.services import _transition, evaluate_rules
from tests.alerts.conftest import NOW, SmtpInbox, WebhookReceiver, store_calls

pytestmark = pytest.mark.django_db


@pytest.fixture
def slow_checkout(project: Project) -> None:
    with time_machine.travel(NOW, tick=False):
        store_calls(project, [1000.0] * 90 + [9500.0] * 10)  # p99 about 9.5 s


def rule_with(channels: list[Channel], **fields: Any) -> AlertRule:
    defaults: dict[str, Any] = {
        "name": "checkout p99",
        "kind": "latency",
        "features": ["checkout"],
        "warning_threshold": 5000,
        "critical_threshold": 10_000,
        "min_samples": 20,
        "cooldown_minutes": 60,
        # Long enough that the stored calls stay inside it while the tests move "now" on.
        "window_minutes": 180,
    }
    rule = AlertRule.objects.create(**{**defaults, **fields})
    rule.channels.set(channels)
    return rule


def events(rule: AlertRule) -> list[tuple[str, str]]:
    return [(n.event, n.level) for n in Notification.objects.filter(rule=rule).order_by("created_at", "pk")]


def test_fires_once_repeats_after_cooldown_escalates_and_resolves(slow_checkout: None) -> None:
    rule = rule_with([])
    at = NOW
    for minutes in (0, 1, 30):  # warning; still warning inside the cooldown: one notification
        evaluate_rules([rule], at + timedelta(minutes=minutes))
    assert events(rule) == [("fired", "warning")]
    evaluate_rules([rule], at + timedelta(minutes=61))  # past the cooldown: sent again
    assert events(rule)[-1] == ("repeated", "warning")
    rule.critical_threshold = 8000
    rule.save()
    evaluate_rules([rule], at + timedelta(minutes=62))
    assert events(rule)[-1] == ("escalated", "critical")
    rule.warning_threshold, rule.critical_threshold = 20_000, 30_000
    rule.save()
    evaluate_rules([rule], at + timedelta(minutes=63))
    evaluate_rules([rule], at + timedelta(minutes=64))
    assert events(rule) == [
        ("fired", "warning"),
        ("repeated", "warning"),
        ("escalated", "critical"),
        ("resolved", "critical"),
    ]
    state = AlertState.objects.get(rule=rule)
    assert state.level == "ok" and state.episode == 1 and state.resolved_at is not None
    # It fires again later: a new episode.
    rule.critical_threshold = 8000
    rule.save()
    evaluate_rules([rule], at + timedelta(minutes=70))
    assert AlertState.objects.get(rule=rule).episode == 2 and events(rule)[-1] == ("fired", "critical")


def test_a_transition_read_before_another_evaluator_claimed_it_sends_nothing(slow_checkout: None) -> None:
    rule = rule_with([])
    evaluate_rules([rule], NOW)
    state = AlertState.objects.get(rule=rule)
    stale = AlertState.objects.get(pk=state.pk)
    rule.critical_threshold = 8000
    rule.save()
    from apps.alerts.evaluate import judge

    [verdict] = judge([rule], NOW).verdicts[rule.pk]
    assert _transition(rule, state, verdict, NOW) is not None  # the first evaluator escalates
    assert _transition(rule, stale, verdict, NOW) is None  # the second read the old version
    assert events(rule) == [("fired", "warning"), ("escalated", "critical")]


def test_webhook_and_slack_deliveries_are_signed_recorded_and_digested(
    slow_checkout: None, webhook: WebhookReceiver
) -> None:
    signed = Channel.objects.create(name="ops hook", kind="webhook", config={"url": webhook.url})
    slack = Channel.objects.create(name="slack", kind="slack", config={"url": webhook.url + "/slack"})
    rule = rule_with([signed, slack])
    with time_machine.travel(NOW, tick=False):
        evaluate_rules([rule], NOW)
        assert deliver_due(NOW) == 2
    by_path = {request["path"]: request for request in webhook.requests}
    generic, chat = by_path["/hook"], by_path["/hook/slack"]
    expected = "sha256=" + hmac.new(signed.secret.encode(), generic["body"], hashlib.sha256).hexdigest()
    assert generic["headers"][SIGNATURE_HEADER] == expected
    body = json.loads(generic["body"])
    assert body["event"] == "fired" and body["level"] == "warning" and body["rule"]["name"] == "checkout p99"
    assert "p99 end-to-end latency" in body["summary"] and body["url"].endswith(f"/alerts/rules/{rule.pk}/")
    slack_body = json.loads(chat["body"])
    assert slack_body["text"].startswith("[WARNING] checkout p99")
    assert [block["type"] for block in slack_body["blocks"]] == ["header", "section", "context"]
    assert SIGNATURE_HEADER not in chat["headers"]
    for channel, request in ((signed, generic), (slack, chat)):
        delivery = Delivery.objects.get(channel=channel)
        assert delivery.result == "sent" and delivery.http_status == 200 and delivery.attempt == 1
        assert delivery.payload_sha256 == hashlib.sha256(request["body"]).hexdigest()
        assert delivery.target == channel.config["url"]
    assert deliver_due(NOW + timedelta(hours=1)) == 0  # nothing sent twice


def test_email_goes_to_a_real_smtp_server_with_text_html_and_unsubscribe(
    slow_checkout: None, smtp_inbox: SmtpInbox
) -> None:
    channel = Channel.objects.create(name="leads", kind="email", config={"to": ["lead@example.com"]})
    rule = rule_with([channel])
    with time_machine.travel(NOW, tick=False):
        evaluate_rules([rule], NOW)
        deliver_due(NOW)
    [message] = smtp_inbox.messages
    assert message["Subject"] == "[WARNING] checkout p99"
    assert message["To"] == "lead@example.com"
    assert message["List-Unsubscribe"] == f"<http://localhost:8000/alerts/channels/{channel.pk}/>"
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in message.walk()
        if not part.is_multipart()
    }
    assert set(parts) == {"text/plain", "text/html"}
    assert "p99 end-to-end latency" in parts["text/plain"] and "<h2" in parts["text/html"]
    delivery = Delivery.objects.get(channel=channel)
    assert delivery.result == "sent" and delivery.smtp_reply.startswith("250") and len(delivery.payload_sha256) == 64


def test_a_failing_webhook_is_retried_with_backoff_then_disabled_and_the_owner_told(
    slow_checkout: None,
    webhook: WebhookReceiver,
    smtp_inbox: SmtpInbox,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.ALERTS_RETRY_BASE_SECONDS, settings.ALERTS_RETRY_MAX_SECONDS = 30, 100
    settings.ALERTS_MAX_ATTEMPTS, settings.ALERTS_DISABLE_AFTER_FAILURES = 10, 4
    webhook.statuses = [503]
    owner = get_user_model().objects.create_user("hook-owner", "owner@example.com", "x")
    channel = Channel.objects.create(name="flaky", kind="webhook", config={"url": webhook.url}, owner=owner)
    rule = rule_with([channel])
    with time_machine.travel(NOW, tick=False) as traveller:
        evaluate_rules([rule], NOW)
        # (The owner's email goes out when the disabling commits.)
        with django_capture_on_commit_callbacks(execute=True):
            assert deliver_due() == 1
            # Backoff 30 s, 60 s, then capped at 100 s: nothing is sent a second early.
            for wait in (30, 60, 100):
                traveller.shift(timedelta(seconds=wait - 1))
                assert deliver_due() == 0
                traveller.shift(timedelta(seconds=1))
                assert deliver_due() == 1
    attempts = list(Delivery.objects.filter(channel=channel).order_by("attempt"))
    # The fourth failure in a row disables the channel: that attempt is final, no fifth is queued.
    assert [(d.attempt, d.result, d.http_status) for d in attempts] == [
        (1, "retrying", 503),
        (2, "retrying", 503),
        (3, "retrying", 503),
        (4, "failed", 503),
    ]
    assert [d.attempted_at - attempts[0].attempted_at for d in attempts] == [
        timedelta(0),
        timedelta(seconds=30),
        timedelta(seconds=90),
        timedelta(seconds=190),
    ]
    assert len(webhook.requests) == 4
    channel.refresh_from_db()
    assert channel.status == "disabled" and "4 failed attempts in a row" in channel.disabled_reason
    assert "HTTP 503" in channel.disabled_reason
    # Its owner got an email; a pending retry is not sent to a disabled channel.
    [notice] = smtp_inbox.messages
    assert notice["To"] == "owner@example.com" and "flaky" in notice["Subject"]
    assert not Delivery.objects.filter(channel=channel, result="pending").exists()


def test_a_permanent_4xx_disables_at_once_and_the_page_says_why(
    slow_checkout: None, webhook: WebhookReceiver, client: Client, owner: Any
) -> None:
    webhook.statuses = [404]
    nobody = get_user_model().objects.create_user("no-email", "", "x")
    channel = Channel.objects.create(name="gone", kind="webhook", config={"url": webhook.url}, owner=nobody)
    rule = rule_with([channel])
    with time_machine.travel(NOW, tick=False):
        evaluate_rules([rule], NOW)
        deliver_due()
        assert deliver_due(NOW + timedelta(hours=2)) == 0  # never retried
    delivery = Delivery.objects.get(channel=channel)
    assert delivery.result == "failed" and delivery.http_status == 404
    channel.refresh_from_db()
    assert channel.status == "disabled" and channel.disabled_reason.startswith("permanent error: HTTP 404")
    assert channel.owner_told_at is None
    client.force_login(owner)
    html = client.get(f"/alerts/channels/{channel.pk}/").content.decode()
    assert "Disabled" in html and "permanent error: HTTP 404" in html and "no email address" in html


@pytest.mark.parametrize(
    ("reply", "result", "status"),
    [("450 mailbox busy", "retrying", "active"), ("550 no such user", "failed", "disabled")],
)
def test_smtp_4xx_is_retried_and_5xx_disables(
    slow_checkout: None, smtp_inbox: SmtpInbox, reply: str, result: str, status: str
) -> None:
    smtp_inbox.refuse_with = reply
    channel = Channel.objects.create(name="mail", kind="email", config={"to": ["lead@example.com"]})
    rule = rule_with([channel])
    with time_machine.travel(NOW, tick=False):
        evaluate_rules([rule], NOW)
        deliver_due()
    first = Delivery.objects.get(channel=channel, attempt=1)
    assert first.result == result and first.smtp_reply == reply
    channel.refresh_from_db()
    assert channel.status == status
    assert Delivery.objects.filter(channel=channel, result="pending").exists() == (result == "retrying")


def test_a_silenced_rule_records_but_sends_nothing(slow_checkout: None, webhook: WebhookReceiver) -> None:
    channel = Channel.objects.create(name="hook", kind="webhook", config={"url": webhook.url})
    rule = rule_with([channel])
    Silence.objects.create(rule=rule, ends_at=NOW + timedelta(hours=1))
    with time_machine.travel(NOW, tick=False):
        [notification] = evaluate_rules([rule], NOW)[1]
        deliver_due()
    assert notification.silenced and not Delivery.objects.exists() and webhook.requests == []
    # Silences for another tenant (of every rule, or of this rule) do not hold this one back.
    Silence.objects.all().delete()
    Silence.objects.create(tenant="globex", ends_at=NOW + timedelta(hours=1))
    Silence.objects.create(rule=rule, tenant="globex", ends_at=NOW + timedelta(hours=1))
    rule.critical_threshold = 8000
    rule.save()
    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        [escalated] = evaluate_rules([rule], NOW + timedelta(minutes=5))[1]
        deliver_due()
    assert not escalated.silenced and len(webhook.requests) == 1


def test_channel_config_is_validated() -> None:
    from django.core.exceptions import ValidationError

    from apps.alerts.models import validated_config

    assert validated_config("email", {"to": "a@example.com, b@example.com"}) == {
        "to": ["a@example.com", "b@example.com"]
    }
    assert validated_config("webhook", {"url": "http://10.0.0.5:8080/hook"})["url"].startswith("http://10.")
    for kind, config in (
        ("email", {"to": ["not-an-address"]}),
        ("webhook", {"url": "ftp://example.com/x"}),
        ("slack", {"url": "file:///etc/passwd"}),
        ("webhook", {}),
        ("pager", {}),
    ):
        with pytest.raises(ValidationError):
            validated_config(kind, config)


def test_the_sweep_task_evaluates_due_rules_once(slow_checkout: None) -> None:
    from apps.alerts.tasks import evaluate_due

    rule = rule_with([], next_evaluation_at=NOW - timedelta(seconds=5))
    with time_machine.travel(NOW, tick=False) as traveller:
        assert evaluate_due() == 1  # fired
        assert evaluate_due() == 0  # not due again yet
        traveller.shift(timedelta(minutes=61))  # due, and past the cooldown
        assert evaluate_due() == 1
    assert events(rule) == [("fired", "warning"), ("repeated", "warning")]


def test_a_cycle_reads_silences_channels_and_rules_once_however_many_alerts_fire(project: Project) -> None:
    """Many alerts firing at once (a bad deploy, every tenant) cost a few statements each, not
    a read of the silences, the channels and the rule per alert; what they decide is the same."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    tenants = ["acme", "globex", "initech", "umbrella", "hooli"]
    for tenant in tenants:
        store_calls(project, [200.0] * 40, tenant=tenant, errors=10)
    active = Channel.objects.create(name="hook", kind="webhook", config={"url": "http://127.0.0.1:9/hook"})
    disabled = Channel.objects.create(name="old hook", kind="webhook", config={"url": "http://127.0.0.1:9/old"},
                                      status=Channel.Status.DISABLED)  # fmt: skip
    rule = AlertRule.objects.create(name="errors per tenant", kind=AlertRule.Kind.ERROR_RATE, group_by=["tenant"],
                                    warning_threshold=0.05, critical_threshold=0.2, min_samples=20)  # fmt: skip
    rule.channels.set([active, disabled])
    Silence.objects.create(tenant="globex", ends_at=NOW + timedelta(hours=1))  # every rule, one tenant
    Silence.objects.create(rule=rule, tenant="initech", ends_at=NOW + timedelta(hours=1))
    Silence.objects.create(rule=rule, tenant="hooli", ends_at=NOW - timedelta(minutes=1))  # over
    with CaptureQueriesContext(connection) as queries:
        notifications = evaluate_rules([AlertRule.objects.get(pk=rule.pk)], NOW)[1]
    assert sorted((n.tenant, n.silenced) for n in notifications) == [
        ("acme", False), ("globex", True), ("hooli", False), ("initech", True), ("umbrella", False),
    ]  # fmt: skip
    assert sorted(Delivery.objects.values_list("notification__tenant", "channel__name")) == [
        ("acme", "hook"), ("hooli", "hook"), ("umbrella", "hook"),
    ]  # fmt: skip
    reads = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("SELECT")]
    for table in ("alerts_silence", "alerts_channel", "alerts_alertrule"):
        assert sum(f'FROM "{table}"' in sql for sql in reads) <= 1, table
    assert len(queries) <= 60  # 5 alerts: the reads, then ~5 statements each
