"""An hour of simulated traffic, self-hosted calls included, through the real receiver (spans
to /v1/traces, GPU samples and vLLM series to /v1/metrics, stock OTLP exporters), then
attribution: every vLLM call has an attributed cost, and the GPUs' cost is exactly what the
calls carry plus what stayed idle."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import Q, Sum

from apps.accounts.models import IngestKey, Project
from apps.gpu.attribution import ATTRIBUTED, attribute_range, floor_interval
from apps.gpu.models import CostInterval, MetricSeries
from apps.gpu.reads import increase_total
from apps.telemetry.models import Span
from collectors.simulator import simulate
from collectors.simulator.catalog import VLLM_GPUS


@pytest.mark.django_db(transaction=True)
def test_an_hour_of_self_hosted_traffic_is_fully_attributed(
    live_server: Any, price_catalog: None, settings: Any
) -> None:
    settings.GPU_COST_INTERVAL_SECONDS = 300
    settings.GPU_PRICE_PROVIDER = "lambda"
    call_command("load_gpu_prices", stdout=io.StringIO())
    project = Project.objects.create(name="demo")
    _, key = IngestKey.issue(project, "sim")
    end = floor_interval(datetime.now(UTC) - timedelta(minutes=20), 300)
    start = end - timedelta(hours=1)

    summary = simulate(live_server.url, key, start=start, end=end, requests=400, seed=7)
    assert summary.failed_spans == 0 and summary.failed_metric_exports == 0
    assert summary.vllm_server_spans > 20
    # Every GPU of every instance reported in every one-minute period.
    gpus = sum(len(g) for g in VLLM_GPUS.values())
    assert MetricSeries.objects.filter(project=project, name="hw.gpu.utilization").count() == gpus
    assert increase_total(project.id, "vllm:generation_tokens", start, end) > 0

    results = attribute_range(project.id, start, end)
    assert len(results) == 12

    # Every self-hosted call (an LLM span that is not nested in another) has an attributed cost.
    vllm_calls = Span.objects.filter(project=project, is_llm=True, provider="vllm", kind=3)
    assert vllm_calls.count() > 20
    assert not vllm_calls.filter(Q(cost_usd__isnull=True) | ~Q(cost_source=ATTRIBUTED)).exists()
    assert vllm_calls.filter(cost_usd__gt=0).count() > 20

    # GPUs x price x time from the shipped catalog (provider lambda): two H100 80GB HBM3 at
    # $2.99/h and one A100-SXM4-80GB at $1.79/h. Per 300 s interval: $0.2491666667 (half up)
    # twice + $0.1491666667 = $0.6475000001; 12 intervals: $7.7700000012.
    assert [g.model for group in VLLM_GPUS.values() for g in group] == [
        "NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB",
    ]  # fmt: skip
    per_gpu = {
        p: (Decimal(p) * 300 / 3600).quantize(Decimal("1E-10"), rounding=ROUND_HALF_UP) for p in ("2.99", "1.79")
    }
    assert per_gpu == {"2.99": Decimal("0.2491666667"), "1.79": Decimal("0.1491666667")}
    expected = Decimal("7.7700000012")
    pools = CostInterval.objects.filter(project=project, gpus__gt=0)
    totals = pools.aggregate(gpu=Sum("gpu_cost_usd"), attributed=Sum("attributed_usd"), idle=Sum("idle_usd"))
    assert totals["gpu"] == expected
    assert totals["attributed"] + totals["idle"] == expected
    assert totals["idle"] > 0
    # What the calls carry is exactly what was attributed.
    assert (
        Span.objects.filter(project=project, cost_source=ATTRIBUTED).aggregate(s=Sum("cost_usd"))["s"]
        == (totals["attributed"])
    )

    # Running it again changes nothing.
    assert sum(r.spans_changed for r in attribute_range(project.id, start, end)) == 0
