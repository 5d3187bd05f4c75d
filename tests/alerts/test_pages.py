"""The alert pages: login, permissions, tenant isolation, create / test / preview, channels
(send test queues a task), history, and the overview's panel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from apps.accounts.models import Project
from apps.alerts.models import AlertRule, AlertState, Channel, Delivery, Notification
from apps.alerts.services import evaluate_rules
from apps.insights.models import Finding
from tests.alerts.conftest import NOW, store_calls
from tests.otlp_helpers import make_traces, protobuf_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_tenants_alerting(project: Project) -> AlertRule:
    with time_machine.travel(NOW, tick=False):
        store_calls(project, [200.0] * 40, tenant="acme", errors=20, feature="acme-secret-feature")
        store_calls(project, [200.0] * 40, tenant="globex", errors=20, feature="globex-chat")
        rule = AlertRule.objects.create(name="errors per tenant", kind="error_rate", group_by=["tenant"],
                                        critical_threshold=0.2, min_samples=10)  # fmt: skip
        evaluate_rules([rule], NOW)
    return rule


def test_pages_need_login(client: Client) -> None:
    for path in ("/alerts/", "/alerts/rules/new/", "/alerts/channels/", "/alerts/history/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_a_tenant_limited_user_sees_only_their_tenants_alerts(
    client: Client, two_tenants_alerting: AlertRule, outsider: Any, owner: Any
) -> None:
    hidden = AlertRule.objects.create(name="all traffic p99", kind="latency", critical_threshold=1)
    AlertState.objects.create(rule=hidden, group_key="{}", level="critical", summary="mixes every tenant")
    client.force_login(outsider)  # sees globex only
    page = client.get("/alerts/").content.decode()
    assert "errors per tenant" in page and "tenant globex" in page
    assert "tenant acme" not in page and "all traffic p99" not in page and "mixes every tenant" not in page
    history = client.get("/alerts/history/").content.decode()
    assert "globex" in history and "acme" not in history
    assert client.get(f"/alerts/rules/{hidden.pk}/").status_code == 404
    rule_page = client.get(f"/alerts/rules/{two_tenants_alerting.pk}/").content.decode()
    assert "tenant globex" in rule_page and "tenant acme" not in rule_page
    # Staff see both.
    client.force_login(owner)
    page = client.get("/alerts/").content.decode()
    assert "tenant acme" in page and "tenant globex" in page and "all traffic p99" in page
    assert "- / 20.0%" in page and "- / 1 ms" in page  # the levels in their units


def test_editing_needs_the_permission(client: Client, teammate: Any, outsider: Any) -> None:
    client.force_login(teammate)
    assert client.get("/alerts/rules/new/").status_code == 403
    assert (
        client.post("/alerts/channels/new/", {"name": "x", "kind": "email", "to": "a@example.com"}).status_code == 403
    )
    rule = AlertRule.objects.create(name="r", kind="latency", critical_threshold=1)
    assert client.post(f"/alerts/rules/{rule.pk}/", {"action": "delete"}).status_code == 403
    assert AlertRule.objects.filter(pk=rule.pk).exists()
    # With the permission a tenant-limited user may only write rules about their own tenants.
    outsider.user_permissions.add(Permission.objects.get(codename="change_alertrule"))
    outsider = get_user_model().objects.get(pk=outsider.pk)
    client.force_login(outsider)
    form = {"name": "mine", "kind": "error_rate", "critical_threshold": "0.1", "percentile": "99",
            "window_minutes": "15", "distribution": "e2e_ms", "budget_period": "month",
            "min_severity": "warning", "min_samples": "20", "cooldown_minutes": "60",
            "evaluate_every_seconds": "30", "action": "save"}  # fmt: skip
    response = client.post("/alerts/rules/new/", {**form, "tenants": "acme"})
    assert response.status_code == 400 and "name one or more of your tenants: globex" in response.content.decode()
    response = client.post("/alerts/rules/new/", {**form, "tenants": "globex"})
    assert response.status_code == 302
    assert AlertRule.objects.get(name="mine").tenants == ["globex"]


def test_create_test_and_preview_a_rule(client: Client, owner: Any, project: Project) -> None:
    # Slow calls in one hour five days ago and one two days ago (the preview's closed hours), and now.
    with time_machine.travel(NOW, tick=False):
        for days in (5, 2):
            store_calls(project, [9000.0] * 30, end=NOW - timedelta(days=days), span_minutes=30)
        store_calls(project, [9000.0] * 30)
        client.force_login(owner)
        form = {"name": "checkout p99", "kind": "latency", "features": "checkout", "percentile": "99",
                "distribution": "e2e_ms", "window_minutes": "15", "warning_threshold": "5000",
                "critical_threshold": "8000", "budget_period": "month", "min_severity": "warning",
                "min_samples": "20", "cooldown_minutes": "60", "evaluate_every_seconds": "30"}  # fmt: skip
        response = client.post("/alerts/rules/new/", {**form, "action": "preview"})
        html = response.content.decode()
        assert response.status_code == 200 and not AlertRule.objects.exists()  # nothing saved by a preview
        assert "Evaluated now (nothing was sent)" in html and "p99 end-to-end latency 9.00 s" in html
        assert "would have fired 2 times in the last 30 days" in html
        for days in (5, 2):
            assert (NOW - timedelta(days=days)).strftime("%Y-%m-%d %H:00") in html
        response = client.post("/alerts/rules/new/", {**form, "action": "save"})
        rule = AlertRule.objects.get()
        assert response["Location"] == f"/alerts/rules/{rule.pk}/"
        html = client.post(f"/alerts/rules/{rule.pk}/", {"action": "test"}).content.decode()
        assert "critical" in html and not Notification.objects.exists() and not AlertState.objects.exists()
        assert "would have fired 2 times" in client.get(f"/alerts/rules/{rule.pk}/?preview=1").content.decode()
        # A bad level is a form error, not a 500.
        response = client.post("/alerts/rules/new/", {**form, "warning_threshold": "9000", "action": "save"})
        assert response.status_code == 400 and "must not be above the critical level" in response.content.decode()
        response = client.post("/alerts/rules/new/", {**form, "percentile": "abc", "action": "save"})
        assert response.status_code == 400 and "a percentile as digits" in response.content.decode()
        response = client.post("/alerts/rules/new/", {**form, "features": "a\x00b", "action": "save"})
        assert response.status_code == 400 and "NUL" in response.content.decode()


def test_channels_create_validate_and_queue_a_test(client: Client, owner: Any) -> None:
    client.force_login(owner)
    response = client.post("/alerts/channels/new/", {"name": "hook", "kind": "webhook", "url": "gopher://x"})
    assert response.status_code == 400 and "http:// or https://" in response.content.decode()
    response = client.post("/alerts/channels/new/", {"name": "hook", "kind": "webhook",
                                                     "url": "http://192.168.1.20/hook"})  # fmt: skip
    channel = Channel.objects.get()
    assert (
        response.status_code == 302 and channel.owner == owner and channel.config == {"url": "http://192.168.1.20/hook"}
    )
    page = client.get(f"/alerts/channels/{channel.pk}/").content.decode()
    assert channel.secret in page and "X-Observatory-Signature" in page
    # "Send test notification" queues a task on the broker (nothing is sent in the request).
    response = client.post(f"/alerts/channels/{channel.pk}/", {"action": "test"})
    assert response.status_code == 200 and "A test notification is queued" in response.content.decode()
    assert not Delivery.objects.exists()


def test_an_outsider_sees_only_channels_they_own(client: Client, outsider: Any, owner: Any) -> None:
    theirs = Channel.objects.create(name="globex hook", kind="slack", config={"url": "https://chat/x"}, owner=outsider)
    other = Channel.objects.create(name="ops mail", kind="email", config={"to": ["ops@example.com"]}, owner=owner)
    client.force_login(outsider)
    page = client.get("/alerts/channels/").content.decode()
    assert "globex hook" in page and "ops mail" not in page
    assert client.get(f"/alerts/channels/{other.pk}/").status_code == 404
    assert client.get(f"/alerts/channels/{theirs.pk}/").status_code == 200


def test_overview_panel_shows_open_alerts_and_findings_in_scope(
    client: Client, two_tenants_alerting: AlertRule, outsider: Any, owner: Any, project: Project, ingest_key: str
) -> None:
    for tenant in ("acme", "globex"):
        body = protobuf_body(make_traces(2, tenant=tenant))
        client.post("/v1/traces", data=body, content_type="application/x-protobuf",
                    headers={"Authorization": f"Bearer {ingest_key}"})  # fmt: skip
    for tenant, title in (("acme", "acme output drift"), ("globex", "globex latency regression"),
                          ("", "openai changed gpt-4o for everyone")):  # fmt: skip
        Finding.objects.create(project=project, kind="drift", metric="m", tenant=tenant, signature=title,
                               severity="warning", title=title, slice={"provider": "openai"})  # fmt: skip
    client.force_login(outsider)
    html = client.get("/?range=24h").content.decode()
    assert "Open alerts and recent findings" in html
    assert "globex latency regression" in html and "tenant globex" in html
    assert "acme output drift" not in html and "openai changed gpt-4o" not in html and "tenant acme" not in html
    client.force_login(owner)
    html = client.get("/?range=24h").content.decode()
    assert "acme output drift" in html and "openai changed gpt-4o for everyone" in html and "tenant acme" in html
    assert "?provider=openai&amp;tenant=acme" in html  # the finding links to its slice
