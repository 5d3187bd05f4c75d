"""PostgreSQL stopped and restarted in the middle of ingestion loses nothing.

A private PostgreSQL cluster (the embedded pgserver binaries) and a real gunicorn receiver
process; the real OTLP exporter keeps sending while the database goes away and comes back.
The receiver answers 503 + Retry-After meanwhile, the exporter retries, and every span
ends up stored exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from observatory import embedded
from tests.otlp_helpers import LLM_ATTRIBUTES, make_traces, protobuf_body
from tests.support.servers import gunicorn

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def private_postgres() -> Iterator[tuple[Path, str]]:
    import pgserver

    datadir = Path(tempfile.mkdtemp(prefix="obs-pg-", dir="/tmp"))
    server = pgserver.get_server(datadir, cleanup_mode="delete")
    try:
        yield datadir, str(server.get_uri())
    finally:
        if not (datadir / "postmaster.pid").exists():
            embedded.start_stopped_postgres(datadir)  # so pgserver's cleanup can stop and delete it
        server.cleanup()


@pytest.fixture
def receiver(private_postgres: tuple[Path, str]) -> Iterator[tuple[str, str, Path, str]]:
    datadir, url = private_postgres
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    key = subprocess.run(
        [sys.executable, "manage.py", "create_ingest_key", "restart-test"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    log_path = datadir.parent / f"{datadir.name}-gunicorn.log"
    with gunicorn(url, log_path, DB_CONN_MAX_AGE="60", INGEST_RETRY_AFTER_SECONDS="1") as base_url:
        yield base_url, key, datadir, url
    log_path.unlink(missing_ok=True)


def test_postgres_restart_mid_ingestion_loses_nothing(receiver: tuple[str, str, Path, str]) -> None:
    base_url, key, datadir, url = receiver
    exporter = OTLPSpanExporter(
        endpoint=f"{base_url}/v1/traces", headers={"Authorization": f"Bearer {key}"}, timeout=60
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "restart-test"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=40, schedule_delay_millis=100))
    tracer = provider.get_tracer("restart-test")
    traces = 400
    statuses: list[int] = []

    def produce() -> None:
        for index in range(traces):
            with (
                tracer.start_as_current_span("request", kind=SpanKind.SERVER, attributes={"tenant.id": "acme"}),
                tracer.start_as_current_span("chat", kind=SpanKind.CLIENT, attributes=LLM_ATTRIBUTES),
            ):
                pass
            if index % 20 == 0:
                time.sleep(0.1)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.6)
    embedded.stop_postgres(datadir)
    # While the database is down the receiver must say "try again", not 500.
    request = urllib.request.Request(
        f"{base_url}/v1/traces", data=protobuf_body(make_traces(1)), method="POST",
        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"},
    )  # fmt: skip
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as exc:
        statuses.append(exc.code)
        assert exc.headers["Retry-After"] == "1"
    time.sleep(2.5)
    embedded.start_stopped_postgres(datadir)
    producer.join()
    assert provider.force_flush(90_000)
    provider.shutdown()

    assert statuses == [503]
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM telemetry_span").fetchone()
    assert stored == (2 * traces, 2 * traces)
