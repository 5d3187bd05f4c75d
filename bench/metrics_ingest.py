"""End-to-end OTLP metrics ingest throughput: first request sent to last point committed.

    python3 run.py bench metrics_ingest [--rounds N]
    .venv/bin/python bench/metrics_ingest.py   # with DATABASE_URL set

Starts the real receiver (gunicorn, as in production) on a fresh database and sends
pre-encoded OTLP protobuf ExportMetricsServiceRequests from concurrent clients, the way a
fleet of exporters does: each batch is one exporter's collection (one resource, one point per
series), and every round moves time forward, so cumulative series go through the real
baseline lookup, series lock and reset-aware interval for every point. The mix is set by
--sums and --histograms (shares of the series; the rest are gauges, like the GPU sampler's).
A 200 means committed, so the clock stops at the last response; the stored row count is
checked against what was sent.

The last line is `points_per_s=<number>`.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from typing import Any  # noqa: E402

import psycopg  # noqa: E402
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402

from bench._db import bench_database  # noqa: E402

BOUNDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
GPU_METRICS = ["hw.gpu.utilization", "hw.gpu.memory.usage", "hw.power", "hw.temperature", "observatory.gpu.sm_clock"]


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    return KeyValue(key=key, value=AnyValue(int_value=value))


def make_batch(exporter: int, round_index: int, series: int, sums: float, histograms: float, base_ns: int) -> bytes:
    """One exporter's collection in one round: `series` points, one per series."""
    rng = random.Random(exporter * 1_000_003 + round_index)
    start_ns = base_ns - 3600 * 10**9
    time_ns = base_ns + round_index * 5 * 10**9 + exporter * 1000
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(
        [_kv("service.name", "vllm-serving"), _kv("host.name", f"gpu-node-{exporter}"),
         _kv("service.instance.id", f"vllm-{exporter}")]
    )  # fmt: skip
    sm = rm.scope_metrics.add()
    sm.scope.name = "bench"
    n_sums, n_hist = int(series * sums), int(series * histograms)
    n_gauges = series - n_sums - n_hist
    # As the SDK exports them: one metric per instrument, one point per attribute set.
    gauges = [sm.metrics.add(name=name, unit="1") for name in GPU_METRICS]
    for index in range(n_gauges):
        gauges[index % len(GPU_METRICS)].gauge.data_points.add(
            time_unix_nano=time_ns, as_double=rng.random(), attributes=[_kv("gpu.index", index // len(GPU_METRICS))]
        )
    tokens = sm.metrics.add(name="vllm:generation_tokens", unit="{token}")
    tokens.sum.aggregation_temporality = 2
    tokens.sum.is_monotonic = True
    for index in range(n_sums):
        tokens.sum.data_points.add(
            start_time_unix_nano=start_ns, time_unix_nano=time_ns, as_double=float(1000 * (round_index + 1) + index),
            attributes=[_kv("model_name", f"model-{index}")],
        )  # fmt: skip
    ttft = sm.metrics.add(name="gen_ai.client.operation.time_to_first_chunk", unit="s")
    ttft.histogram.aggregation_temporality = 2
    for index in range(n_hist):
        buckets = [(round_index + 1) * (b + 1) for b in range(len(BOUNDS) + 1)]
        ttft.histogram.data_points.add(
            start_time_unix_nano=start_ns, time_unix_nano=time_ns, count=sum(buckets), sum=float(sum(buckets)) * 0.3,
            bucket_counts=buckets, explicit_bounds=BOUNDS, attributes=[_kv("gen_ai.request.model", f"model-{index}")],
        )  # fmt: skip
    return request.SerializeToString()


def _count(conn: psycopg.Connection[Any], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """user + system CPU of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_pids(server_pid: int, conn: psycopg.Connection[Any]) -> dict[str, list[int]]:
    """The receiver's worker processes and the PostgreSQL backends serving the bench database."""
    workers = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == server_pid:
                workers.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    backends = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return {"receiver": [server_pid, *workers], "postgres": [int(row[0]) for row in backends]}


def _post(conn: http.client.HTTPConnection, key: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", "/v1/metrics", body=body,
                 headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"})  # fmt: skip
    response = conn.getresponse()
    return response.status, response.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exporters", type=int, default=16, help="distinct resources (hosts) sending")
    parser.add_argument("--series", type=int, default=2000, help="series per exporter = points per batch")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sums", type=float, default=0.2, help="share of cumulative sum series")
    parser.add_argument("--histograms", type=float, default=0.05, help="share of cumulative histogram series")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    args = parser.parse_args()

    bench_url, _ = bench_database("observatory_bench_metrics")
    env = {**os.environ, "DATABASE_URL": bench_url, "LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    key = subprocess.run([sys.executable, "manage.py", "create_ingest_key", "bench"], cwd=ROOT, env=env,
                         check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip

    base_ns = time.time_ns() - 3 * 3600 * 10**9
    # Round 0 is the warm-up (series rows, first baselines, imports), outside the timed window.
    batches = {
        (r, e): make_batch(e, r, args.series, args.sums, args.histograms, base_ns)
        for r in range(args.rounds + 1)
        for e in range(args.exporters)
    }
    timed = [batches[(r, e)] for r in range(1, args.rounds + 1) for e in range(args.exporters)]
    total_points = len(timed) * args.series
    print(f"prepared {len(timed)} batches of {args.series} points ({sum(map(len, timed)) / 1e6:.1f} MB protobuf)")

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "observatory.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", str(args.workers), "--threads", str(args.threads), "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    failures: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        warm = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for e in range(args.exporters):
            status, text = _post(warm, key, batches[(0, e)])
            assert status == 200, text
        warm.close()
        with psycopg.connect(bench_url) as conn:
            stored_before = _count(conn, "SELECT count(*) FROM gpu_metric_point")

        # Round-major order: an exporter's rounds go out in time order, as a real one's do.
        queue = list(reversed(timed))
        lock = threading.Lock()

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            while True:
                with lock:
                    if not queue:
                        break
                    body = queue.pop()
                status, text = _post(conn, key, body)
                if status != 200:
                    failures.append(f"{status} {text[:200]!r}")
            conn.close()

        # CPU used by the server side (receiver workers and their PostgreSQL backends) in the
        # timed window: on a machine others load too, CPU per point is the steadier figure.
        with psycopg.connect(bench_url) as conn:
            before = {pid: _cpu_seconds(pid) for pids in _server_pids(server.pid, conn).values() for pid in pids}
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        with psycopg.connect(bench_url) as conn:
            server_cpu = {
                part: sum(_cpu_seconds(pid) - before.get(pid, 0.0) for pid in pids)
                for part, pids in _server_pids(server.pid, conn).items()
            }
    finally:
        server.terminate()
        server.wait(timeout=30)

    with psycopg.connect(bench_url) as conn:
        stored = _count(conn, "SELECT count(*) FROM gpu_metric_point") - stored_before
        wrong = _count(
            conn,
            "SELECT count(*) FROM gpu_metric_point p JOIN gpu_metric_series s USING (project_id, series_id) "
            "WHERE s.kind = 'sum' AND p.time > (SELECT min(time) FROM gpu_metric_point) + interval '1 second' "
            "AND p.increase <> 1000",
        )
    if failures:
        print(f"{len(failures)} failed requests, first: {failures[0]}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"receiver: gunicorn {args.workers} workers x {args.threads} threads")  # fmt: skip
    print(f"mix: {1 - args.sums - args.histograms:.0%} gauges, {args.sums:.0%} cumulative sums, "
          f"{args.histograms:.0%} cumulative histograms; "
          f"{args.exporters} exporters x {args.series} series")  # fmt: skip
    print(f"sent {total_points} points in {len(timed)} batches from {args.clients} clients in {elapsed:.2f} s")
    cpu_per_point = sum(server_cpu.values()) / total_points
    receiver_us, postgres_us = (server_cpu[part] / total_points * 1e6 for part in ("receiver", "postgres"))
    print(f"server cpu per point: {cpu_per_point * 1e6:.1f} us (receiver {receiver_us:.1f}, postgres "
          f"{postgres_us:.1f}): all {os.cpu_count()} cores would carry {(os.cpu_count() or 1) / cpu_per_point:.0f} "
          "points/s")  # fmt: skip
    print(f"stored {stored} points (expected {total_points}); cumulative sums with a wrong increase: {wrong}")
    if stored != total_points or wrong:
        print("ERROR: stored points differ from those sent")
        sys.exit(1)
    print(f"points_per_s={total_points / elapsed:.0f}")


if __name__ == "__main__":
    main()
