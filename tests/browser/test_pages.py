"""Every page in a real browser, on simulated traffic: no console error, no failed request,
a screenshot of each under test-artifacts/screenshots/."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import login, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# (screenshot name, path, text the page must show). Pages not built yet are skipped by
# the navigation check below rather than listed here.
PAGES = [
    ("overview", "/?range=7d", "LLM cost"),
    ("overview-24h-compare", "/?range=24h&compare=1", "vs previous"),
    ("traces", "/traces/?range=7d", "Traces"),
    ("features", "/features/?range=7d", "support-chat"),
    ("tenants", "/tenants/?range=7d", "acme"),
    ("models", "/models/?range=7d", "gpt-4o"),
    ("feature-detail", "/features/support-chat/?range=7d", "support-chat"),
    ("tenant-detail", "/tenants/acme/?range=7d", "acme"),
    ("compare", "/compare/?kind=feature&a=support-chat&b=summarize&range=7d", "support-chat"),
    ("prices", "/prices/", "gpt-4o"),
]


@pytest.mark.parametrize(("name", "path", "expected"), PAGES, ids=[p[0] for p in PAGES])
def test_every_page_renders_without_browser_errors(
    demo_site: dict[str, Any], watched_page: tuple[Any, Any], name: str, path: str, expected: str
) -> None:
    page, _ = watched_page
    login(page, demo_site["url"], "owner")
    response = page.goto(demo_site["url"] + path)
    assert response is not None and response.status == 200, f"{path}: HTTP {response and response.status}"
    page.wait_for_load_state("load")
    assert expected in page.inner_text("main")
    # Charts drew: every figure placeholder holds a rendered plot.
    for figure in page.locator(".plotly-graph-div").all():
        figure.locator(".main-svg").first.wait_for(state="attached")
    screenshot(page, name)


def test_filter_and_time_range_are_kept_in_the_url(demo_site: dict[str, Any], watched_page: tuple[Any, Any]) -> None:
    page, _ = watched_page
    base = demo_site["url"]
    login(page, base, "owner")
    page.goto(f"{base}/?range=7d")
    page.click("form.filters .ranges a:text-is('24h')")
    page.wait_for_url(re.compile(r".*range=24h.*"))
    # Filter by the top feature from its table row; every chart then shows that feature only.
    page.locator("table a").first.click()
    page.wait_for_url(re.compile(r".*feature=.*"))
    assert "range=24h" in page.url
    assert page.locator(".chip").count() == 1
    screenshot(page, "overview-filtered")


def test_open_a_trace_from_the_explorer(demo_site: dict[str, Any], watched_page: tuple[Any, Any]) -> None:
    page, _ = watched_page
    base = demo_site["url"]
    login(page, base, "owner")
    page.goto(f"{base}/traces/?range=7d&provider=vllm")
    page.locator("table.traces tbody a").first.click()
    page.wait_for_url(re.compile(r".*/traces/[0-9a-f]{32}/"))
    page.wait_for_load_state("load")
    text = page.inner_text("main")
    assert "Waterfall" in text and "llm_request" in text  # the vLLM server span sits in the client's trace
    page.locator(".plotly-graph-div .main-svg").first.wait_for(state="attached")
    screenshot(page, "trace-detail")


def test_download_a_csv(demo_site: dict[str, Any], watched_page: tuple[Any, Any]) -> None:
    page, _ = watched_page
    base = demo_site["url"]
    login(page, base, "owner")
    page.goto(f"{base}/?range=7d")
    with page.expect_download() as download_info:
        page.locator("a.dl").first.click()
    download = download_info.value
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert rows and "Cost (USD)" in rows[0]


def test_tenant_limited_user_sees_only_their_tenant(demo_site: dict[str, Any], watched_page: tuple[Any, Any]) -> None:
    page, _ = watched_page
    base = demo_site["url"]
    login(page, base, "outsider")
    page.goto(f"{base}/?range=7d")
    text = page.inner_text("main")
    assert "globex" in text
    for other in ("acme", "initech", "umbrella"):
        assert other not in text
    page.goto(f"{base}/traces/?range=7d")
    assert "acme" not in page.inner_text("main")
    screenshot(page, "overview-outsider")


def test_the_dark_theme_holds_and_is_remembered(demo_site: dict[str, Any], watched_page: tuple[Any, Any]) -> None:
    """The toggle switches to the dark palette (the page, its panels and the charts' text),
    and the choice survives a reload; screenshots of both themes are kept."""
    page, _ = watched_page
    login(page, demo_site["url"], "owner")
    page.goto(demo_site["url"] + "/features/support-chat/?range=7d")
    page.wait_for_load_state("load")

    def background() -> tuple[int, ...]:
        colour = page.evaluate("getComputedStyle(document.body).backgroundColor")
        return tuple(int(part) for part in re.findall(r"\d+", colour)[:3])

    page.evaluate("document.documentElement.dataset.theme = 'light'; localStorage.setItem('obs-theme', 'light')")
    light = background()
    assert sum(light) > 600, light
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    dark = background()
    assert sum(dark) < 150, dark
    page.reload()
    page.wait_for_load_state("load")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark" and background() == dark
    for figure in page.locator(".plotly-graph-div").all():
        figure.locator(".main-svg").first.wait_for(state="attached")
    screenshot(page, "feature-detail-dark")
