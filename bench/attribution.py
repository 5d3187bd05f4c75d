"""GPU cost attribution: vLLM requests attributed per second.

    python3 run.py bench attribution [--requests N] [--hours H]   # or .venv/bin/python bench/attribution.py

On a fresh database, stores N self-hosted calls (a client span and its vLLM llm_request
span each) spread over H hours on four instances of two GPUs each, and GPU samples every 15 s
for each GPU, through the same store functions the receivers use. Then times
attribute_range over the hours (every 300 s interval, from scratch), checks that
attributed + idle == GPU cost for every interval and that every call carries a cost, and
times a second run, which must change no span.

The last line is `attribution_requests_per_s=<number>`: calls divided by the first run's time.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._db import bench_database  # noqa: E402

INSTANCES = 4
GPUS_PER_INSTANCE = 2
SAMPLE_S = 15
BATCH = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--hours", type=int, default=6)
    args = parser.parse_args()

    os.environ["DATABASE_URL"], _ = bench_database("observatory_bench")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "observatory.settings")
    os.environ["GPU_COST_INTERVAL_SECONDS"] = "300"
    os.environ["GPU_PRICE_PROVIDER"] = "bench"

    import django

    django.setup()

    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Sum

    from apps.accounts.models import Project
    from apps.gpu.attribution import attribute_range, floor_interval
    from apps.gpu.ingest import ingest_points, point_limits
    from apps.gpu.models import CostInterval, GpuPrice
    from apps.telemetry.models import Span
    from apps.telemetry.store import insert_spans
    from collectors.otlp_metrics import decode_metrics_protobuf
    from collectors.records import CanonicalSpan
    from tests.gpu.helpers import gauge, request_of

    call_command("migrate", verbosity=0)
    project = Project.objects.create(name="bench")
    GpuPrice.objects.create(
        provider="bench", gpu_model_pattern=".*", effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        usd_per_gpu_hour=Decimal("2.99"),
    )  # fmt: skip
    end = floor_interval(datetime.now(UTC) - timedelta(hours=1), 300)
    start = end - timedelta(hours=args.hours)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    def ns(moment: datetime) -> int:
        return (moment - epoch) // timedelta(microseconds=1) * 1000

    began = time.perf_counter()
    samples = [start + timedelta(seconds=s) for s in range(0, args.hours * 3600, SAMPLE_S)]
    for instance in range(INSTANCES):
        metrics = [
            gauge("hw.gpu.utilization", [(ns(t), 0.6) for t in samples],
                  {"hw.id": f"GPU-{instance}-{g}", "hw.model": "NVIDIA H100 80GB HBM3", "gpu.index": g})
            for g in range(GPUS_PER_INSTANCE)
        ]  # fmt: skip
        body = request_of(metrics, {"service.instance.id": f"vllm-{instance}"})
        points, rejected = decode_metrics_protobuf(body, point_limits())
        ingest_points(project.id, points, rejected)

    rng = random.Random(1)
    seconds = args.hours * 3600
    for first in range(0, args.requests, BATCH):
        spans = []
        for n in range(first, min(first + BATCH, args.requests)):
            at = start + timedelta(seconds=seconds * n / args.requests)
            trace = uuid.UUID(int=rng.getrandbits(128)).bytes
            client_id, server_id = rng.getrandbits(63).to_bytes(8, "big"), rng.getrandbits(63).to_bytes(8, "big")
            queue, prefill, decode = rng.expovariate(20), rng.uniform(0.02, 0.3), rng.uniform(0.5, 8.0)
            done = at + timedelta(seconds=queue + prefill + decode)
            if done >= end:
                done = end - timedelta(milliseconds=1)
                decode = max(0.0, (done - at).total_seconds() - queue - prefill)
            spans.append(CanonicalSpan(
                trace_id=trace, span_id=client_id, parent_span_id=None, name="chat llama", kind=3,
                start_ns=ns(at), end_ns=ns(done), status_code=0, status_message="", service_name="app",
                scope_name="openai_v2", is_llm=True, provider="vllm", request_model="llama", input_tokens=800,
                output_tokens=200, tenant=f"t{n % 7}", feature=f"f{n % 3}",
            ))  # fmt: skip
            spans.append(CanonicalSpan(
                trace_id=trace, span_id=server_id, parent_span_id=client_id, name="llm_request", kind=2,
                start_ns=ns(at), end_ns=ns(done), status_code=0, status_message="", service_name="vllm",
                scope_name="vllm.llm_engine", is_llm=True, provider="vllm", input_tokens=800, output_tokens=200,
                queue_ms=queue * 1000, prefill_ms=prefill * 1000, decode_ms=decode * 1000,
                resource={"service.instance.id": f"vllm-{n % INSTANCES}"},
            ))  # fmt: skip
        insert_spans(project.id, spans)
    with connection.cursor() as cur:
        cur.execute("ANALYZE telemetry_span")
        cur.execute("ANALYZE gpu_metric_point")
    print(f"stored {args.requests:,} calls and {len(samples) * INSTANCES * GPUS_PER_INSTANCE:,} GPU samples "
          f"over {args.hours} h in {time.perf_counter() - began:.1f} s")  # fmt: skip

    began = time.perf_counter()
    results = attribute_range(project.id, start, end)
    took = time.perf_counter() - began
    changed = sum(r.spans_changed for r in results)
    began = time.perf_counter()
    again = sum(r.spans_changed for r in attribute_range(project.id, start, end))
    took_again = time.perf_counter() - began

    bad = [i.start for i in CostInterval.objects.filter(project=project, gpus__gt=0)
           if (i.attributed_usd or 0) + (i.idle_usd or 0) != i.gpu_cost_usd]  # fmt: skip
    unknown = Span.objects.filter(project=project, kind=3, cost_usd__isnull=True).count()
    totals = CostInterval.objects.filter(project=project).aggregate(a=Sum("attributed_usd"), i=Sum("idle_usd"))
    print(f"machine: {os.cpu_count()} cores")
    print(f"first run: {len(results)} intervals, {changed:,} span cost updates in {took:.2f} s "
          f"({len(results) / took:.1f} intervals/s); attributed ${totals['a']}, idle ${totals['i']}")  # fmt: skip
    print(f"second run: changed {again:,} in {took_again:.2f} s (expected 0)")
    if bad or unknown or again:
        print(f"ERROR: {len(bad)} intervals do not add up, {unknown} calls without cost, {again} changed on re-run")
        sys.exit(1)
    print(f"attribution_requests_per_s={args.requests / took:.0f}")


if __name__ == "__main__":
    main()
