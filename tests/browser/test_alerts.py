"""The alert pages in a real browser, on simulated traffic: rules list -> create -> test and
preview -> save, channels (create, send a test), history, the overview's panel; no console
error or failed request; screenshots under test-artifacts/screenshots/alerts-*.png."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.utils import timezone

from tests.browser.conftest import committed, login, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_rules_create_preview_channels_and_history(
    demo_site: dict[str, Any], watched_page: tuple[Any, Any], django_db_blocker: Any
) -> None:
    page, _ = watched_page
    base = demo_site["url"]
    login(page, base, "owner")

    page.goto(f"{base}/alerts/")
    assert "No alert rules yet" in page.inner_text("main")
    screenshot(page, "alerts-rules-empty")

    # A channel first, so the rule can notify it.
    page.click("text=Channels")
    page.wait_for_url(re.compile(r".*/alerts/channels/$"))
    page.click("text=New channel")
    page.fill("#id_name", "ops webhook")
    page.select_option("#id_kind", "webhook")
    page.fill("#id_url", "http://127.0.0.1:9/hook")
    with page.expect_navigation():
        page.click("button[value=save]")
    assert "X-Observatory-Signature" in page.inner_text("main")
    with page.expect_navigation():
        page.click("button[value=test]")
    assert "A test notification is queued" in page.inner_text("main")
    screenshot(page, "alerts-channel")

    # Rules list -> create -> test and preview.
    page.goto(f"{base}/alerts/")
    page.click("text=New rule")
    page.fill("#id_name", "support-chat p99")
    page.select_option("#id_kind", "latency")
    page.fill("#id_features", "support-chat")
    page.fill("#id_percentile", "99")
    page.fill("#id_window_minutes", "60")
    page.fill("#id_warning_threshold", "100")
    page.fill("#id_critical_threshold", "200")
    page.fill("#id_min_samples", "5")
    page.check("text=ops webhook")
    with page.expect_navigation():
        page.click("button[value=preview]")
    text = page.inner_text("main")
    assert "Evaluated now (nothing was sent)" in text
    assert re.search(r"would have fired \d+ times? in the last 30 days", text), text
    screenshot(page, "alerts-rule-preview")
    with page.expect_navigation():
        page.click("button[value=save]")
    assert re.search(r"/alerts/rules/\d+/$", page.url)
    screenshot(page, "alerts-rule")

    # The sweep's work, done here: the rule fires (support-chat's p99 is far above 200 ms).
    from apps.alerts.delivery import deliver_due
    from apps.alerts.models import AlertRule
    from apps.alerts.services import evaluate_rules

    # On a thread of its own (its own connection, autocommit): this test runs inside a
    # rolled-back transaction that the live server could not see into.
    events: list[str] = []

    def sweep() -> None:
        rule = AlertRule.objects.get(name="support-chat p99")
        _, notifications = evaluate_rules([rule], timezone.now())
        events.extend(n.event for n in notifications)
        deliver_due()  # nothing listens on port 9: a connection error, retried later

    committed(django_db_blocker, sweep)
    assert events == ["fired"]

    page.click("text=History")
    page.wait_for_url(re.compile(r".*/alerts/history/$"))
    text = page.inner_text("main")
    assert "support-chat p99" in text and "Fired" in text and "Failed, will retry" in text
    screenshot(page, "alerts-history")

    page.goto(f"{base}/alerts/")
    assert "support-chat p99" in page.inner_text("main")
    screenshot(page, "alerts-rules")
    page.goto(f"{base}/?range=7d")
    panel = page.inner_text("#alerts-panel")
    assert "support-chat p99" in panel
    page.locator("#alerts-panel").scroll_into_view_if_needed()
    screenshot(page, "alerts-overview")

    with django_db_blocker.unblock():
        AlertRule.objects.all().delete()


def test_outsider_sees_no_other_tenants_alert_pages(
    demo_site: dict[str, Any], watched_page: tuple[Any, Any], django_db_blocker: Any
) -> None:
    from apps.alerts.models import AlertRule

    rule = committed(
        django_db_blocker, lambda: AlertRule.objects.create(name="everyone p99", kind="latency", critical_threshold=1)
    )
    try:
        page, watch = watched_page
        base = demo_site["url"]
        login(page, base, "outsider")
        page.goto(f"{base}/alerts/")
        assert "everyone p99" not in page.inner_text("main")
        response = page.goto(f"{base}/alerts/rules/{rule.pk}/")
        assert response is not None and response.status == 404
        page.wait_for_load_state("load")
        # The 404 (its response and the console line the browser writes for it) was the point.
        watch.found[:] = [p for p in watch.found if "404" not in p]
    finally:
        committed(django_db_blocker, lambda: AlertRule.objects.filter(pk=rule.pk).delete())
