"""Values too big to be keys, gzip bodies of several members, revoked keys, log floods and
the per-key rate limit, each driven through a live server (pytest-django's live_server in
this process, or gunicorn with two workers where processes must agree)."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from apps.accounts.admin import INGEST_REVOKE_HELP
from apps.accounts.models import IngestKey, Project
from apps.rollups.models import ALL_DIMS, RollupHour
from apps.rollups.runner import rollup_pending, rollup_range
from apps.telemetry.models import Span
from collectors.capping import TEXT_FIELD_MAX_BYTES, TRUNCATED_ATTRIBUTE
from tests.otlp_helpers import LLM_ATTRIBUTES, make_traces, protobuf_body
from tests.support.receiver import assert_stored_once, post, span_keys
from tests.support.servers import database_url, gunicorn

pytestmark = pytest.mark.django_db(transaction=True)

CLEF = "\U0001d11e"  # four bytes of UTF-8


@pytest.fixture
def key(transactional_db: None) -> str:
    _, plaintext = IngestKey.issue(Project.objects.create(name="limits"), "k")
    return plaintext


def _utf8_len(text: str | None) -> int:
    return len((text or "").encode("utf-8"))


def _ingest_lines(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name in ("observatory.ingest", "apps.telemetry.ingest") and needle in r.getMessage()
    ]


# --------------------------------------------------------------------------- byte caps


def test_oversized_keys_are_capped_in_bytes_and_the_rollup_succeeds(
    live_server: Any, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    long_model = "m" * 2000
    llm = {**LLM_ATTRIBUTES, "gen_ai.request.model": long_model, "gen_ai.provider.name": "p\x00" * 900}
    llm |= {"error.type": "e" * 5000, "user.id": "u" * 5000, "gen_ai.response.id": "r" * 5000}
    batches = [
        # 1,024 four-byte characters: inside a 1,024-character cap, 4 KB as a key.
        make_traces(2, tenant=CLEF * 1024, feature="f"),
        make_traces(2, service="s" * 3000),
        make_traces(1, tenant="t" * 1024, feature="f" * 1024, llm_attributes=llm),
        make_traces(1, tenant="nul\x00tenant", feature="nul\x00feature"),
    ]
    spans = [span for batch in batches for span in batch]
    answer = post(live_server.url, protobuf_body(spans), key)
    assert answer.status == 200, answer.body
    assert answer.partial() == (0, "")
    assert_stored_once(span_keys(spans))

    stored = list(Span.objects.all())
    for span in stored:
        for field_name, limit in TEXT_FIELD_MAX_BYTES.items():
            assert _utf8_len(getattr(span, field_name)) <= limit, field_name
        assert "\x00" not in (span.tenant or "") + (span.feature or "") + (span.provider or "")
    clef_roots = [s for s in stored if s.tenant and s.tenant.startswith(CLEF)]
    assert clef_roots and all(s.tenant == CLEF * 64 for s in clef_roots)  # 256 bytes, whole characters
    assert all("tenant" in s.attributes[TRUNCATED_ATTRIBUTE] for s in clef_roots)
    long_service = Span.objects.filter(service_name__startswith="sss")
    assert {s.service_name for s in long_service} == {"s" * 256}
    assert all("service_name" in s.attributes[TRUNCATED_ATTRIBUTE] for s in long_service)
    capped_llm = Span.objects.get(request_model__startswith="mmm")
    assert capped_llm.request_model == "m" * 256 and capped_llm.provider == "p" * 256
    assert (capped_llm.error_type, capped_llm.user_id) == ("e" * 256, "u" * 256)
    assert capped_llm.response_id == "r" * 256
    # The LLM span carries no tenant of its own (it inherits the root's in the rollup).
    assert set(capped_llm.attributes[TRUNCATED_ATTRIBUTE]) == {
        "request_model", "provider", "error_type", "user_id", "response_id"
    }  # fmt: skip
    assert Span.objects.filter(tenant="nultenant", feature="nulfeature").exists()
    # One line for the batch, naming the fields, not one per span.
    lines = _ingest_lines(caplog, "byte limits")
    assert len(lines) == 1 and "service_name" in lines[0] and "tenant" in lines[0]

    # The hour rolls up: before the caps, the tenant and feature together made an index row
    # of 4152 bytes and the statement failed for every hour behind it.
    assert rollup_pending() >= 1
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    assert rollup_range(hour - timedelta(hours=1), hour + timedelta(hours=1)) > 0
    finest = RollupHour.objects.filter(grouping=ALL_DIMS)
    assert finest.filter(tenant=CLEF * 64).exists()
    assert finest.filter(tenant="t" * 256, feature="f" * 256, model="m" * 256).exists()
    assert sum(row.requests for row in finest) == 6


def test_feature_fallback_resource_attribute_is_capped_like_the_feature(
    live_server: Any, key: str, settings: Any
) -> None:
    settings.FEATURE_FALLBACK_ATTRIBUTE = "deployment.name"
    from apps.telemetry.ingest import mapping_config

    mapping_config.cache_clear()
    try:
        spans = make_traces(1, feature="")
        request_pb = _request(spans)
        resource = request_pb.resource_spans[0].resource
        resource.attributes.add(key="deployment.name").value.string_value = "d" * 900
        answer = post(live_server.url, request_pb.SerializeToString(), key)
        assert answer.status == 200, answer.body
        for span in Span.objects.all():
            assert span.resource["deployment.name"] == "d" * 256
        assert rollup_pending() >= 1
    finally:
        mapping_config.cache_clear()


def _request(spans: list[Any]) -> Any:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return encode_spans(spans)


def test_huge_names_in_a_small_gzip_body_are_stored_capped(live_server: Any, key: str) -> None:
    """Three 10 MB values in a ~30 KB upload: each stored at its byte limit."""
    spans = make_traces(1)
    request_pb = _request(spans)
    resource = request_pb.resource_spans[0].resource
    for attribute in resource.attributes:
        if attribute.key == "service.name":
            attribute.value.string_value = "s" * 10_000_000
    span_pb = request_pb.resource_spans[0].scope_spans[0].spans[0]
    span_pb.name = "n" * 10_000_000
    span_pb.status.code = 2
    span_pb.status.message = "x" * 10_000_000
    body = gzip.compress(request_pb.SerializeToString())
    assert len(body) < 100_000
    answer = post(live_server.url, body, key, headers={"Content-Encoding": "gzip"})
    assert answer.status == 200, answer.body
    assert_stored_once(span_keys(spans))
    big = Span.objects.get(name__startswith="nnn")
    assert big.name == "n" * TEXT_FIELD_MAX_BYTES["name"]
    assert big.status_message == "x" * TEXT_FIELD_MAX_BYTES["status_message"]
    assert big.service_name == "s" * TEXT_FIELD_MAX_BYTES["service_name"]
    assert set(big.attributes[TRUNCATED_ATTRIBUTE]) >= {"name", "status_message", "service_name"}
    # The stored resource keeps at most its attribute cap of the value, not 10 MB.
    with connection.cursor() as cur:
        cur.execute("SELECT max(pg_column_size(s.*)) FROM telemetry_span s")
        assert cur.fetchone()[0] < 64 * 1024


# --------------------------------------------------------------------------- gzip members


def test_every_member_of_a_gzip_body_is_decoded(live_server: Any, key: str) -> None:
    # Two requests' worth of spans in one body: the second member used to be dropped.
    first, second = make_traces(2), make_traces(3)
    body = gzip.compress(protobuf_body(first)) + gzip.compress(protobuf_body(second))
    # One protobuf message split over two members is the honest shape of a multi-member body.
    whole = protobuf_body(first + second)
    split = gzip.compress(whole[: len(whole) // 2]) + gzip.compress(whole[len(whole) // 2 :])
    answer = post(live_server.url, split, key, headers={"Content-Encoding": "gzip"})
    assert answer.status == 200, answer.body
    assert_stored_once(span_keys(first + second))
    # Concatenated protobuf messages merge (repeated fields append): same spans, no doubles.
    answer = post(live_server.url, body, key, headers={"Content-Encoding": "gzip"})
    assert answer.status == 200, answer.body
    assert_stored_once(span_keys(first + second))
    assert Span.objects.count() == 10


def test_a_gzip_bomb_split_over_members_stops_at_the_cap(
    live_server: Any, key: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings.INGEST_MAX_DECOMPRESSED_BYTES = 1024 * 1024
    accepted = make_traces(2)
    assert post(live_server.url, protobuf_body(accepted), key).status == 200
    # Each member alone is under the cap; together they are far over it.
    member = gzip.compress(b"\0" * (700 * 1024), compresslevel=9)
    bomb = member * 50
    answer = post(live_server.url, bomb, key, headers={"Content-Encoding": "gzip"})
    assert answer.status == 413
    assert b"decompressed body exceeds the 1048576-byte limit" in answer.body
    # A big bomb split in two: still stopped after cap+1 bytes of output.
    big = gzip.compress(b"\0" * (100 * 1024 * 1024), compresslevel=9)
    answer = post(live_server.url, big + big, key, headers={"Content-Encoding": "gzip"})
    assert answer.status == 413
    # A second member cut short, or followed by bytes that are no gzip, is refused whole.
    good = gzip.compress(protobuf_body(make_traces(1)))
    assert post(live_server.url, good + good[:-6], key, headers={"Content-Encoding": "gzip"}).status == 400
    assert post(live_server.url, good + b"trailing junk", key, headers={"Content-Encoding": "gzip"}).status == 400
    assert_stored_once(span_keys(accepted))
    assert Span.objects.count() == 4
    assert _ingest_lines(caplog, "ingest rejected 413")


# --------------------------------------------------------------------------- revocation


@pytest.fixture
def two_worker_receiver(tmp_path: Path, transactional_db: None) -> Iterator[tuple[str, Path]]:
    log_path = tmp_path / "gunicorn.log"
    with gunicorn(database_url(connection.settings_dict), log_path, workers=2, threads=2) as base_url:
        yield base_url, log_path


def test_a_revoked_key_is_refused_by_every_process_at_once(
    two_worker_receiver: tuple[str, Path], key: str, client: Client, django_user_model: Any
) -> None:
    base_url, log_path = two_worker_receiver
    accepted = make_traces(2)
    for _ in range(4):  # a fresh connection each: both workers serve the key and know it
        assert post(base_url, protobuf_body(accepted), key).status == 200
    # Revoked with admin's action, which says when it takes effect; so does the change form.
    client.force_login(django_user_model.objects.create_superuser("admin", "admin@example.com", "pw"))
    ingest_key = IngestKey.objects.get()
    assert INGEST_REVOKE_HELP in client.get(f"/admin/accounts/ingestkey/{ingest_key.pk}/change/").text
    answer = client.post(
        "/admin/accounts/ingestkey/", {"action": "revoke", "_selected_action": [ingest_key.pk]}, follow=True
    )
    assert "Revoked 1 ingest key(s)" in answer.text
    assert IngestKey.objects.get().revoked_at is not None
    late = make_traces(2)
    for _ in range(6):
        answer = post(base_url, protobuf_body(late), key)
        assert answer.status == 401, answer.body
        assert b"not recognised or revoked" in answer.body
    assert_stored_once(span_keys(accepted))
    assert Span.objects.count() == 4
    log_text = log_path.read_text()
    assert "ingest rejected 401" in log_text


# --------------------------------------------------------------------------- log floods


def test_repeated_rejections_are_logged_once_then_counted(
    live_server: Any, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    from apps.telemetry import views

    caplog.set_level(logging.INFO)
    accepted = make_traces(1)
    assert post(live_server.url, protobuf_body(accepted), key).status == 200
    for _ in range(40):
        assert post(live_server.url, b"", None).status == 401
    for _ in range(10):
        assert post(live_server.url, b"{", key, content_type="application/json").status == 400
    assert len(_ingest_lines(caplog, "ingest rejected 401")) == 1
    assert len(_ingest_lines(caplog, "ingest rejected 400")) == 1
    # Django's request logger no longer adds its own WARNING per 4xx.
    assert not [r for r in caplog.records if r.name == "django.request"]
    views._throttled.flush()  # what the next line after the 60 s window would do
    summaries = _ingest_lines(caplog, "more like this")
    assert any(line.startswith("39 more like this") and "401" in line for line in summaries), summaries
    assert any(line.startswith("9 more like this") and "400" in line for line in summaries), summaries
    assert_stored_once(span_keys(accepted))


# --------------------------------------------------------------------------- rate limit


@pytest.fixture
def rate_limited_receiver(tmp_path: Path, transactional_db: None) -> Iterator[tuple[str, Path]]:
    # 40 spans per 40 s per key, counted in the run's Redis and shared by both workers.
    log_path = tmp_path / "gunicorn.log"
    env = {"INGEST_RATE_LIMIT_SPANS_PER_S": "1", "INGEST_RATE_LIMIT_BURST_SPANS": "40"}
    with gunicorn(database_url(connection.settings_dict), log_path, workers=2, threads=2, **env) as base_url:
        yield base_url, log_path


def test_a_key_over_its_span_rate_gets_429_with_retry_after(rate_limited_receiver: tuple[str, Path], key: str) -> None:
    base_url, log_path = rate_limited_receiver
    accepted = []
    for _ in range(4):  # 4 x 10 spans: the whole burst, spread over both workers
        batch = make_traces(5)
        answer = post(base_url, protobuf_body(batch), key)
        assert answer.status == 200, answer.body
        accepted += batch
    refused = make_traces(5)
    for _ in range(5):
        answer = post(base_url, protobuf_body(refused), key)
        assert answer.status == 429, answer.body
        assert 1 <= int(answer.headers["retry-after"]) <= 40
        assert b"rate limit" in answer.body
    # Another key has its own budget; a batch larger than the burst can never pass: 413.
    _, other = IngestKey.issue(Project.objects.get(), "other")
    other_batch = make_traces(5)
    assert post(base_url, protobuf_body(other_batch), other).status == 200
    too_big = post(base_url, protobuf_body(make_traces(25)), other)
    assert too_big.status == 413 and b"burst" in too_big.body
    assert_stored_once(span_keys(accepted + other_batch))
    assert Span.objects.count() == 50
    log_text = log_path.read_text()
    # Five refusals, at most one line per worker (each process throttles its own lines).
    assert 1 <= log_text.count("ingest rejected 429") <= 2
