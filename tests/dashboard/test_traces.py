from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from django.test import Client

from apps.telemetry.models import Span
from tests.otlp_helpers import make_traces, protobuf_body

pytestmark = pytest.mark.django_db


def _links(html: str) -> int:
    return len(re.findall(r'href="/traces/[0-9a-f]{32}/"', html))


def _ingest(client: Client, key: str, **kwargs: Any) -> None:
    body = protobuf_body(make_traces(**kwargs))
    response = client.post(
        "/v1/traces", data=body, content_type="application/x-protobuf", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200


def test_traces_list_filters_and_sorts(client: Client, ingest_key: str, owner: Any) -> None:
    _ingest(client, ingest_key, count=3, tenant="acme", feature="chat")
    _ingest(client, ingest_key, count=2, tenant="globex", feature="search")
    client.force_login(owner)
    html = client.get("/traces/?range=24h").content.decode()
    assert _links(html) == 5
    html = client.get("/traces/?range=24h&tenant=globex&sort=duration").content.decode()
    assert _links(html) == 2 and "acme" not in html.split("<tbody>")[1]
    html = client.get("/traces/?range=24h&model=gpt-4o-mini&min_ms=100").content.decode()
    assert _links(html) == 5
    html = client.get("/traces/?range=24h&min_ms=5000").content.decode()
    assert _links(html) == 0 and "No traces match" in html
    response = client.get("/traces/?range=24h&format=csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 5 and {row["tenant"] for row in rows} == {"acme", "globex"}
    assert client.get("/traces/?status=maybe").status_code == 400


def test_trace_page_shows_the_waterfall_and_hides_other_tenants(
    client: Client, ingest_key: str, owner: Any, outsider: Any
) -> None:
    _ingest(client, ingest_key, count=1, tenant="acme")
    trace_hex = Span.objects.first().trace_id.hex
    client.force_login(owner)
    response = client.get(f"/traces/{trace_hex}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Waterfall" in html and "chat gpt-4o-mini" in html and "1200 / 1000 / 300" in html
    client.force_login(outsider)  # limited to globex
    assert client.get(f"/traces/{trace_hex}/").status_code == 404
    assert _links(client.get("/traces/?range=24h").content.decode()) == 0
    assert client.get("/traces/not-a-trace/").status_code == 404
