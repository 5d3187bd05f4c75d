"""Weeks of demo history, quick: older days at a lower rate, and the serving tier's metrics sent
while the spans are still being generated, each sample period exactly once."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import timedelta

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collectors.simulator import Simulator
from collectors.simulator.catalog import VLLM_GPUS
from collectors.simulator.traffic import NS_PER_S, to_ns
from tests.simulator.conftest import END
from tests.simulator.test_serving_metrics import KeptMetrics

DAY_NS = 86400 * NS_PER_S


def test_older_days_get_the_older_rate_and_the_recent_days_keep_theirs() -> None:
    spans = InMemorySpanExporter()
    start = END - timedelta(days=6)
    with Simulator(exporter=spans, seed=3, now=END) as sim:
        sim.backfill(start, END, requests_per_day=600, older_requests_per_day=150, full_rate_days=2)
    roots = [s for s in spans.get_finished_spans() if s.parent is None]
    split_ns = to_ns(END) - 2 * DAY_NS
    older = sum(r.start_time < split_ns for r in roots)
    recent = len(roots) - older
    assert older == 4 * 150 and recent == 2 * 600
    assert min(r.start_time for r in roots) >= to_ns(start)
    # The older days still have the weekly and daily shape: no empty day.
    days = Counter((r.start_time - to_ns(start)) // DAY_NS for r in roots if r.start_time < split_ns)
    assert set(days) == {0, 1, 2, 3}


def test_recent_days_do_not_depend_on_the_older_rate() -> None:
    def recent_roots(older_rate: float) -> set[tuple[int, int]]:
        spans = InMemorySpanExporter()
        with Simulator(exporter=spans, seed=3, now=END) as sim:
            sim.backfill(END - timedelta(days=4), END, requests_per_day=400, older_requests_per_day=older_rate,
                         full_rate_days=1)  # fmt: skip
        split_ns = to_ns(END) - DAY_NS
        return {
            (s.context.trace_id, s.start_time)
            for s in spans.get_finished_spans()
            if s.parent is None and s.start_time >= split_ns
        }

    assert recent_roots(50) == recent_roots(200)


def test_backfill_sends_serving_metrics_as_it_goes_every_period_once() -> None:
    metrics, spans = KeptMetrics(), InMemorySpanExporter()
    start = END - timedelta(days=3)
    with Simulator(exporter=spans, metric_exporter=metrics, seed=5, now=END, sample_s=300) as sim:
        sim.backfill(start, END, requests_per_day=1500)
        # Most of the history went out during generation, in whole requests of 60 periods.
        sent_during = len(metrics.batches)
    assert sent_during >= 10
    utilisation = metrics.points("hw.gpu.utilization")
    gpus = sum(len(g) for g in VLLM_GPUS.values())
    periods = 3 * 288
    assert len(utilisation) == periods * gpus
    seen = Counter((resource["service.instance.id"], point.time_unix_nano) for resource, point in utilisation)
    assert set(seen.values()) == {1}
    # Every five-minute period of the range, in order, for every GPU.
    times = sorted({point.time_unix_nano for _, point in utilisation})
    assert times[0] == to_ns(start) + 299 * NS_PER_S
    assert all(b - a == 300 * NS_PER_S for a, b in itertools.pairwise(times))
    assert sim.summary.metric_points == sum(
        len(m.data.data_points) for b in metrics.batches for rm in b.resource_metrics for sm in rm.scope_metrics
        for m in sm.metrics
    )  # fmt: skip
    assert sim.summary.failed_metric_exports == 0
    # vLLM's cumulative counters never go back (points built in order even when sent later).
    prompt = sorted(
        (point.time_unix_nano, point.value)
        for resource, point in metrics.points("vllm:prompt_tokens")
        if resource["service.instance.id"] == "vllm-0"
    )
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(prompt))
    assert prompt[-1][1] > 0


def test_shaped_live_traffic_runs_at_the_backfills_average_volume_scaled_by_the_load_now() -> None:
    """The demo's live traffic continues its backfill: --rate is the weekly average, scaled by
    the tenants' load at this moment, so there is no step where history ends."""
    from datetime import UTC, datetime

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from collectors.simulator.runner import Simulator
    from collectors.simulator.traffic import mean_overall_load, overall_load

    week = mean_overall_load()
    assert 0 < min(overall_load(datetime(2026, 11, 21, 3, tzinfo=UTC)), week) < week < 1
    expected = 12_000 / 60 * 2.0 * overall_load(datetime.now(UTC)) / week
    with Simulator(exporter=InMemorySpanExporter(), seed=3) as sim:
        sim.live(12_000, duration_s=2.0, shaped=True)
    # Poisson: within six standard deviations of the shaped expectation.
    assert abs(sim.summary.traces - expected) < 6 * expected**0.5 + 3, (sim.summary.traces, expected)
