"""Every page under the Content-Security-Policy the server sends, in a real browser: nothing
is refused (no inline script without the nonce, no style or resource the policy blocks), and
at 1280 px every data table fits its panel or scrolls inside it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import login

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# Every page a signed-in person reaches, including the detail pages whose "By model" and
# breakdown tables are the widest, and Django's admin (its own templates and scripts).
PAGES = [
    "/?range=7d",
    "/?range=24h&compare=1",
    "/features/?range=7d",
    "/tenants/?range=7d",
    "/models/?range=7d",
    "/features/support-chat/?range=7d",
    "/tenants/acme/?range=7d",
    "/models/openai/gpt-4o/?range=7d",
    "/compare/?kind=feature&a=support-chat&b=summarize&range=7d",
    "/compare/?kind=model&a=openai/gpt-4o&b=anthropic/claude-sonnet-4-5&range=7d",
    "/traces/?range=7d",
    "/prices/",
    "/admin/",
    "/admin/accounts/ingestkey/",
]

# Collects the browser's own record of refused content, before any page script runs (an init
# script is injected by the browser, so the policy does not apply to it).
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"} ` +
                              `at ${event.sourceFile}:${event.lineNumber} (${event.sample})`);
});
"""

# For each table in main: the nearest ancestor that scrolls sideways (up to its panel), and
# whether the table, its scroller or its panel sticks out of what contains it.
TABLE_LAYOUT = """
() => {
  const main = document.querySelector("main");
  const mainBox = main.getBoundingClientRect();
  const found = [];
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth + 1) {
    found.push(`the page scrolls sideways: ${root.scrollWidth} px wide in a ${root.clientWidth} px window`);
  }
  document.querySelectorAll("main table").forEach((table, index) => {
    const panel = table.closest(".panel") || main;
    const name = `table ${index + 1} (${table.className || "no class"}) in "${
      (panel.querySelector("h2") || {}).textContent || "main"}"`.replace(/\\s+/g, " ");
    let scroller = null;
    for (let node = table.parentElement; node && node !== panel.parentElement; node = node.parentElement) {
      const overflow = getComputedStyle(node).overflowX;
      if (overflow === "auto" || overflow === "scroll") { scroller = node; break; }
    }
    const panelBox = panel.getBoundingClientRect();
    if (panelBox.right > mainBox.right + 1) {
      found.push(`${name}: its panel ends at ${panelBox.right} px, past the page column (${mainBox.right} px)`);
    }
    if (!scroller) {
      found.push(`${name}: no scroll container between the table and its panel`);
      const tableBox = table.getBoundingClientRect();
      if (tableBox.right > panelBox.right + 1) {
        found.push(`${name}: ${tableBox.width} px wide, overflows its panel (${panelBox.width} px)`);
      }
    } else if (scroller.getBoundingClientRect().right > panelBox.right + 1) {
      found.push(`${name}: its scroll container is wider than its panel`);
    }
  });
  return found;
}
"""


def violations(page: Any) -> list[str]:
    return list(page.evaluate("window.__cspViolations"))


@pytest.mark.parametrize("path", PAGES)
def test_no_content_is_refused_and_tables_fit_at_1280_px(
    demo_site: dict[str, Any], watched_page: tuple[Any, Any], path: str
) -> None:
    page, watch = watched_page
    page.add_init_script(RECORD_VIOLATIONS)
    # Django's admin names no icon, so the browser asks for /favicon.ico: not under test here.
    page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    refused: list[str] = []
    page.on(
        "console", lambda msg: re.search(r"Refused to|Content Security Policy", msg.text) and refused.append(msg.text)
    )
    login(page, demo_site["url"], "owner")
    response = page.goto(demo_site["url"] + path)
    assert response is not None and response.status == 200, f"{path}: HTTP {response and response.status}"
    csp = response.headers["content-security-policy"]
    script_src = next(part for part in csp.split(";") if part.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src, csp
    page.wait_for_load_state("load")
    for figure in page.locator(".plotly-graph-div").all():
        figure.locator(".main-svg").first.wait_for(state="attached")
    if page.locator(".plotly-graph-div").count():
        # Hover draws Plotly's labels (injected styles): the policy must allow them too.
        page.locator(".plotly-graph-div .nsewdrag").first.hover()
        page.wait_for_timeout(200)
    assert page.viewport_size["width"] == 1280
    assert not violations(page) and not refused, "\n".join(violations(page) + refused)
    if not path.startswith("/admin/"):  # Django's admin lays out its own tables
        layout = page.evaluate(TABLE_LAYOUT)
        assert not layout, "\n".join(layout)
    assert not watch.problems


def test_a_trace_page_under_the_policy(demo_site: dict[str, Any], watched_page: tuple[Any, Any]) -> None:
    page, _ = watched_page
    page.add_init_script(RECORD_VIOLATIONS)
    base = demo_site["url"]
    login(page, base, "owner")
    page.goto(f"{base}/traces/?range=7d&provider=vllm")
    page.locator("table.traces tbody a").first.click()
    page.wait_for_url(re.compile(r".*/traces/[0-9a-f]{32}/"))
    page.wait_for_load_state("load")
    page.locator(".plotly-graph-div .main-svg").first.wait_for(state="attached")
    assert not violations(page), "\n".join(violations(page))
    layout = page.evaluate(TABLE_LAYOUT)
    assert not layout, "\n".join(layout)


def test_a_script_without_the_nonce_is_refused(demo_site: dict[str, Any], browser: Any) -> None:
    """The counterpart that keeps the checks above honest: the policy really blocks an inline
    script that lacks the nonce, and the browser reports it where the tests look."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.add_init_script(RECORD_VIOLATIONS)
        page.goto(demo_site["url"] + "/accounts/login/")
        page.wait_for_load_state("load")
        page.evaluate(
            """() => { const script = document.createElement("script");
                       script.textContent = "window.__ran = true"; document.head.appendChild(script); }"""
        )
        page.wait_for_timeout(100)
        assert page.evaluate("window.__ran === undefined")
        assert any("script-src" in violation for violation in violations(page)), violations(page)
    finally:
        context.close()
