"""Browser tests: Playwright driving Debian's Chromium (headless) against a live server
loaded with simulated traffic.

The browser is the system's /usr/bin/chromium (`run.py test` installs Debian's package
when it is missing); Playwright never downloads one. Every page a test opens is watched:
a console error, a failed request or an HTTP error response fails the test.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

# Playwright's sync API keeps an asyncio loop on this thread; the ORM calls these fixtures
# make are ordinary synchronous ones, which Django would otherwise refuse beside a loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("OBSERVATORY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This machine's network is closed: without these Chromium keeps trying Google's hosts.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "browser-test-pw-1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """pytest-django creates the test database only when a collected test asks for it; these
    tests reach it through the live server, so a browser module run alone found no tables.
    Marked, each test runs in a transaction of its own connection that is rolled back, which
    leaves the module's committed demo data alone."""
    for item in items:
        if "demo_site" in item.fixturenames and not item.get_closest_marker("django_db"):
            item.add_marker(pytest.mark.django_db)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: `python3 run.py test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def demo_site(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A real gunicorn process on the test database, sent two days of simulated traffic
    through OTLP and rolled up, plus three users: a staff owner, a teammate who sees every
    tenant, and an outsider limited to the tenant "globex". Module-scoped: pytest-django's
    live_server would flush the database after every test."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    from apps.accounts.models import IngestKey, Project, TenantAccess
    from apps.pricing.services import PriceBook
    from apps.rollups.runner import rollup_pending
    from collectors.simulator import simulate
    from tests.support.servers import database_url, gunicorn

    with django_db_blocker.unblock():
        call_command("load_prices", verbosity=0)
        PriceBook.forget()
        _, key = IngestKey.issue(Project.objects.create(name="browser-demo"), "browser")
        # Hashed with the default hashers: the gunicorn process verifies logins with those.
        owner = User.objects.create_user("owner", password=PASSWORD, is_staff=True, is_superuser=True)
        outsider = User.objects.create_user("outsider", password=PASSWORD)
        teammate = User.objects.create_user("teammate", password=PASSWORD)
        TenantAccess.objects.create(user=outsider, tenants=["globex"])
        TenantAccess.objects.create(user=teammate, all_tenants=True)
        end = timezone.now()
        log = tmp_path_factory.mktemp("browser") / "gunicorn.log"
        with gunicorn(database_url(connection.settings_dict), log, threads=8) as url:
            summary = simulate(endpoint=url, key=key, start=end - timedelta(days=2), end=end, requests=1500, seed=11)
            while rollup_pending():
                pass
            yield {"url": url, "summary": summary, "users": {"owner": owner, "outsider": outsider}}
        with connection.cursor() as cur:
            cur.execute("TRUNCATE telemetry_span")
        call_command("flush", interactive=False, verbosity=0)
        # Tests that run later expect the catalog that migrate loaded.
        call_command("load_prices", verbosity=0)
        PriceBook.forget()


class PageWatch:
    """Collects what would make a page broken in a person's browser."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.aborted: list[str] = []
        self.downloads: set[str] = set()

    @property
    def problems(self) -> list[str]:
        # A link that answers with a file aborts the navigation it started: not a failure.
        return self.found + [f"request failed: {url}" for url in self.aborted if url not in self.downloads]

    def attach(self, page: Any) -> None:
        page.on("console", lambda msg: msg.type == "error" and self.found.append(f"console: {msg.text}"))
        page.on("pageerror", lambda exc: self.found.append(f"page error: {exc}"))
        page.on("download", lambda download: self.downloads.add(download.url))
        page.on("requestfailed", self._failed)
        page.on("response", lambda resp: resp.status >= 400 and self.found.append(f"HTTP {resp.status}: {resp.url}"))

    def _failed(self, request: Any) -> None:
        if request.failure == "net::ERR_ABORTED":
            self.aborted.append(request.url)
        else:
            self.found.append(f"request failed: {request.url} {request.failure}")


@pytest.fixture
def watched_page(browser: Any) -> Iterator[tuple[Any, PageWatch]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    # Generous: CI's 2 cores may be busy with the rest of the suite's servers.
    context.set_default_timeout(90_000)
    page = context.new_page()
    watch = PageWatch()
    watch.attach(page)
    yield page, watch
    context.close()
    assert not watch.problems, "\n".join(watch.problems)


def login(page: Any, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation():
        page.click("main button[type=submit]")
    assert page.url == f"{base_url}/", f"login as {username} failed: still on {page.url}"


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def committed(django_db_blocker: Any, work: Callable[[], Any]) -> Any:
    """Run `work` on a thread of its own (its own connection, autocommit), so the live server
    sees what it writes: browser tests run inside a transaction that is rolled back."""
    from django.db import connection

    result: list[Any] = []

    def run() -> None:
        try:
            result.append(work())
        finally:
            connection.close()

    with django_db_blocker.unblock():
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(timeout=60)
    return result[0] if result else None
