"""The GPU tier page in a real browser, on simulated serving-tier traffic (spans, GPU samples
and vLLM series through OTLP into a gunicorn process) that was attributed: no console error,
every chart drawn, screenshots under test-artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.browser.conftest import PASSWORD, login, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def gpu_site(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    from apps.accounts.models import IngestKey, Project, TenantAccess
    from apps.gpu.attribution import attribute_range, floor_interval
    from apps.pricing.services import PriceBook
    from collectors.simulator import simulate
    from tests.support.servers import database_url, gunicorn

    with django_db_blocker.unblock():
        call_command("load_prices", verbosity=0)
        call_command("load_gpu_prices", verbosity=0)
        PriceBook.forget()
        project = Project.objects.create(name="gpu-demo")
        _, key = IngestKey.issue(project, "browser")
        User.objects.create_user("owner", password=PASSWORD, is_staff=True, is_superuser=True)
        outsider = User.objects.create_user("outsider", password=PASSWORD)
        TenantAccess.objects.create(user=outsider, tenants=["globex"])
        end = floor_interval(datetime.now(UTC) - timedelta(minutes=5), 300)
        start = end - timedelta(hours=6)
        log = tmp_path_factory.mktemp("gpu-browser") / "gunicorn.log"
        with gunicorn(database_url(connection.settings_dict), log, threads=8) as url:
            simulate(endpoint=url, key=key, start=start, end=end, requests=900, seed=5)
            attribute_range(project.id, start, end)
            yield {"url": url}
        with connection.cursor() as cur:
            cur.execute("TRUNCATE telemetry_span, gpu_metric_point, gpu_metric_series")
        call_command("flush", interactive=False, verbosity=0)
        call_command("load_prices", verbosity=0)
        call_command("load_gpu_prices", verbosity=0)
        PriceBook.forget()


def test_gpu_tier_page_draws_every_panel(gpu_site: dict[str, Any], watched_page: tuple[Any, Any]) -> None:
    page, _ = watched_page
    login(page, gpu_site["url"], "owner")
    response = page.goto(gpu_site["url"] + "/gpu/?range=24h")
    assert response is not None and response.status == 200
    page.wait_for_load_state("load")
    # Card labels are upper-cased by the stylesheet, and inner_text reads them as shown.
    main = page.inner_text("main").lower()
    for text in ("GPU utilisation", "Scheduler state", "KV-cache usage", "Inter-token latency", "Idle",
                 "Self-hosted cost by feature", "Prompt length heatmap"):  # fmt: skip
        assert text.lower() in main
    figures = page.locator(".plotly-graph-div").all()
    assert len(figures) >= 20
    for figure in figures:
        figure.locator(".main-svg").first.wait_for(state="attached")
    screenshot(page, "gpu-tier")

    page.goto(gpu_site["url"] + "/gpu/compare/")
    page.wait_for_load_state("load")
    assert "per 1M tokens" in page.inner_text("main")
    screenshot(page, "gpu-compare")


def test_tenant_limited_user_sees_only_attribution(gpu_site: dict[str, Any], watched_page: tuple[Any, Any]) -> None:
    page, _ = watched_page
    login(page, gpu_site["url"], "outsider")
    page.goto(gpu_site["url"] + "/gpu/?range=24h")
    main = page.inner_text("main")
    assert "GPU utilisation" not in main and "Self-hosted cost by tenant" in main
    assert "globex" in main and "acme" not in main
    screenshot(page, "gpu-tier-outsider")
