"""bench/soak.py's counting and checks, against a live server on the real PostgreSQL: a soak
that cannot see a lost span, a doubled row, a rollup left behind or a 5xx would pass on
anything. The whole soak (gunicorn, Celery, minutes of traffic) is run by hand:
`python3 run.py bench soak`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from apps.accounts.models import IngestKey, Project
from apps.rollups.runner import rollup_pending
from bench import soak
from bench._soak_traffic import BadTraffic, GoodTraffic, Keys, Request
from tests.support.receiver import JSON

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def soak_setup(live_server: Any, price_catalog: None) -> tuple[dict[str, int], str, int]:
    good, hostile = Project.objects.create(name="soak"), Project.objects.create(name="soak-hostile")
    _, key = IngestKey.issue(good, "soak")
    get_user_model().objects.create_user(soak.USERNAME, password=soak.PASSWORD, is_staff=True)
    port = int(live_server.url.rsplit(":", 1)[1])
    return {"good": good.pk, "hostile": hostile.pk}, key, port


def _send_good(port: int, key: str, tally: soak.Tally, batches: int = 3) -> None:
    traffic = GoodTraffic(seed=5)
    for _ in range(batches):
        request = traffic.batch(8, key)
        status, headers, body = soak._post(port, request)
        assert status == 200, body
        soak._record(request, status, headers, body, tally)


def test_a_clean_run_passes_only_once_the_rollups_have_caught_up(
    live_server: Any, soak_setup: tuple[dict[str, int], str, int]
) -> None:
    projects, key, port = soak_setup
    tally = soak.Tally()
    _send_good(port, key, tally)
    assert tally.accepted and tally.accepted_calls >= 3 * 8

    lost, problems = soak.check(tally, projects, live_server.url)
    assert lost == 0
    assert any("rolled-up calls differ from raw spans" in problem for problem in problems), problems

    assert rollup_pending() >= 1
    assert soak.check(tally, projects, live_server.url) == (0, [])


def test_a_missing_span_and_a_doubled_row_count_as_lost(
    live_server: Any, soak_setup: tuple[dict[str, int], str, int]
) -> None:
    projects, key, port = soak_setup
    tally = soak.Tally()
    _send_good(port, key, tally, batches=1)
    rollup_pending()
    tally.accepted.add(("0" * 31 + "1", 12345))  # acknowledged, never stored
    assert soak.check(tally, projects, live_server.url)[0] == 1

    # The same (trace id, span id) a microsecond later: the primary key (which includes the
    # start time) lets it in, the soak must not.
    with connection.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE doubled AS SELECT * FROM telemetry_span WHERE parent_span_id IS NULL LIMIT 1;"
            "UPDATE doubled SET start_time = start_time + interval '1 microsecond';"
            "INSERT INTO telemetry_span SELECT * FROM doubled"
        )
    assert soak.check(tally, projects, live_server.url)[0] == 2


def test_answers_are_counted_by_kind(
    live_server: Any, soak_setup: tuple[dict[str, int], str, int], settings: Any
) -> None:
    _, key, port = soak_setup
    tally = soak.Tally()
    good = GoodTraffic(seed=1).batch(2, key)
    soak._record(good, 503, {}, b"database unavailable", tally)
    assert tally.server_errors and not tally.accepted
    soak._record(good, 400, {"content-type": JSON}, b'{"message": "no"}', tally)
    assert len(tally.good_rejected) == 1

    # A hostile request answered as the catalogue says counts what it stores; otherwise it is
    # reported by name.
    caps = settings.INGEST_MAX_BODY_BYTES, settings.INGEST_MAX_DECOMPRESSED_BYTES
    bad = BadTraffic(1, Keys(good=key, hostile=key, revoked="obs_revoked"), *caps)
    capped = bad._capped("tenant_of_4_byte_characters", tenant="\U0001d11e" * 1024)
    status, headers, body = soak._post(port, capped)
    soak._record(capped, status, headers, body, tally)
    assert status == 200 and tally.hostile_expected_stored == 4
    wrong = Request("no_key", b"", key=None, status=401)
    soak._record(wrong, 200, {"content-type": JSON}, b"{}", tally)
    assert tally.hostile_unexpected == {"no_key": 1}
    assert soak._problems(tally, 0)

    # Refused from the Content-Length alone, before the body is read: the answer still arrives.
    over = bad.cases[[name for name, _ in bad.cases].index("body_over_the_cap")][1]()
    status, _, body = soak._post(port, over)
    assert status == 413, body


def test_5xx_are_read_from_gunicorns_access_log(tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    log.write_text(
        '127.0.0.1 - - [02/Dec/2026:10:00:00 +0000] "POST /v1/traces HTTP/1.1" 200 2 "-" "python"\n'
        '127.0.0.1 - - [02/Dec/2026:10:00:01 +0000] "GET /traces/?x=1 HTTP/1.1" 500 145 "-" "python"\n'
        '127.0.0.1 - - [02/Dec/2026:10:00:02 +0000] "POST /v1/traces HTTP/1.1" 503 12 "-" "python"\n'
        "[2026-12-02 10:00:03 +0000] [12] [INFO] Booting worker with pid: 12 (500 x)\n"
    )
    assert soak._access_log_5xx(log) == 2
