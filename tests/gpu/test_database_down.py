"""PostgreSQL stopped under the metric receivers: OTLP/HTTP answers 503 + Retry-After, OTLP/gRPC
answers UNAVAILABLE with google.rpc.RetryInfo, the real gRPC exporter retries on that, and
every point ends up stored exactly once after the database is back.

A private PostgreSQL cluster, a real gunicorn process and a real `manage.py otlp_grpc`
process (the production entry points).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from observatory import embedded
from tests.gpu.helpers import gauge, now_ns, request_of
from tests.support.servers import free_port, gunicorn
from tests.telemetry.test_database_restart import private_postgres  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def receivers(private_postgres: tuple[Path, str]) -> Iterator[tuple[str, str, str, Path, str, Path]]:  # noqa: F811
    datadir, url = private_postgres
    env = {**os.environ, "DATABASE_URL": url, "INGEST_RETRY_AFTER_SECONDS": "1"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    key = subprocess.run(
        [sys.executable, "manage.py", "create_ingest_key", "down-test"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    grpc_log_path = datadir.parent / f"{datadir.name}-grpc.log"
    grpc_log = grpc_log_path.open("w")
    grpc_process = subprocess.Popen(
        [sys.executable, "manage.py", "otlp_grpc", "--host", "127.0.0.1", "--port", str(port), "--threads", "4"],
        cwd=ROOT, env=env, stdout=grpc_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log_path = datadir.parent / f"{datadir.name}-gunicorn.log"
    try:
        with gunicorn(url, log_path, DB_CONN_MAX_AGE="60", INGEST_RETRY_AFTER_SECONDS="1") as base_url:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=30)
            yield base_url, f"127.0.0.1:{port}", key, datadir, url, grpc_log_path
    finally:
        grpc_process.terminate()
        assert grpc_process.wait(timeout=30) == 0
        grpc_log.close()
        grpc_log_path.unlink(missing_ok=True)
        log_path.unlink(missing_ok=True)


def test_database_down_answers_retry_later_and_loses_nothing(
    receivers: tuple[str, str, str, Path, str, Path],
) -> None:
    base_url, grpc_address, key, datadir, url, grpc_log_path = receivers
    exporter = OTLPMetricExporter(endpoint=grpc_address, insecure=True, headers={"authorization": f"Bearer {key}"},
                                  timeout=60)  # fmt: skip
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create({"service.name": "down-test"}), metric_readers=[reader])
    tokens = provider.get_meter("down-test").create_counter("vllm.tokens")
    tokens.add(100)
    assert provider.force_flush(30_000)

    embedded.stop_postgres(datadir)
    body = request_of([gauge("g", [(now_ns(), 1.0)])])
    request = urllib.request.Request(
        f"{base_url}/v1/metrics", data=body, method="POST",
        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(request, timeout=10)
    assert http_error.value.code == 503
    assert http_error.value.headers["Retry-After"] == "1"

    with grpc.insecure_channel(grpc_address) as channel, pytest.raises(grpc.RpcError) as grpc_error:
        channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")(
            body, metadata=(("authorization", f"Bearer {key}"),), timeout=10
        )
    assert grpc_error.value.code() == grpc.StatusCode.UNAVAILABLE
    retry = RetryInfo.FromString(dict(grpc_error.value.trailing_metadata())["google.rpc.retryinfo-bin"])
    assert retry.retry_delay.seconds == 1

    # The real exporter meets the outage, waits as RetryInfo says, and gets through once the
    # database is back.
    tokens.add(50)
    results: list[bool] = []
    flusher = threading.Thread(target=lambda: results.append(provider.force_flush(60_000)))
    flusher.start()
    time.sleep(2.5)
    embedded.start_stopped_postgres(datadir)
    flusher.join(timeout=90)
    provider.shutdown()
    assert results == [True]
    # The receiver saw the exporter's attempt(s) during the outage, besides the raw call above.
    assert grpc_log_path.read_text().count("grpc ingest unavailable") >= 2

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT p.value, p.increase FROM gpu_metric_point p JOIN gpu_metric_series s USING (project_id, series_id) "
            "WHERE s.name = 'vllm.tokens' ORDER BY p.time"
        ).fetchall()
    # The flush during the outage and the shutdown's final export; each interval counted once.
    assert [value for value, _ in rows][:2] == [100.0, 150.0]
    assert sum(increase for _, increase in rows) == 150.0
