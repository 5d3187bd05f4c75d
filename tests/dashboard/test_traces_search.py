"""The traces explorer's filtered search: bounded batches of candidates, probes that find a
trace's spans across a day's partition boundary, and the settings its statements run under
(real PostgreSQL, spans written with SQL as the receiver stores them)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.accounts.models import Project
from apps.dashboard import traces
from apps.telemetry.partitions import ensure_partitions_for

pytestmark = pytest.mark.django_db

_INSERT = """
INSERT INTO telemetry_span (project_id, trace_id, span_id, parent_span_id, start_time, end_time, duration_ms, name,
                            kind, status_code, service_name, is_llm, provider, request_model, response_model, tenant)
VALUES (%(project)s, %(trace)s, %(span)s, %(parent)s, %(start)s, %(start)s + %(duration)s * interval '1 ms',
        %(duration)s, %(name)s, %(kind)s, 1, 'api', %(is_llm)s, %(provider)s, %(model)s, %(model)s, %(tenant)s)
"""


def _trace(project: Project, start: datetime, *, model: str | None = None, duration: float = 5.0,
           root_tenant: str = "acme", call_at: datetime | None = None, call_tenant: str = "") -> str:  # fmt: skip
    """A root span, and with `model` an LLM call under it (at `call_at`, default 1 ms in)."""
    trace_id = uuid.uuid4()
    root = dict(span=1, parent=None, start=start, duration=duration, name="POST /chat", kind=2, is_llm=False,
                provider=None, model=None, tenant=root_tenant)  # fmt: skip
    spans: list[dict[str, Any]] = [root]
    if model is not None:
        call_start = call_at or start + timedelta(milliseconds=1)
        spans.append(dict(span=2, parent=1, start=call_start, duration=1.0, name="chat", kind=3, is_llm=True,
                          provider="openai", model=model, tenant=call_tenant))  # fmt: skip
    ensure_partitions_for({start.date(), (call_at or start).date()})
    with connection.cursor() as cur:
        for span in spans:
            cur.execute(_INSERT, {"project": project.pk, "trace": trace_id, **span})
    return trace_id.hex


def _page(client: Client, url: str) -> tuple[list[str], str, str | None, str | None]:
    """A page's trace links, its html, and its next and previous links."""
    html = client.get(url).content.decode()
    assert "took too long" not in html

    def link(rel: str) -> str | None:
        found = re.search(rf'href="\?([^"]+)" rel="{rel}"', html)
        return "/traces/?" + found.group(1).replace("&amp;", "&") if found else None

    return re.findall(r'href="/traces/([0-9a-f]{32})/"', html), html, link("next"), link("prev")


def test_a_rare_match_is_found_in_bounded_pages_that_say_how_far_they_searched(
    client: Client, project: Project, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """65 roots, newest first; the model matches the 26th, 27th and 51st. A page reads at most
    2 batches of 10 candidates, so the first page finds none and says so, and the next links
    walk on from where each page stopped until the range runs out."""
    monkeypatch.setattr(traces, "CANDIDATE_BATCH", 10)
    monkeypatch.setattr(traces, "CANDIDATE_BATCHES", 2)
    newest = timezone.now() - timedelta(minutes=5)
    matching = {25, 26, 50}
    ids = [
        _trace(project, newest - timedelta(seconds=i), model="rare-model" if i in matching else None,
               duration=3000.0 if i in matching else 5.0)
        for i in range(65)
    ]  # fmt: skip
    client.force_login(owner)

    url: str | None = "/traces/?range=24h&model=rare-model"
    pages = []
    htmls = []
    while url is not None:
        links, html, url, _ = _page(client, url)
        pages.append(links)
        htmls.append(html)
        assert len(pages) < 10
    assert pages == [[], [ids[25], ids[26]], [ids[50]], []]
    assert "more may exist" in htmls[0] and "No traces match among those searched" in htmls[0]
    assert all("more may exist" in html for html in htmls[:3]) and "more may exist" not in htmls[3]

    # Back from the third page: 20 candidates without a match, then the second page's rows.
    _, _, second_url, prev = _page(client, "/traces/?range=24h&model=rare-model")
    assert prev is None  # the first page has nothing before it
    _, _, third_url, _ = _page(client, second_url or "")
    links, html, _, back = _page(client, third_url or "")
    assert links == [ids[50]] and back is not None
    links, html, _, back = _page(client, back)
    assert links == [] and "more may exist" in html and back is not None
    links, _, _, _ = _page(client, back)
    assert links == [ids[25], ids[26]]

    # A filter on the root's own columns narrows the candidates instead: one page, no notice.
    links, html, after, _ = _page(client, "/traces/?range=24h&model=rare-model&min_ms=2000")
    assert links == [ids[25], ids[26], ids[50]] and after is None and "more may exist" not in html


def test_the_probes_find_a_call_and_a_tenant_across_midnight(
    client: Client, project: Project, owner: Any, outsider: Any
) -> None:
    """A root just before midnight UTC without a tenant; its call just after, in the next
    day's partition, carries the tenant and the model. The list's probes (pruned to the
    partitions around each root) and the page's calls both find it."""
    midnight = datetime.combine(timezone.now().astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)
    trace_hex = _trace(project, midnight - timedelta(milliseconds=100), model="edge-model", root_tenant="",
                       call_at=midnight + timedelta(milliseconds=400), call_tenant="globex")  # fmt: skip
    _trace(project, midnight - timedelta(minutes=1), model="other-model", root_tenant="")
    client.force_login(owner)
    links, html, _, _ = _page(client, "/traces/?range=7d&model=edge-model&tenant=globex")
    assert links == [trace_hex]
    row = html.split(trace_hex)[1].split("</tr>")[0]
    assert "globex" in row and "edge-model" in row
    client.force_login(outsider)  # limited to globex: its root inherits globex
    links, _, _, _ = _page(client, "/traces/?range=7d")
    assert links == [trace_hex]


def test_the_search_statements_run_without_jit(client: Client, project: Project, owner: Any) -> None:
    """The probes make the planner's estimate large enough for JIT, whose compilation costs
    far more than the statement (0.7 s of a 0.73 s page at 10M spans): every statement of a
    search runs with it off, whatever the server's setting."""
    _trace(project, timezone.now() - timedelta(minutes=1), model="gpt-4o-mini")
    seen: list[str] = []

    def check_jit(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        if "telemetry_span" in sql:
            seen.append(context["connection"].connection.execute("SHOW jit").fetchone()[0])
        return execute(sql, params, many, context)

    client.force_login(owner)
    with connection.cursor() as cur:
        cur.execute("SET jit = on")
    with connection.execute_wrapper(check_jit):
        assert client.get("/traces/?range=24h&model=gpt-4o-mini&tenant=acme").status_code == 200
    assert len(seen) >= 2 and set(seen) == {"off"}
