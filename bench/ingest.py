"""End-to-end ingest throughput: first request sent to last span committed.

    python3 run.py bench ingest [--spans N]     # or .venv/bin/python bench/ingest.py with DATABASE_URL set

Starts the real receiver (gunicorn, as in production) on a fresh database, sends
pre-encoded OTLP protobuf batches of 512 spans from 4 concurrent clients, and counts what
was committed. A 200 from the receiver means the batch is committed, so the clock stops at
the last response; the stored row count is checked against what was sent. The receiver's
peak memory is the largest summed RSS of its processes, sampled every 50 ms.

The last line is `spans_per_s=<number>`.
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
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import psycopg  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status  # noqa: E402

from bench._db import bench_database  # noqa: E402

MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("vllm", "llama-3.1-8b")]
TENANTS = ["acme", "globex", "initech", "umbrella"]
FEATURES = ["support-chat", "summarize", "search-rerank", "code-review"]


def _kv(key: str, value: str | int | float) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(double_value=value))


def make_batch(rng: random.Random, spans: int, now_ns: int) -> bytes:
    """`spans` spans as traces of a root span plus one LLM client span, like an instrumented app."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend([_kv("service.name", "bench-api"), _kv("host.name", "bench-1")])
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "bench"
    for _ in range(spans // 2):
        trace_id = rng.randbytes(16)
        root_id = rng.randbytes(8)
        start = now_ns - rng.randrange(0, 3600 * 10**9)
        duration = int(rng.lognormvariate(20.5, 0.6))
        provider, model = rng.choice(MODELS)
        root = scope.spans.add(trace_id=trace_id, span_id=root_id, name="POST /v1/chat", kind=Span.SPAN_KIND_SERVER)
        root.start_time_unix_nano, root.end_time_unix_nano = start, start + duration + 2_000_000
        root.attributes.extend(
            [_kv("tenant.id", rng.choice(TENANTS)), _kv("app.feature", rng.choice(FEATURES)),
             _kv("http.request.method", "POST"), _kv("http.response.status_code", 200), _kv("user.id", "u-42")]
        )  # fmt: skip
        llm = scope.spans.add(trace_id=trace_id, span_id=rng.randbytes(8), parent_span_id=root_id,
                              name=f"chat {model}", kind=Span.SPAN_KIND_CLIENT)  # fmt: skip
        llm.start_time_unix_nano, llm.end_time_unix_nano = start + 1_000_000, start + 1_000_000 + duration
        input_tokens = int(rng.lognormvariate(7, 0.8))
        llm.attributes.extend(
            [_kv("gen_ai.provider.name", provider), _kv("gen_ai.operation.name", "chat"),
             _kv("gen_ai.request.model", model), _kv("gen_ai.response.model", model),
             _kv("gen_ai.usage.input_tokens", input_tokens),
             _kv("gen_ai.usage.cache_read.input_tokens", input_tokens // 3),
             _kv("gen_ai.usage.output_tokens", int(rng.lognormvariate(5, 0.7))),
             _kv("gen_ai.response.time_to_first_chunk", duration / 1e9 / 4),
             _kv("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(64):x}"),
             _kv("server.address", "api.openai.com")]
        )  # fmt: skip
        llm.attributes.append(
            KeyValue(key="gen_ai.response.finish_reasons",
                     value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="stop")])))
        )  # fmt: skip
        llm.status.CopyFrom(Status(code=Status.STATUS_CODE_OK))
    return request.SerializeToString()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    args = parser.parse_args()

    bench_url, _ = bench_database("observatory_bench")
    env = {**os.environ, "DATABASE_URL": bench_url, "LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    key = subprocess.run([sys.executable, "manage.py", "create_ingest_key", "bench"], cwd=ROOT, env=env,
                         check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip

    rng = random.Random(42)
    now_ns = time.time_ns()
    batches = [make_batch(rng, args.batch, now_ns) for _ in range(args.spans // args.batch)]
    total_spans = len(batches) * args.batch
    print(f"prepared {len(batches)} batches of {args.batch} spans ({sum(map(len, batches)) / 1e6:.1f} MB protobuf)")

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "observatory.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", str(args.workers), "--threads", str(args.threads), "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
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
        # Warm each worker (imports, price book, partition cache) outside the timed window.
        warm = [make_batch(random.Random(seed), 8, now_ns) for seed in range(args.workers * 4)]
        for body in warm:
            _post(port, key, body)
        with psycopg.connect(bench_url) as conn:
            stored_before = _stored_spans(conn)

        peak_rss = 0
        sampling = True

        def sample() -> None:
            nonlocal peak_rss
            parent = psutil.Process(server.pid)
            while sampling:
                try:
                    procs = [parent, *parent.children(recursive=True)]
                    peak_rss = max(peak_rss, sum(p.memory_info().rss for p in procs))
                except psutil.Error:
                    pass
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        queue = list(reversed(batches))
        lock = threading.Lock()
        failures: list[str] = []

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            while True:
                with lock:
                    if not queue:
                        break
                    body = queue.pop()
                status, text = _post(port, key, body, conn)
                if status != 200:
                    failures.append(f"{status} {text[:200]!r}")
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        sampling = False
        sampler.join()
    finally:
        server.terminate()
        server.wait(timeout=30)

    with psycopg.connect(bench_url) as conn:
        stored = _stored_spans(conn) - stored_before
    if failures:
        print(f"{len(failures)} failed requests, first: {failures[0]}")
    print(f"machine: {os.cpu_count()} cores; receiver: gunicorn {args.workers} workers x {args.threads} threads")
    print(f"sent {total_spans} spans in {len(batches)} batches from {args.clients} clients in {elapsed:.2f} s")
    print(f"stored {stored} spans (expected {total_spans})")
    print(f"receiver_peak_rss_mb={peak_rss / 2**20:.0f}")
    if stored != total_spans:
        print("ERROR: stored count differs from sent count")
        sys.exit(1)
    print(f"spans_per_s={total_spans / elapsed:.0f}")


def _stored_spans(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute("SELECT count(*) FROM telemetry_span").fetchone()
    assert row is not None  # count(*) always answers one row
    return int(row[0])


def _post(port: int, key: str, body: bytes, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/v1/traces", body=body,
                 headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"})  # fmt: skip
    response = conn.getresponse()
    text = response.read()
    if own:
        conn.close()
    return response.status, text


if __name__ == "__main__":
    main()
