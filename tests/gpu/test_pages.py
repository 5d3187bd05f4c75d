"""The GPU tier page and the self-hosted vs API page, on simulated traffic sent through the
real receiver and attributed."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from apps.accounts.models import IngestKey, Project
from apps.gpu.attribution import attribute_range, floor_interval
from collectors.simulator import simulate
from tests.conftest import PASSWORD

GPU_LEVEL_TITLES = (
    "GPU utilisation", "GPU memory used", "GPU power draw", "GPU energy", "GPU cost: attributed and idle",
    "Scheduler state", "Token throughput", "KV-cache usage", "Prefix-cache hit rate", "Preemptions",
    "Finish reasons", "End-to-end request latency", "Time to first token", "Inter-token latency", "Queue time",
    "Prefill time", "Decode time", "Prompt length heatmap", "Generation length heatmap",
)  # fmt: skip


def client_for(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def chart_titles(html: str) -> set[str]:
    return set(re.findall(r'<section class="panel chart"[^>]*>\s*<h2>([^<]+)</h2>', html))


@pytest.mark.django_db(transaction=True)
def test_gpu_tier_and_compare_pages_on_simulated_traffic(
    live_server: Any, price_catalog: None, settings: Any, owner: Any, outsider: Any
) -> None:
    settings.GPU_COST_INTERVAL_SECONDS = 300
    call_command("load_gpu_prices", stdout=io.StringIO())
    project = Project.objects.create(name="demo")
    _, key = IngestKey.issue(project, "sim")
    end = floor_interval(datetime.now(UTC) - timedelta(minutes=10), 300)
    start = end - timedelta(hours=2)
    simulate(live_server.url, key, start=start, end=end, requests=500, seed=3)
    attribute_range(project.id, start, end)

    page = client_for(owner).get("/gpu/?range=24h")
    assert page.status_code == 200
    html = page.content.decode()
    titles = chart_titles(html)
    assert set(GPU_LEVEL_TITLES) <= titles, set(GPU_LEVEL_TITLES) - titles
    assert {"Self-hosted cost by tenant", "Self-hosted cost by feature"} <= titles
    # Every chart drew something, and says its unit, range and sample count.
    assert html.count('class="plotly-graph-div') == len(titles)
    assert "No data in this range" not in html
    assert all(f"{title}" in html for title in titles) and html.count("samples.") >= len(titles)
    assert "Idle" in html and "search-rerank" in html

    # A user limited to globex: no GPU-level panel, only globex's attributed cost.
    limited = client_for(outsider).get("/gpu/?range=24h").content.decode()
    assert not set(GPU_LEVEL_TITLES) & chart_titles(limited)
    assert "Self-hosted cost by tenant" in limited
    assert "globex" in limited and "acme" not in limited and "initech" not in limited

    compare = client_for(owner).get("/gpu/compare/")
    assert compare.status_code == 200
    text = compare.content.decode()
    assert 'data-feature="search-rerank"' in text and "openai / gpt-4o-mini" in text
    assert "per 1M tokens" in text and "fully loaded" in text
    assert "fully loaded" not in client_for(outsider).get("/gpu/compare/").content.decode().split("</ul>")[1]


@pytest.mark.django_db
def test_empty_state_and_bad_input(owner: Any, outsider: Any) -> None:
    client = client_for(owner)
    empty = client.get("/gpu/?range=1h").content.decode()
    assert "No GPU or vLLM metrics" in empty and "gpu_sampler" in empty
    assert "No self-hosted (vLLM) calls" in empty
    assert "No feature used the self-hosted tier" in client.get("/gpu/compare/").content.decode()
    assert client.get("/gpu/?range=2y").status_code == 400
    assert client.get("/gpu/compare/?start=yesterday").status_code == 400
    assert Client().get("/gpu/").status_code == 302  # login first
