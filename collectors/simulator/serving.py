"""The simulated serving tier's metrics: GPU samples and vLLM's own series, as OTLP metrics.

The simulated vLLM instances (catalog.VLLM_INSTANCES) each run on the GPUs in
catalog.VLLM_GPUS. Every planned self-hosted call is recorded here (arrival, queue, prefill,
decode, tokens, finish reason); `flush(until)` then exports, for every sample period of the
covered range and every instance, busy or not (a GPU is paid for all the time):

- GPU readings in NVML's units, turned into the canonical series by the GPU sampler's own
  conversion (collectors.gpu_sampler.observations): utilisation follows the time requests
  spent in the model in that period, memory follows the KV cache, power follows utilisation,
  energy accumulates power x time;
- vLLM's series under the names the store keeps for scraped vLLM /metrics (docs/gpu.md):
  running / waiting requests and KV-cache usage (gauges), prompt / generation tokens, prefix
  cache queries / hits, preemptions, finished requests by reason (cumulative sums), and the
  latency histograms (TTFT, inter-token, e2e, queue, prefill, decode), label `model_name`.

Sending vLLM's series as OTLP metrics rather than serving a /metrics page keeps the demo to
one process and gives backfilled points their own (past) timestamps, which a scrape cannot.
Points are built as the OTel SDK's own MetricsData and handed to the stock OTLP exporter:
the SDK's readers stamp every point with the current time, which a backfill of last week
cannot use. No Django imports.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from collectors.gpu_sampler import SERVICE_NAME as SAMPLER_SERVICE
from collectors.gpu_sampler import EnergySinceStart, GpuReading, observations
from collectors.simulator.catalog import LLAMA_8B, VLLM_GPUS, VLLM_INSTANCES, VLLM_SERVICE, VLLM_VERSION, SimulatedGpu
from collectors.simulator.traffic import NS_PER_S

DEFAULT_SAMPLE_S = 60
# Periods per export request: a week of one-minute samples goes in ~170 requests per instance.
PERIODS_PER_EXPORT = 60
MAX_PENDING_EXPORTS = 4
LATENCY_BOUNDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
ITL_BOUNDS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5)
HISTOGRAMS = {
    "vllm:time_to_first_token_seconds": LATENCY_BOUNDS,
    "vllm:inter_token_latency_seconds": ITL_BOUNDS,
    "vllm:e2e_request_latency_seconds": LATENCY_BOUNDS,
    "vllm:request_queue_time_seconds": LATENCY_BOUNDS,
    "vllm:request_prefill_time_seconds": LATENCY_BOUNDS,
    "vllm:request_decode_time_seconds": LATENCY_BOUNDS,
}
COUNTERS = {
    "vllm:prompt_tokens": "{token}",
    "vllm:generation_tokens": "{token}",
    "vllm:prefix_cache_queries": "{token}",
    "vllm:prefix_cache_hits": "{token}",
    "vllm:num_preemptions": "{preemption}",
}
# A request that waited this long in the queue was preempted once (plan.py draws those).
PREEMPTED_QUEUE_S = 2.0
# KV cache per request in the batch, as a share of the cache (Llama 8B, ~4k tokens of context).
KV_SHARE_PER_RUNNING = 0.06


@dataclass
class _Period:
    """What one instance did in one sample period."""

    in_model_s: float = 0.0
    queued_s: float = 0.0
    counters: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    finished: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    observed: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


@dataclass(frozen=True, slots=True)
class ServedCall:
    """The engine's view of one self-hosted call, as the simulator planned it."""

    instance: str
    arrival_ns: int
    queue_s: float
    prefill_s: float
    decode_s: float
    prompt_tokens: int
    output_tokens: int
    finish_reason: str


class ServingMetrics:
    def __init__(self, exporter: MetricExporter, sample_s: int = DEFAULT_SAMPLE_S) -> None:
        self._exporter = exporter
        self.sample_ns = sample_s * NS_PER_S
        self._periods: dict[tuple[str, int], _Period] = defaultdict(_Period)
        self._covered_from: int | None = None
        self._exported_until: int | None = None
        self._energy = EnergySinceStart()
        self._energy_mj: dict[str, float] = defaultdict(float)
        self._totals: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self._extremes: dict[tuple[str, str], tuple[float, float]] = {}
        self.exported_points = 0
        self.failed_exports = 0
        self._sender: ThreadPoolExecutor | None = None
        self._pending: list[Future[tuple[bool, int]]] = []

    def cover(self, from_ns: int) -> None:
        """Samples start at the period holding `from_ns` (the first call of backfill or live)."""
        start = from_ns - from_ns % self.sample_ns
        if self._covered_from is None:
            self._covered_from = self._exported_until = start

    def record(self, call: ServedCall) -> None:
        self.cover(call.arrival_ns)
        queue_to = call.arrival_ns + int(call.queue_s * NS_PER_S)
        model_to = queue_to + int((call.prefill_s + call.decode_s) * NS_PER_S)
        self._spread(call.instance, call.arrival_ns, queue_to, "queued_s")
        self._spread(call.instance, queue_to, model_to, "in_model_s")
        period = self._periods[(call.instance, self._period_of(model_to))]
        aborted = call.finish_reason == "abort"
        period.finished[call.finish_reason] += 1
        period.counters["vllm:prompt_tokens"] += 0 if aborted else call.prompt_tokens
        period.counters["vllm:generation_tokens"] += call.output_tokens
        period.counters["vllm:prefix_cache_queries"] += 0 if aborted else call.prompt_tokens
        # A share of each prompt is a shared system prompt already in the prefix cache.
        period.counters["vllm:prefix_cache_hits"] += 0 if aborted else call.prompt_tokens * 35 // 100
        period.counters["vllm:num_preemptions"] += 1 if call.queue_s > PREEMPTED_QUEUE_S else 0
        period.observed["vllm:request_queue_time_seconds"].append(call.queue_s)
        if aborted:
            return
        period.observed["vllm:time_to_first_token_seconds"].append(call.queue_s + call.prefill_s)
        period.observed["vllm:e2e_request_latency_seconds"].append(call.queue_s + call.prefill_s + call.decode_s)
        period.observed["vllm:request_prefill_time_seconds"].append(call.prefill_s)
        period.observed["vllm:request_decode_time_seconds"].append(call.decode_s)
        if call.output_tokens > 1:
            period.observed["vllm:inter_token_latency_seconds"].append(call.decode_s / (call.output_tokens - 1))

    def _period_of(self, at_ns: int) -> int:
        return at_ns - at_ns % self.sample_ns

    def _spread(self, instance: str, from_ns: int, to_ns: int, what: str) -> None:
        """Add the seconds of [from, to) to each period they fall in."""
        at = from_ns
        while at < to_ns:
            period_start = self._period_of(at)
            upto = min(to_ns, period_start + self.sample_ns)
            cell = self._periods[(instance, period_start)]
            setattr(cell, what, getattr(cell, what) + (upto - at) / NS_PER_S)
            at = upto

    def flush(self, until_ns: int, *, whole_exports_only: bool = False) -> None:
        """Export every period of every instance that ends at or before `until_ns`.

        `whole_exports_only`: leave a last, partial export's periods for a later flush (a
        backfill flushing as it goes sends full requests, not one per few periods).
        """
        if self._exported_until is None:
            return
        periods = []
        at = self._exported_until
        while at + self.sample_ns <= until_ns:
            periods.append(at)
            at += self.sample_ns
        if whole_exports_only:
            periods = periods[: len(periods) - len(periods) % PERIODS_PER_EXPORT]
            at = periods[-1] + self.sample_ns if periods else self._exported_until
        for chunk_start in range(0, len(periods), PERIODS_PER_EXPORT):
            self._export(periods[chunk_start : chunk_start + PERIODS_PER_EXPORT])
        self._exported_until = at

    def drain(self) -> None:
        """Wait for the exports handed to the background sender (a no-op without one)."""
        if self._sender is None:
            return
        for pending in self._pending:
            self._count(*pending.result())
        self._pending.clear()

    def send_in_background(self) -> None:
        """Send exports from one background thread, so a backfill keeps generating spans while
        the receiver stores metrics (the two requests then use two receiver workers). Points
        are still built here, in the caller's thread: the period cells are not shared."""
        if self._sender is None:
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serving-metrics")

    def close(self) -> None:
        self.drain()
        if self._sender is not None:
            self._sender.shutdown()
            self._sender = None

    def _count(self, ok: bool, points: int) -> None:
        if ok:
            self.exported_points += points
        else:
            self.failed_exports += 1

    # ------------------------------------------------------------------ building the points

    def _export(self, periods: Sequence[int]) -> None:
        resource_metrics = []
        for instance, _ in VLLM_INSTANCES:
            gpu_metrics: dict[str, list[NumberDataPoint]] = defaultdict(list)
            vllm_gauges: dict[str, list[NumberDataPoint]] = defaultdict(list)
            vllm_sums: dict[str, list[NumberDataPoint]] = defaultdict(list)
            vllm_histograms: dict[str, list[HistogramDataPoint]] = defaultdict(list)
            for period_start in periods:
                cell = self._periods.pop((instance, period_start), None) or _Period()
                time_ns = period_start + self.sample_ns - NS_PER_S  # inside its period
                self._gpu_points(instance, cell, time_ns, gpu_metrics)
                self._vllm_points(instance, cell, time_ns, vllm_gauges, vllm_sums, vllm_histograms)
            resource_metrics.append(
                _resource_metrics(
                    {"service.name": SAMPLER_SERVICE, "host.name": instance, "service.instance.id": instance},
                    "observatory.gpu_sampler",
                    [_gauge_or_counter(name, points) for name, points in gpu_metrics.items()],
                )
            )
            vllm_metrics = [Metric(name, None, "1" if "perc" in name else "{request}", Gauge(points))
                            for name, points in vllm_gauges.items()]  # fmt: skip
            vllm_metrics += [
                Metric(name, None, COUNTERS.get(name, "{request}"),
                       Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True))
                for name, points in vllm_sums.items()
            ]  # fmt: skip
            vllm_metrics += [
                Metric(name, None, "s", Histogram(points, AggregationTemporality.CUMULATIVE))
                for name, points in vllm_histograms.items()
            ]
            resource_metrics.append(
                _resource_metrics(
                    {"service.name": VLLM_SERVICE, "service.version": VLLM_VERSION, "service.instance.id": instance},
                    "vllm",
                    vllm_metrics,
                )
            )
        data = MetricsData(resource_metrics)
        points = sum(
            len(metric.data.data_points) for rm in resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
        )
        if self._sender is None:
            self._count(*self._send(data, points))
            return
        # At most a few requests in flight: memory stays bounded when the receiver is slower.
        while len(self._pending) >= MAX_PENDING_EXPORTS:
            self._count(*self._pending.pop(0).result())
        self._pending.append(self._sender.submit(self._send, data, points))

    def _send(self, data: MetricsData, points: int) -> tuple[bool, int]:
        return self._exporter.export(data).name == "SUCCESS", points

    def _gpu_points(self, instance: str, cell: _Period, time_ns: int, out: dict[str, list[NumberDataPoint]]) -> None:
        sample_s = self.sample_ns / NS_PER_S
        gpus = VLLM_GPUS[instance]
        # Continuous batching keeps the GPU busy while any request is in the model; more requests
        # at once push utilisation up towards its ceiling. Shared evenly by the instance's GPUs.
        load = cell.in_model_s / sample_s
        utilisation = min(0.99, 0.02 + 0.97 * (1 - math.exp(-1.6 * load))) if load else 0.0
        running = load
        readings = []
        for index, gpu in enumerate(gpus):
            power_w = gpu.idle_watts + (gpu.max_watts - gpu.idle_watts) * utilisation
            self._energy_mj[gpu.uuid] += power_w * sample_s * 1000
            kv = min(1.0, running * KV_SHARE_PER_RUNNING)
            readings.append(
                GpuReading(
                    index=index,
                    uuid=gpu.uuid,
                    name=gpu.model,
                    gpu_util_percent=round(utilisation * 100, 1),
                    memory_util_percent=round(utilisation * 60, 1),
                    # vLLM reserves its share of memory up front (weights + KV cache pool).
                    memory_used_bytes=int(gpu.memory_bytes * (0.9 if kv else 0.88)),
                    memory_total_bytes=gpu.memory_bytes,
                    power_mw=power_w * 1000,
                    power_limit_mw=gpu.max_watts * 1000,
                    energy_mj=int(self._energy_mj[gpu.uuid]),
                    temperature_c=round(34 + 40 * utilisation, 1),
                    sm_clock_mhz=1980.0 if utilisation else 345.0,
                )
            )
        for name, values in observations(readings, self._energy).items():
            for value, attributes in values:
                start = self._covered_from or time_ns
                out[name].append(NumberDataPoint(attributes, start, time_ns, value))

    def _vllm_points(
        self,
        instance: str,
        cell: _Period,
        time_ns: int,
        gauges: dict[str, list[NumberDataPoint]],
        sums: dict[str, list[NumberDataPoint]],
        histograms: dict[str, list[HistogramDataPoint]],
    ) -> None:
        sample_s = self.sample_ns / NS_PER_S
        start = self._covered_from or time_ns
        labels = {"model_name": LLAMA_8B, "engine": "0"}
        running, waiting = cell.in_model_s / sample_s, cell.queued_s / sample_s
        gauges["vllm:num_requests_running"].append(NumberDataPoint(labels, start, time_ns, round(running, 3)))
        gauges["vllm:num_requests_waiting"].append(NumberDataPoint(labels, start, time_ns, round(waiting, 3)))
        kv = min(1.0, running * KV_SHARE_PER_RUNNING)
        gauges["vllm:kv_cache_usage_perc"].append(NumberDataPoint(labels, start, time_ns, round(kv, 4)))
        for name in COUNTERS:
            total = self._add(instance, name, (), cell.counters.get(name, 0.0))
            sums[name].append(NumberDataPoint(labels, start, time_ns, total))
        for reason in ("stop", "length", "tool_calls", "abort"):
            total = self._add(
                instance, "vllm:request_success", (("finished_reason", reason),), cell.finished.get(reason, 0)
            )
            attrs = {**labels, "finished_reason": reason}
            sums["vllm:request_success"].append(NumberDataPoint(attrs, start, time_ns, total))
        for name, bounds in HISTOGRAMS.items():
            key = (instance, name)
            buckets = self._buckets.setdefault(key, [0] * (len(bounds) + 1))
            low, high = self._extremes.get(key, (math.inf, -math.inf))
            for value in cell.observed.get(name, ()):
                buckets[_bucket(bounds, value)] += 1
                self._sums[key] += value
                low, high = min(low, value), max(high, value)
            self._extremes[key] = (low, high)
            count = sum(buckets)
            histograms[name].append(
                HistogramDataPoint(
                    labels,
                    start,
                    time_ns,
                    count,
                    self._sums[key],
                    list(buckets),
                    bounds,
                    low if count else 0.0,
                    high if count else 0.0,
                )
            )

    def _add(self, instance: str, name: str, extra: tuple[tuple[str, str], ...], amount: float) -> float:
        key = (instance, name, extra)
        self._totals[key] += amount
        return self._totals[key]


def _bucket(bounds: Sequence[float], value: float) -> int:
    for index, bound in enumerate(bounds):
        if value <= bound:
            return index
    return len(bounds)


def _gauge_or_counter(name: str, points: list[NumberDataPoint]) -> Metric:
    from collectors.gpu_sampler import _UNITS
    from collectors.prometheus import GPU_ENERGY

    if name == GPU_ENERGY:
        return Metric(name, None, _UNITS[name], Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True))
    return Metric(name, None, _UNITS[name], Gauge(points))


def _resource_metrics(resource: dict[str, Any], scope: str, metrics: list[Metric]) -> ResourceMetrics:
    return ResourceMetrics(
        Resource.create(resource), [ScopeMetrics(InstrumentationScope(scope, VLLM_VERSION), metrics, "")], ""
    )


__all__ = ["ServedCall", "ServingMetrics", "SimulatedGpu"]
