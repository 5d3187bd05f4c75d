# ruff: noqa: F811 - pytest fixtures imported from tests/reports are named again as parameters
"""The HTML part in headless Chromium: light, dark, and a 400 px wide mail client.

Screenshots go to test-artifacts/screenshots/weekly-review-*.png, to be looked at.
"""

from __future__ import annotations

from typing import Any

import pytest

from apps.reports.compose import html_with_data_uris
from apps.reports.delivery import BuildCache
from tests.browser.conftest import ARTIFACTS, screenshot

# The review's own fixtures, from tests/reports (this module lives with the browser tests so
# that one session-wide Playwright serves every browser test).
from tests.reports.conftest import (  # noqa: F401
    WEEK,
    WeekEventRows,
    _review_settings,
    at_now,
    self_hosted_traffic,
    traffic,
    week_events,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.mark.parametrize(
    ("name", "width", "scheme"),
    [("light", 1024, "light"), ("dark", 1024, "dark"), ("narrow-400px", 400, "light"), ("narrow-dark", 400, "dark")],
)
def test_the_html_part_reads_in_light_dark_and_narrow_clients(
    browser: Any,
    owner: Any,
    project: Any,
    settings: Any,
    traffic: None,
    week_events: WeekEventRows,
    at_now: Any,
    name: str,
    width: int,
    scheme: str,
) -> None:
    settings.REVIEW_CHART_IMAGES = name != "narrow-dark"  # that one shows the HTML/CSS bars instead
    self_hosted_traffic(project)
    composed = BuildCache().review(owner, WEEK)
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.set_content(html_with_data_uris(composed.html, composed.images), wait_until="load")
    # Nothing is fetched from anywhere: no external images, fonts or scripts.
    assert [url for url in requests if not url.startswith(("data:", "about:"))] == []
    # Nothing wider than the window: no sideways scrolling in a narrow client.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    images = page.locator("img.chart")
    assert images.count() == (2 if settings.REVIEW_CHART_IMAGES else 0)
    for index in range(images.count()):
        assert page.evaluate("(img) => img.naturalWidth", images.nth(index).element_handle()) > 0
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (background == "rgb(11, 17, 32)") == (scheme == "dark"), background
    # The findings and alerts, and the self-hosted split, are there and readable.
    events = page.locator(".card", has=page.get_by_role("heading", name="Findings and alerts"))
    assert events.get_by_role("link", name=week_events.acme_regression.title).is_visible()
    assert events.locator("td.sev-critical").count() == 3  # one finding, two alerts
    split = page.locator(".card", has=page.get_by_role("heading", name="Self-hosted vs API"))
    assert split.get_by_role("link", name="Idle GPU capacity (not in the total)").is_visible()
    critical = page.evaluate("getComputedStyle(document.querySelector('td.sev-critical')).color")
    assert critical == ("rgb(252, 165, 165)" if scheme == "dark" else "rgb(185, 28, 28)"), critical
    events.scroll_into_view_if_needed()
    screenshot(page, f"weekly-review-{name}")
    events.screenshot(path=str(ARTIFACTS / f"weekly-review-{name}-findings.png"))
    context.close()


@pytest.mark.django_db(transaction=True)
def test_the_preview_page_shows_the_email_as_sent(
    browser: Any,
    live_server: Any,
    outsider: Any,
    traffic: None,
    week_events: WeekEventRows,
    at_now: Any,
) -> None:
    from django.test import Client

    client = Client()
    client.force_login(outsider)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    page = context.new_page()
    problems: list[str] = []
    page.on("response", lambda reply: reply.status >= 400 and problems.append(f"{reply.status} {reply.url}"))
    page.goto(f"{live_server.url}/reviews/preview/?week={WEEK.label}", wait_until="load")
    frame = page.frame_locator("iframe")
    assert frame.locator("h1").inner_text() == "16-22 Nov 2026"
    assert "covering tenant globex" in frame.locator("body").inner_text()
    assert "acme" not in page.content() and problems == []
    events = frame.locator(".card", has=frame.get_by_role("heading", name="Findings and alerts"))
    assert events.get_by_role("link", name=week_events.globex_drift.title).is_visible()
    assert "fingerprint" not in page.content() and "Error rate everywhere" not in page.content()
    screenshot(page, "weekly-review-preview-page")
    context.close()
