"""The current hour's raw piece is rolled up off the request once a page generation is old
(apps/dashboard/page_reads.py): pages keep the previous boundary's figures meanwhile, then
show the new ones, and never a half-filled piece."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client

from apps.dashboard import page_reads
from tests.dashboard.test_overview import _ingest

# 25 minutes into an hour, 1 s after a 10-second boundary: spans of a minute ago are in the
# current hour, read raw.
NOW = datetime(2026, 3, 4, 10, 25, 1, tzinfo=UTC)


def _requests_card(client: Client) -> int:
    html = client.get("/?range=1h").content.decode()
    marker = '<div class="label">Requests</div><div class="value">'
    assert marker in html
    return int(html.split(marker, 1)[1].split("<", 1)[0].replace(",", ""))


@pytest.mark.django_db(transaction=True)
def test_pages_serve_the_previous_boundary_while_the_next_is_rolled_up(
    client: Client, ingest_key: str, owner: Any, settings: Any
) -> None:
    settings.DASHBOARD_BACKGROUND_REFRESH = True
    client.force_login(owner)
    with time_machine.travel(NOW, tick=False) as traveller:
        _ingest(client, ingest_key, count=2)
        assert _requests_card(client) == 2  # the first page fills its generation itself

        traveller.shift(timedelta(seconds=10))
        _ingest(client, ingest_key, count=3)
        assert _requests_card(client) == 2  # as of the previous boundary; a refresh started
        page_reads.wait_for_refresh()
        assert _requests_card(client) == 5  # the refreshed generation

        # Past the grace period nothing stale is served: the request rolls up itself.
        traveller.shift(page_reads.STALE_GRACE + timedelta(seconds=10))
        _ingest(client, ingest_key, count=1)
        assert _requests_card(client) == 6
    page_reads.wait_for_refresh()


@pytest.mark.django_db(transaction=True)
def test_without_background_refresh_every_boundary_is_rolled_up_by_the_request(
    client: Client, ingest_key: str, owner: Any
) -> None:
    client.force_login(owner)
    with time_machine.travel(NOW, tick=False) as traveller:
        _ingest(client, ingest_key, count=2)
        assert _requests_card(client) == 2
        traveller.shift(timedelta(seconds=10))
        _ingest(client, ingest_key, count=3)
        assert _requests_card(client) == 5


@pytest.mark.django_db(transaction=True)
def test_a_starting_worker_prefills_the_current_boundary_for_its_first_pages(
    client: Client, ingest_key: str, owner: Any, settings: Any
) -> None:
    settings.DASHBOARD_BACKGROUND_REFRESH = True
    client.force_login(owner)
    with time_machine.travel(NOW, tick=False) as traveller:
        _ingest(client, ingest_key, count=2)
        filling = page_reads.prefill()  # gunicorn.conf.py: post_worker_init
        assert filling is not None
        filling.join(30)
        assert page_reads.prefill() is None  # this boundary's generation is there already
        # Spans that came after the fill are not in this boundary's figures: the first page
        # read the prefilled piece, not the open hour itself.
        _ingest(client, ingest_key, count=3)
        assert _requests_card(client) == 2

        traveller.shift(timedelta(seconds=10))
        assert _requests_card(client) == 2  # as of the prefilled boundary; a refresh started
        page_reads.wait_for_refresh()
        assert _requests_card(client) == 5
    page_reads.wait_for_refresh()


@pytest.mark.django_db(transaction=True)
def test_without_background_reads_a_worker_prefills_nothing(settings: Any) -> None:
    settings.DASHBOARD_BACKGROUND_REFRESH = False
    assert page_reads.prefill() is None


@pytest.mark.django_db(transaction=True)
def test_a_starting_worker_takes_requests_only_once_its_open_hour_is_read(
    client: Client, ingest_key: str, owner: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from observatory.warmup import warm_web_worker

    settings.DASHBOARD_BACKGROUND_REFRESH = True
    fill = page_reads._fill

    def slow_fill(generation: Any) -> None:  # a database slower than the Python warm-up
        time.sleep(1.5)
        fill(generation)

    monkeypatch.setattr(page_reads, "_fill", slow_fill)
    client.force_login(owner)
    with time_machine.travel(NOW, tick=False):
        _ingest(client, ingest_key, count=2)
        page_reads.forget()
        warm_web_worker()  # gunicorn.conf.py: post_worker_init, before the worker accepts
        generation = page_reads._generation
        assert generation is not None
        # The open hour's piece is there, every grouping set of it: no page reads it itself.
        assert [len(by_grouping) for by_grouping in generation.reads.pieces.values()] == [
            len(generation.reads.grouping_sets)
        ]
        assert not any(thread.name == "page-reads-refresh" for thread in threading.enumerate())
        assert _requests_card(client) == 2


@pytest.mark.django_db(transaction=True)
def test_every_figure_of_a_page_is_read_in_one_snapshot(client: Client, ingest_key: str, owner: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(owner)
    with time_machine.travel(NOW, tick=False):
        _ingest(client, ingest_key, count=2)
        for url in ("/?range=7d&compare=1", "/features/?range=30d", "/models/?range=24h"):
            with CaptureQueriesContext(connection) as captured:
                assert client.get(url).status_code == 200
            opened = [query["sql"] for query in captured.captured_queries if "SET TRANSACTION" in query["sql"]]
            assert opened == ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"], url


def _api_requests(client: Client, **params: str) -> int:
    response = client.get("/api/v1/metrics", {"metrics": "requests", "range": "1h", **params})
    assert response.status_code == 200, response.content
    return int(response.json()["rows"][0]["requests"])


@pytest.mark.django_db(transaction=True)
def test_the_api_shares_the_pages_pieces_of_its_own_boundary_only(
    client: Client, ingest_key: str, owner: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON API ends its window at the same 10-second boundary as the pages and reads the
    open hour from the same shared piece: once per boundary per process, not once a request.
    It never answers as of an older boundary: while the pages are served the previous
    boundary's figures (the next being read in the background), it reads for itself."""
    from apps.metrics import reads

    raw_reads: list[str] = []
    read_raw = reads.raw_rows

    def counted(*args: Any, **kwargs: Any) -> Any:
        raw_reads.append(threading.current_thread().name)
        return read_raw(*args, **kwargs)

    monkeypatch.setattr(reads, "raw_rows", counted)
    # The background refresh waits until told, so the API is asked while it runs.
    go_on = threading.Event()
    refresh = page_reads._refresh

    def held_refresh(boundary: datetime) -> None:
        go_on.wait(30)
        refresh(boundary)

    monkeypatch.setattr(page_reads, "_refresh", held_refresh)
    settings.DASHBOARD_BACKGROUND_REFRESH = True
    client.force_login(owner)
    with time_machine.travel(NOW, tick=False) as traveller:
        _ingest(client, ingest_key, count=2)
        assert _requests_card(client) == 2  # the page fills this boundary's piece
        assert raw_reads and set(raw_reads) == {"MainThread"}
        raw_reads.clear()
        assert _api_requests(client) == 2
        assert _api_requests(client, group_by="tenant") == 2
        assert _api_requests(client, tenant="acme") == 2
        assert raw_reads == []  # the piece the page read

        traveller.shift(timedelta(seconds=10))
        _ingest(client, ingest_key, count=3)
        assert _requests_card(client) == 2  # the pages: the previous boundary, a refresh started
        assert _api_requests(client) == 5  # the API: its own boundary, read by itself
        assert raw_reads and set(raw_reads) == {"MainThread"}
        go_on.set()
        page_reads.wait_for_refresh()
        raw_reads.clear()
        assert _api_requests(client) == 5
        assert raw_reads == []
    go_on.set()
    page_reads.wait_for_refresh()
