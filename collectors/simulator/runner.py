"""Run a simulation: plan requests, emit their spans, export them over OTLP/HTTP.

Backfill goes as fast as the receiver accepts; live mode paces requests in real time. Both push
through one BatchSpanProcessor whose exporter is the stock OTLP/HTTP exporter (or whatever a
test injects), so what arrives is exactly what an instrumented app would send.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType

from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from tqdm import tqdm

from collectors.simulator.emit import SpanEmitter, call_start_ns, vllm_arrival_ns
from collectors.simulator.incidents import Incident, parse_incident
from collectors.simulator.plan import RequestPlan, plan_request
from collectors.simulator.serving import DEFAULT_SAMPLE_S, ServedCall, ServingMetrics
from collectors.simulator.summary import SimulationSummary
from collectors.simulator.traffic import (
    BIN_S,
    NS_PER_S,
    Arrival,
    draw_arrivals,
    from_ns,
    mean_overall_load,
    overall_load,
    pick_feature,
    pick_tenant,
    to_ns,
)

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
# ~21k traces for a 7-day backfill: a busy-looking week that loads in well under a minute.
DEFAULT_REQUESTS_PER_DAY = 3000
DEFAULT_LIVE_RATE_PER_MIN = 60.0
PROTOCOLS = ("protobuf", "json")
# Long enough that a receiver answering 503 + Retry-After while its database restarts gets
# retried (the exporter retries 429/502/503/504 until this deadline), not dropped.
EXPORT_TIMEOUT_S = 30.0
MAX_EXPORT_BATCH_SIZE = 512
MAX_QUEUE_SIZE = 65_536
# The processor drops spans when its queue is full; generation pauses well before that.
BACKLOG_HIGH_WATER = MAX_QUEUE_SIZE // 2
BACKLOG_LOW_WATER = MAX_QUEUE_SIZE // 8
LIVE_METRICS_LAG_NS = 120 * NS_PER_S
# Arrivals come in time order and every call of a request starts after its arrival; only
# requests moved back to finish by the backfill's end start earlier, by far less than this.
BACKFILL_METRICS_LAG_NS = 3600 * NS_PER_S
# With --older-requests-per-day: the last days keep the full rate (the detectors' "same hours
# last week" and the weekly review's two weeks need full-rate traffic to compare).
DEFAULT_FULL_RATE_DAYS = 22.0


def traces_url(endpoint: str) -> str:
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def metrics_url(endpoint: str) -> str:
    endpoint = endpoint.rstrip("/")
    if endpoint.endswith("/v1/traces"):
        endpoint = endpoint[: -len("/v1/traces")]
    return endpoint if endpoint.endswith("/v1/metrics") else f"{endpoint}/v1/metrics"


def build_metric_exporter(
    endpoint: str = DEFAULT_ENDPOINT, key: str | None = None, timeout_s: float = EXPORT_TIMEOUT_S
) -> MetricExporter:
    """The stock OTLP/HTTP (protobuf) metric exporter posting to ENDPOINT/v1/metrics."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return OTLPMetricExporter(metrics_url(endpoint), headers=headers, timeout=timeout_s)


def build_exporter(
    endpoint: str = DEFAULT_ENDPOINT,
    key: str | None = None,
    protocol: str = "protobuf",
    gzip: bool = False,
    timeout_s: float = EXPORT_TIMEOUT_S,
) -> SpanExporter:
    """The stock OTLP/HTTP span exporter posting to ENDPOINT/v1/traces with a bearer key."""
    from opentelemetry.exporter.otlp.common.http import Compression

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    compression = Compression.GZIP if gzip else Compression.NONE
    if protocol == "protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as ProtoExporter

        return ProtoExporter(traces_url(endpoint), headers=headers, timeout=timeout_s, compression=compression)
    if protocol == "json":
        from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as JsonExporter

        return JsonExporter(traces_url(endpoint), headers=headers, timeout=timeout_s, compression=compression)
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


class _CountingExporter(SpanExporter):
    """Counts what the real exporter accepted or gave up on, so generation can wait for it."""

    def __init__(self, inner: SpanExporter, owns_inner: bool) -> None:
        self._inner = inner
        self._owns_inner = owns_inner
        self._settled = threading.Condition()
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            logger.exception("span exporter raised")
            result = SpanExportResult.FAILURE
        with self._settled:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
            self._settled.notify_all()
        return result

    def wait_for_backlog(self, emitted: int, below: int, timeout_s: float) -> None:
        with self._settled:
            self._settled.wait_for(lambda: emitted - self.exported - self.failed <= below, timeout=timeout_s)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        # An injected exporter (a test's in-memory one) stays readable after the run.
        if self._owns_inner:
            self._inner.shutdown()


class Simulator:
    """One simulation session: backfill and/or live, sharing exporter, incidents and summary."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        key: str | None = None,
        *,
        protocol: str = "protobuf",
        seed: int | None = None,
        incidents: Sequence[str | Incident] = (),
        now: datetime | None = None,
        exporter: SpanExporter | None = None,
        gzip: bool = False,
        schedule_delay_ms: float = 1000,
        metric_exporter: MetricExporter | None = None,
        serving_metrics: bool | None = None,
        sample_s: int = DEFAULT_SAMPLE_S,
    ) -> None:
        self.now = now or datetime.now(UTC)
        self.seed = seed if seed is not None else secrets.randbits(32)
        # Parse before opening anything: a typo in an incident should fail fast and cleanly.
        self.incidents = [i if isinstance(i, Incident) else parse_incident(i, self.now) for i in incidents]
        real = exporter if exporter is not None else build_exporter(endpoint, key, protocol, gzip)
        self._exporter = _CountingExporter(real, owns_inner=exporter is None)
        self._processor = BatchSpanProcessor(
            self._exporter,
            max_queue_size=MAX_QUEUE_SIZE,
            schedule_delay_millis=schedule_delay_ms,
            max_export_batch_size=MAX_EXPORT_BATCH_SIZE,
        )
        self._emitter = SpanEmitter(self._processor)
        # The serving tier's GPU samples and vLLM series go to /v1/metrics beside the spans; with
        # an injected span exporter (a test) only when a metric exporter is injected too.
        if serving_metrics is None:
            serving_metrics = exporter is None or metric_exporter is not None
        self._metric_exporter: MetricExporter | None = None
        self.serving: ServingMetrics | None = None
        if serving_metrics:
            self._metric_exporter = metric_exporter or build_metric_exporter(endpoint, key)
            self.serving = ServingMetrics(self._metric_exporter, sample_s)
        self._owns_metric_exporter = metric_exporter is None
        self._metrics_until_ns = 0
        self._emitted_spans = 0
        self._started = time.monotonic()
        self._closed = False
        self.summary = SimulationSummary(seed=self.seed)

    def backfill(
        self,
        start: datetime,
        end: datetime,
        requests: int | None = None,
        *,
        requests_per_day: float = DEFAULT_REQUESTS_PER_DAY,
        progress: bool = False,
        older_requests_per_day: float | None = None,
        full_rate_days: float = DEFAULT_FULL_RATE_DAYS,
    ) -> SimulationSummary:
        """Emit `requests` traces (default: requests_per_day over the range) in [start, end].

        `older_requests_per_day`: days more than `full_rate_days` before `end` get this rate
        instead (with `requests` unset), so weeks of baseline history load quickly.
        """
        start_ns, end_ns = to_ns(start), to_ns(end)
        if end_ns <= start_ns:
            raise ValueError("backfill end must be after its start")
        day_ns = 86400 * NS_PER_S
        # The range is part of the seed material: the same seed over a different range gives new
        # trace ids, so a second backfill is not swallowed by the receiver's idempotency.
        base = f"{self.seed}:{start_ns}:{end_ns}"
        split_ns = end_ns - int(full_rate_days * day_ns)
        if requests is None and older_requests_per_day is not None and start_ns < split_ns:
            # Two draws; the recent one keeps the whole range's seed material, so the last
            # days are the same whatever the older rate.
            older = round(older_requests_per_day * (split_ns - start_ns) / day_ns)
            recent = round(requests_per_day * (end_ns - split_ns) / day_ns)
            arrivals = draw_arrivals(
                random.Random(f"{base}:older"), start_ns, split_ns, older, f"{base}:older-req"
            ) + draw_arrivals(random.Random(f"{base}:arrivals"), split_ns, end_ns, recent, f"{base}:req")
        else:
            if requests is None:
                requests = round(requests_per_day * (end_ns - start_ns) / day_ns)
            arrivals = draw_arrivals(random.Random(f"{base}:arrivals"), start_ns, end_ns, requests, f"{base}:req")
        self.summary.start, self.summary.end = start, end
        arrivals = self._apply_traffic_incidents(arrivals, end_ns)
        if self.serving is not None:
            # GPUs are paid for (and sampled) over the whole range, busy or not.
            self.serving.cover(start_ns)
            self._metrics_until_ns = max(self._metrics_until_ns, end_ns)
            self.serving.send_in_background()
        with tqdm(total=len(arrivals), unit="req", disable=not progress, desc="backfill") as bar:
            for index, arrival in enumerate(arrivals):
                req = plan_request(arrival, self.incidents)
                # A request near the end finishes by `end`: no spans from the future.
                duration_ns = int(req.duration_s * NS_PER_S)
                if req.start_ns + duration_ns > end_ns:
                    req.start_ns = max(start_ns, end_ns - duration_ns)
                self._emit(req)
                bar.update()
                if self.serving is not None and index % 256 == 0:
                    # Periods well behind the arrivals are complete: send them while spans go on.
                    self.serving.flush(arrival.at_ns - BACKFILL_METRICS_LAG_NS, whole_exports_only=True)
        return self.summary

    def live(
        self,
        rate_per_min: float = DEFAULT_LIVE_RATE_PER_MIN,
        *,
        stop: threading.Event | None = None,
        duration_s: float | None = None,
        progress: bool = False,
        shaped: bool = False,
    ) -> SimulationSummary:
        """Emit requests as a Poisson stream at `rate_per_min` until `stop` is set or `duration_s` passes.

        Each trace ends as it is emitted (it started its duration ago), like a real app's spans.
        `shaped`: `rate_per_min` is the weekly average and the rate follows the tenants' daily
        and weekly load, as a backfill's arrivals do (so live traffic continues a backfilled
        history at the same volume instead of jumping to a flat rate).
        """
        if rate_per_min <= 0:
            raise ValueError("live rate must be positive")
        stop = stop or threading.Event()
        started_ns = time.time_ns()
        rng = random.Random(f"{self.seed}:live:{started_ns}")
        deadline = time.monotonic() + duration_s if duration_s is not None else None
        next_at = time.monotonic()
        index = 0
        mean_load = mean_overall_load() if shaped else 1.0
        with tqdm(unit="req", disable=not progress, desc="live") as bar:
            while True:
                rate = rate_per_min * (overall_load(datetime.now(UTC)) / mean_load if shaped else 1.0)
                next_at += rng.expovariate(max(rate, 1e-3) / 60)
                if deadline is not None and next_at > deadline:
                    stop.wait(max(0.0, deadline - time.monotonic()))
                    break
                if stop.wait(max(0.0, next_at - time.monotonic())):
                    break
                now_ns = time.time_ns()
                tenant = pick_tenant(rng, from_ns(now_ns))
                arrival = Arrival(
                    now_ns, tenant.name, pick_feature(rng, tenant), f"{self.seed}:live:{started_ns}:{index}"
                )
                index += 1
                for each in self._apply_traffic_incidents([arrival], None):
                    req = plan_request(each, self.incidents)
                    req.start_ns = now_ns - int(req.duration_s * NS_PER_S)
                    self._emit(req)
                    bar.update()
                if self.serving is not None:
                    self.serving.cover(started_ns)
                    self._metrics_until_ns = now_ns
                    # Spans are emitted as they end, so a period is complete once the longest
                    # call that could still land in it has ended.
                    self.serving.flush(now_ns - LIVE_METRICS_LAG_NS)
        return self.summary

    def _apply_traffic_incidents(self, arrivals: list[Arrival], end_ns: int | None) -> list[Arrival]:
        """Add (or thin out) arrivals where an incident changes a tenant's traffic."""
        shaped = [i for i in self.incidents if type(i).traffic_multiplier is not Incident.traffic_multiplier]
        if not shaped:
            return arrivals
        out: list[Arrival] = []
        for arrival in arrivals:
            multiplier = 1.0
            for incident in shaped:
                multiplier *= incident.traffic_multiplier(arrival.tenant, arrival.feature, arrival.at_ns)
            if multiplier == 1.0:
                out.append(arrival)
                continue
            rng = random.Random(f"{arrival.key}:traffic")
            whole, fraction = divmod(multiplier, 1.0)
            copies = int(whole) + (rng.random() < fraction)
            for n in range(copies):
                if n == 0:
                    out.append(arrival)
                    continue
                # Extra requests land shortly after the one they copy, never past the range.
                at_ns = arrival.at_ns + int(rng.random() * BIN_S * NS_PER_S)
                if end_ns is not None:
                    at_ns = min(at_ns, end_ns - 1)
                out.append(Arrival(at_ns, arrival.tenant, arrival.feature, f"{arrival.key}:extra:{n}"))
        out.sort(key=lambda a: a.at_ns)
        return out

    def _emit(self, req: RequestPlan) -> None:
        counts = self._emitter.emit(req)
        if self.serving is not None:
            for call in req.calls:
                if call.vllm is not None:
                    self.serving.record(
                        ServedCall(
                            instance=call.vllm.instance,
                            arrival_ns=vllm_arrival_ns(call_start_ns(req, call)),
                            queue_s=call.vllm.queue_s,
                            prefill_s=call.vllm.prefill_s,
                            decode_s=call.vllm.decode_s,
                            prompt_tokens=call.input_tokens,
                            output_tokens=call.output_tokens,
                            finish_reason="abort" if call.vllm.aborted else call.finish_reason,
                        )
                    )
        self.summary.record(req, counts)
        self._emitted_spans += counts.spans
        # Backpressure: a slow receiver slows generation down instead of overflowing the queue.
        if self._emitted_spans - self._exporter.exported - self._exporter.failed > BACKLOG_HIGH_WATER:
            while self._emitted_spans - self._exporter.exported - self._exporter.failed > BACKLOG_LOW_WATER:
                self._exporter.wait_for_backlog(self._emitted_spans, BACKLOG_LOW_WATER, EXPORT_TIMEOUT_S)

    def flush(self) -> None:
        self._processor.force_flush()
        self.summary.exported_spans = self._exporter.exported
        self.summary.failed_spans = self._exporter.failed
        if self.serving is not None:
            self.serving.flush(self._metrics_until_ns)
            self.serving.drain()
            self.summary.metric_points = self.serving.exported_points
            self.summary.failed_metric_exports = self.serving.failed_exports

    def close(self) -> SimulationSummary:
        if not self._closed:
            self._closed = True
            self.flush()
            self._processor.shutdown()
            if self.serving is not None:
                self.serving.close()
            if self._metric_exporter is not None and self._owns_metric_exporter:
                self._metric_exporter.shutdown()
            self.summary.elapsed_s = time.monotonic() - self._started
        return self.summary

    def __enter__(self) -> Simulator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def simulate(
    endpoint: str = DEFAULT_ENDPOINT,
    key: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    requests: int | None = None,
    protocol: str = "protobuf",
    seed: int | None = None,
    incidents: Sequence[str | Incident] = (),
    progress: bool = False,
    *,
    exporter: SpanExporter | None = None,
    requests_per_day: float = DEFAULT_REQUESTS_PER_DAY,
    gzip: bool = False,
    metric_exporter: MetricExporter | None = None,
) -> SimulationSummary:
    """Backfill [start, end] (default: the 7 days up to now) and return what was sent.

    `requests` defaults to `requests_per_day` over the range. Relative incident times count
    from `end`. Pass `exporter` (an InMemorySpanExporter, say) to keep spans in-process; then
    `endpoint`, `key`, `protocol` and `gzip` are unused.
    """
    end = end or datetime.now(UTC)
    start = start or end - timedelta(days=7)
    with Simulator(
        endpoint,
        key,
        protocol=protocol,
        seed=seed,
        incidents=incidents,
        now=end,
        exporter=exporter,
        gzip=gzip,
        metric_exporter=metric_exporter,
    ) as sim:
        sim.backfill(start, end, requests, requests_per_day=requests_per_day, progress=progress)
    return sim.summary


def run_live(
    endpoint: str = DEFAULT_ENDPOINT,
    key: str | None = None,
    rate_per_min: float = DEFAULT_LIVE_RATE_PER_MIN,
    protocol: str = "protobuf",
    seed: int | None = None,
    incidents: Sequence[str | Incident] = (),
    *,
    stop: threading.Event | None = None,
    duration_s: float | None = None,
    exporter: SpanExporter | None = None,
    gzip: bool = False,
) -> SimulationSummary:
    """Generate live traffic until `stop` is set or `duration_s` passes; flushes before returning."""
    with Simulator(
        endpoint, key, protocol=protocol, seed=seed, incidents=incidents, exporter=exporter, gzip=gzip
    ) as sim:
        sim.live(rate_per_min, stop=stop, duration_s=duration_s)
    return sim.summary
