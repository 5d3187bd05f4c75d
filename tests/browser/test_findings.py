"""The findings pages in a real browser, on simulated traffic: list -> detail (statistics and
evidence charts drawn) -> accept as new normal; then the change-point mark on support-chat's
latency chart, whose label links back to the finding. No console error or failed request;
screenshots under test-artifacts/screenshots/findings-*.png."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests.browser.conftest import committed, login, screenshot
from tests.browser.test_csp_and_layout import RECORD_VIOLATIONS, TABLE_LAYOUT, violations

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def support_chat_regression(demo_site: dict[str, Any], django_db_blocker: Any) -> Iterator[Any]:
    """An open p99 regression of support-chat that began 6 hours ago (in the 24 h range), the
    evidence following the contract."""
    from apps.accounts.models import Project
    from apps.insights.models import Finding
    from tests.insights.findings_data import make_finding

    began = timezone.now() - timedelta(hours=6)
    finding = committed(
        django_db_blocker,
        lambda: make_finding(Project.objects.get(name="browser-demo"), "support-chat p99 latency doubled",
                             slice_={"feature": "support-chat"}, severity="critical", began=began),
    )  # fmt: skip
    yield finding
    committed(django_db_blocker, lambda: Finding.objects.filter(pk=finding.pk).delete())


def test_list_detail_accept_and_the_chart_mark(
    demo_site: dict[str, Any], watched_page: tuple[Any, Any], support_chat_regression: Any
) -> None:
    page, _ = watched_page
    # The findings pages under the Content-Security-Policy, and their tables fit at 1280 px.
    page.add_init_script(RECORD_VIOLATIONS)
    base = demo_site["url"]
    finding = support_chat_regression
    login(page, base, "owner")

    page.click("header nav >> text=Findings")
    page.wait_for_url(re.compile(r".*/findings/$"))
    row = page.locator("table.findings tr", has_text="support-chat p99 latency doubled")
    assert "Open" in row.inner_text() and "feature: support-chat" in row.inner_text()
    assert not page.evaluate(TABLE_LAYOUT) and not violations(page)
    screenshot(page, "findings-list")

    row.locator("a", has_text="support-chat p99 latency doubled").click()
    page.wait_for_url(re.compile(rf".*/findings/{finding.pk}/$"))
    text = page.inner_text("main")
    assert "binomial test of the quantile" in text and "7.5e-08" in text and "Baseline" in text
    # The three evidence charts are drawn (Plotly turned each into an SVG).
    for chart in ("p99-latency-baseline-vs-current-distribution", "p99-latency-baseline-vs-current-mix",
                  "p99-latency-hourly"):  # fmt: skip
        page.wait_for_selector(f'[data-chart="{chart}"] .main-svg')
    page.locator('[data-chart="p99-latency-hourly"] .nsewdrag').first.hover()  # Plotly's hover styles
    assert not page.evaluate(TABLE_LAYOUT) and not violations(page), violations(page)
    screenshot(page, "findings-detail")

    with page.expect_navigation():
        page.click("button[value=accept]")
    assert "Accepted as new normal since" in page.inner_text("#finding-status")
    assert page.locator("button[value=accept]").count() == 0
    screenshot(page, "findings-accepted")

    # The dashboard: support-chat's latency chart marks where the change began.
    page.goto(f"{base}/features/support-chat/?range=24h")
    chart = page.locator('[data-chart="latency-percentiles"]')
    chart.locator(".main-svg").first.wait_for()
    chart.scroll_into_view_if_needed()
    # Plotly wraps the whole label (its background too) in the link: a click anywhere on it follows.
    label = chart.locator(".annotation", has_text="support-chat p99 latency")
    assert label.count() == 1
    assert label.locator('a[target="_self"]').count() == 1
    assert chart.locator(".shapelayer path").count() >= 1  # the dotted line
    screenshot(page, "findings-chart-mark")
    with page.expect_navigation():
        label.click()
    assert page.url == f"{base}/findings/{finding.pk}/"
    assert "support-chat p99 latency doubled" in page.inner_text("h1")


def test_an_outsider_cannot_open_another_tenants_finding(
    demo_site: dict[str, Any], watched_page: tuple[Any, Any], support_chat_regression: Any
) -> None:
    page, watch = watched_page
    base = demo_site["url"]
    login(page, base, "outsider")
    page.goto(f"{base}/findings/")
    assert "support-chat p99 latency doubled" not in page.inner_text("main")
    response = page.goto(f"{base}/findings/{support_chat_regression.pk}/")
    assert response is not None and response.status == 404
    page.wait_for_load_state("load")
    # The 404 (its response and the console line the browser writes for it) was the point.
    watch.found[:] = [problem for problem in watch.found if "404" not in problem]
