"""The GPU tier page's figures: per GPU, per engine, latency from vLLM's histograms, and cost.

GPU-level figures (utilisation, memory, power, energy, the engines' own series, idle cost)
have no tenant dimension: the view shows them only to people who see every tenant.
Attributed cost by tenant and feature comes from the metrics query layer (provider vllm),
scoped like every other figure.

Series are read bucketed by `step` (date_bin), one round trip per figure. Percentiles from
vLLM's explicit histograms are estimated as Prometheus' histogram_quantile does: linear
within the bucket holding the rank (a bucket's lower edge is the previous bound, 0 for the
first); a rank in the +Inf bucket reads the highest finite bound.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import plotly.io as pio
from django.db import connection

from apps.dashboard import charts
from apps.dashboard.charts import Chart
from apps.gpu.models import CostInterval
from apps.metrics.query import Filters, Query, Scope, run_query
from collectors.prometheus import GPU_ENERGY, GPU_MEMORY_USAGE, GPU_POWER, GPU_UTILIZATION

EPOCH = "2000-01-01T00:00:00+00:00"
STEPS = (60, 300, 900, 3600, 6 * 3600, 86400)  # seconds; the finest giving at most ~150 points
_CONFIG = {"displaylogo": False, "responsive": True}


def step_for(start: datetime, end: datetime) -> int:
    seconds = (end - start).total_seconds()
    return next((step for step in STEPS if seconds / step <= 150), STEPS[-1])


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    step: int
    range_text: str

    @property
    def step_text(self) -> str:
        return f"{self.step // 60} min" if self.step < 3600 else f"{self.step // 3600} h"


# ---------------------------------------------------------------------------- reads


# Series by the (project_id, name) index, points by the primary key within the range's partitions.
_GAUGE_SQL = """
SELECT date_bin(make_interval(secs => %(step)s), p.time, %(epoch)s::timestamptz) AS t, {label} AS label,
       avg(p.value), count(*)
FROM gpu_metric_series AS s
JOIN gpu_metric_point AS p ON p.project_id = s.project_id AND p.series_id = s.series_id
WHERE s.name = %(name)s AND p.time >= %(start)s AND p.time < %(end)s AND p.value IS NOT NULL
GROUP BY 1, 2 ORDER BY 1, 2
"""
_INCREASE_SQL = """
SELECT date_bin(make_interval(secs => %(step)s), p.time, %(epoch)s::timestamptz) AS t, {label} AS label,
       sum(p.increase), count(*)
FROM gpu_metric_series AS s
JOIN gpu_metric_point AS p ON p.project_id = s.project_id AND p.series_id = s.series_id
WHERE s.name = %(name)s AND p.time >= %(start)s AND p.time < %(end)s AND p.increase IS NOT NULL
GROUP BY 1, 2 ORDER BY 1, 2
"""
_HISTOGRAM_SQL = """
SELECT date_bin(make_interval(secs => %(step)s), p.time, %(epoch)s::timestamptz) AS t, p.bounds, p.interval_buckets
FROM gpu_metric_series AS s
JOIN gpu_metric_point AS p ON p.project_id = s.project_id AND p.series_id = s.series_id
WHERE s.name = %(name)s AND p.time >= %(start)s AND p.time < %(end)s AND p.interval_buckets IS NOT NULL
ORDER BY 1
"""
GPU_LABEL = (
    "coalesce(s.resource ->> 'service.instance.id', '') || ' GPU ' || coalesce(s.attributes ->> 'gpu.index', '?')"
)
INSTANCE_LABEL = "coalesce(s.resource ->> 'service.instance.id', s.resource ->> 'host.name', '')"


def _rows(sql: str, label: str, name: str, w: Window) -> list[tuple[datetime, str, float, int]]:
    params: dict[str, Any] = {"step": w.step, "epoch": EPOCH, "name": name, "start": w.start, "end": w.end}
    with connection.cursor() as cur:
        cur.execute(sql.format(label=label), params)
        return [(t, lab, float(v), int(n)) for t, lab, v, n in cur.fetchall() if v is not None]


def _pivot(
    rows: Sequence[tuple[datetime, str, float, int]], scale: float = 1.0
) -> tuple[list[dict[str, Any]], dict[str, str], int]:
    """(rows by time with one key per label, label -> key, sample count)."""
    by_time: dict[datetime, dict[str, Any]] = {}
    labels: dict[str, str] = {}
    samples = 0
    for t, label, value, count in rows:
        key = labels.setdefault(label or "(unnamed)", f"s{len(labels)}")
        by_time.setdefault(t, {"time": t})[key] = value * scale
        samples += count
    return [by_time[t] for t in sorted(by_time)], labels, samples


def series_chart(
    w: Window, sql: str, name: str, label: str, *, title: str, what: str, unit: str, scale: float = 1.0,
    kind: str = "line",
) -> Chart:  # fmt: skip
    rows, labels, samples = _pivot(_rows(sql, label, name, w), scale)
    html = charts.time_series(rows, labels, unit=unit, kind=kind) if rows else None
    return Chart(title, what, unit, w.range_text, samples, html)


def merged_histograms(name: str, w: Window) -> tuple[dict[datetime, tuple[list[float], list[int]]], int]:
    """Per time bucket: (bounds, summed interval bucket counts); points of another layout skipped."""
    with connection.cursor() as cur:
        cur.execute(_HISTOGRAM_SQL, {"step": w.step, "epoch": EPOCH, "name": name, "start": w.start, "end": w.end})
        merged: dict[datetime, tuple[list[float], list[int]]] = {}
        for t, bounds, buckets in cur.fetchall():
            into = merged.get(t)
            if into is None:
                merged[t] = (list(bounds), list(buckets))
            elif list(bounds) == into[0] and len(buckets) == len(into[1]):
                merged[t] = (into[0], [a + b for a, b in zip(into[1], buckets, strict=True)])
    samples = sum(sum(buckets) for _, buckets in merged.values())
    return merged, samples


def histogram_quantile(q: float, bounds: Sequence[float], buckets: Sequence[int]) -> float | None:
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index >= len(bounds):
                return bounds[-1] if bounds else None
            lower = bounds[index - 1] if index > 0 else 0.0
            return lower + (bounds[index] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1] if bounds else None


def percentile_chart(w: Window, name: str, *, title: str, what: str, quantiles: Sequence[float]) -> Chart:
    merged, samples = merged_histograms(name, w)
    rows = []
    for t in sorted(merged):
        bounds, buckets = merged[t]
        row: dict[str, Any] = {"time": t}
        for q in quantiles:
            value = histogram_quantile(q, bounds, buckets)
            row[f"p{round(q * 100)}"] = None if value is None else value * 1000
        rows.append(row)
    series = {f"p{round(q * 100)}": f"p{round(q * 100)}" for q in quantiles}
    html = charts.time_series(rows, series, unit="ms") if samples else None
    return Chart(title, what + " Estimated from vLLM's histogram buckets, linear within a bucket.", "ms",
                 w.range_text, samples, html)  # fmt: skip


# ---------------------------------------------------------------------------- GPU-level panels


def gpu_panels(w: Window) -> list[Chart]:
    per = f"per {w.step_text}"
    return [
        series_chart(w, _GAUGE_SQL, GPU_UTILIZATION, GPU_LABEL, title="GPU utilisation", unit="%", scale=100,
                     what=f"Share of time each GPU's kernels ran (NVML / DCGM), averaged {per}."),
        series_chart(w, _GAUGE_SQL, GPU_MEMORY_USAGE, GPU_LABEL, title="GPU memory used", unit="GiB",
                     scale=1 / 1024**3, what=f"Framebuffer memory in use on each GPU, averaged {per}."),
        series_chart(w, _GAUGE_SQL, GPU_POWER, GPU_LABEL, title="GPU power draw", unit="W",
                     what=f"Board power of each GPU, averaged {per}."),
        series_chart(w, _INCREASE_SQL, GPU_ENERGY, GPU_LABEL, title="GPU energy", unit="kWh", kind="bar",
                     scale=1 / 3.6e6, what=f"Energy each GPU used {per} (counter increases, right across restarts)."),
    ]  # fmt: skip


def engine_panels(w: Window) -> list[Chart]:
    per = f"per {w.step_text}"
    running = _rows(_GAUGE_SQL, INSTANCE_LABEL, "vllm:num_requests_running", w)
    waiting = _rows(_GAUGE_SQL, INSTANCE_LABEL, "vllm:num_requests_waiting", w)
    scheduler = [(t, f"{lab} running", v, n) for t, lab, v, n in running] + [
        (t, f"{lab} waiting", v, n) for t, lab, v, n in waiting
    ]
    rows, labels, samples = _pivot(scheduler)
    scheduler_chart = Chart("Scheduler state", f"Requests running and waiting in each engine, averaged {per}.",
                            "requests", w.range_text, samples,
                            charts.time_series(rows, labels, unit="requests") if rows else None)  # fmt: skip
    prompt = _rows(_INCREASE_SQL, "'prompt'", "vllm:prompt_tokens", w)
    generated = _rows(_INCREASE_SQL, "'generation'", "vllm:generation_tokens", w)
    rows, labels, samples = _pivot([*prompt, *generated], 1 / w.step)
    throughput = Chart("Token throughput", f"Prompt and generation tokens per second, all engines, {per}.",
                       "tokens/s", w.range_text, samples,
                       charts.time_series(rows, labels, unit="tokens/s") if rows else None)  # fmt: skip
    return [
        scheduler_chart,
        throughput,
        series_chart(w, _GAUGE_SQL, "vllm:kv_cache_usage_perc", INSTANCE_LABEL, title="KV-cache usage", unit="%",
                     scale=100, what=f"Share of each engine's KV-cache blocks in use, averaged {per}."),
        prefix_cache_chart(w),
        series_chart(w, _INCREASE_SQL, "vllm:num_preemptions", INSTANCE_LABEL, title="Preemptions", kind="bar",
                     unit="preemptions", what=f"Requests preempted (KV cache full) {per}, by engine."),
        finish_reasons_chart(w),
        percentile_chart(w, "vllm:e2e_request_latency_seconds", title="End-to-end request latency",
                         what="p50, p90, p95, p99 of vLLM's request latency.", quantiles=(0.5, 0.9, 0.95, 0.99)),
        percentile_chart(w, "vllm:time_to_first_token_seconds", title="Time to first token",
                         what="p50, p95, p99 of vLLM's TTFT (queue + prefill).", quantiles=(0.5, 0.95, 0.99)),
        percentile_chart(w, "vllm:inter_token_latency_seconds", title="Inter-token latency",
                         what="p50, p95, p99 of the time between output tokens.", quantiles=(0.5, 0.95, 0.99)),
        percentile_chart(w, "vllm:request_queue_time_seconds", title="Queue time",
                         what="p50, p95, p99 of time waiting for the scheduler.", quantiles=(0.5, 0.95, 0.99)),
        percentile_chart(w, "vllm:request_prefill_time_seconds", title="Prefill time",
                         what="p50, p95, p99 of time in prefill.", quantiles=(0.5, 0.95, 0.99)),
        percentile_chart(w, "vllm:request_decode_time_seconds", title="Decode time",
                         what="p50, p95, p99 of time in decode.", quantiles=(0.5, 0.95, 0.99)),
        length_heatmap(w, "input_tokens", "Prompt length"),
        length_heatmap(w, "output_tokens", "Generation length"),
    ]  # fmt: skip


def prefix_cache_chart(w: Window) -> Chart:
    hits = {(t, lab): v for t, lab, v, _ in _rows(_INCREASE_SQL, INSTANCE_LABEL, "vllm:prefix_cache_hits", w)}
    queries = _rows(_INCREASE_SQL, INSTANCE_LABEL, "vllm:prefix_cache_queries", w)
    ratio = [(t, lab, hits.get((t, lab), 0.0) / v, n) for t, lab, v, n in queries if v > 0]
    rows, labels, samples = _pivot(ratio, 100)
    return Chart("Prefix-cache hit rate", f"Prompt tokens found in the prefix cache / prompt tokens looked up, per "
                 f"{w.step_text} (increases, right across restarts).", "%", w.range_text, samples,
                 charts.time_series(rows, labels, unit="%") if rows else None)  # fmt: skip


def finish_reasons_chart(w: Window) -> Chart:
    label = "coalesce(s.attributes ->> 'finished_reason', '')"
    rows = _rows(_INCREASE_SQL, label, "vllm:request_success", w)
    totals: dict[str, float] = defaultdict(float)
    for _, reason, value, _ in rows:
        totals[reason or "(none)"] += value
    kept = {reason: value for reason, value in sorted(totals.items(), key=lambda kv: -kv[1]) if value}
    html = charts.bars(list(kept), list(kept.values()), unit="requests") if kept else None
    return Chart("Finish reasons", "Finished requests by vLLM's finished_reason over the range.", "requests",
                 w.range_text, int(sum(kept.values())), html)  # fmt: skip


# Server spans' token counts by time bucket and power-of-two length band (the engine's own
# view: GPU-level, no tenant dimension). BRIN on start_time bounds the scan.
_LENGTHS_SQL = """
SELECT date_bin(make_interval(secs => %(step)s), s.start_time, %(epoch)s::timestamptz) AS t,
       floor(log(2, greatest(s.{column}, 1)))::int AS band, count(*)
FROM telemetry_span AS s
WHERE s.is_llm AND s.kind = 2 AND s.provider = 'vllm' AND s.{column} IS NOT NULL
  AND s.start_time >= %(start)s AND s.start_time < %(end)s
GROUP BY 1, 2 ORDER BY 1, 2
"""


def length_heatmap(w: Window, column: str, title: str) -> Chart:
    with connection.cursor() as cur:
        cur.execute(
            _LENGTHS_SQL.format(column=column), {"step": w.step, "epoch": EPOCH, "start": w.start, "end": w.end}
        )
        rows = cur.fetchall()
    samples = sum(count for _, _, count in rows)
    html = None
    if rows:
        times = sorted({t for t, _, _ in rows})
        bands = list(range(min(b for _, b, _ in rows), max(b for _, b, _ in rows) + 1))
        grid = {(t, b): c for t, b, c in rows}
        z = [[grid.get((t, b), 0) for t in times] for b in bands]
        figure = charts.figure_dict(
            [{"type": "heatmap", "x": times, "y": [f"{2**b:,}-{2 ** (b + 1) - 1:,}" for b in bands], "z": z,
              "colorscale": "Blues", "colorbar": {"title": {"text": "requests"}}}],
            unit="tokens",
        )  # fmt: skip
        html = _to_html(figure)
    return Chart(f"{title} heatmap", f"vLLM requests per {w.step_text} by {title.lower()} (power-of-two bands), "
                 "from the engine's llm_request spans.", "tokens", w.range_text, samples, html)  # fmt: skip


def _to_html(figure: dict[str, Any]) -> str:
    return str(pio.to_html(figure, full_html=False, include_plotlyjs=False, config=_CONFIG, validate=charts.VALIDATE))


# ---------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class CostSummary:
    gpu_cost: Decimal
    attributed: Decimal
    idle: Decimal
    gpu_hours: float
    intervals: int
    unpriced_intervals: int
    requests: int

    @property
    def idle_share(self) -> float | None:
        return float(self.idle / self.gpu_cost) if self.gpu_cost else None


def cost_summary(w: Window) -> CostSummary:
    rows = CostInterval.objects.filter(start__gte=w.start, start__lt=w.end, gpus__gt=0)
    gpu = attributed = idle = Decimal(0)
    hours = 0.0
    unpriced = count = requests = 0
    for row in rows.only("gpu_cost_usd", "attributed_usd", "idle_usd", "gpus", "seconds", "requests"):
        count += 1
        requests += row.requests
        hours += row.gpus * row.seconds / 3600
        if row.gpu_cost_usd is None:
            unpriced += 1
            continue
        gpu += row.gpu_cost_usd
        attributed += row.attributed_usd or 0
        idle += row.idle_usd or 0
    return CostSummary(gpu, attributed, idle, hours, count, unpriced, requests)


def idle_cost_chart(w: Window) -> Chart:
    with connection.cursor() as cur:
        cur.execute(
            """
            SELECT date_bin(make_interval(secs => %(step)s), start, %(epoch)s::timestamptz) AS t,
                   sum(attributed_usd), sum(idle_usd), count(*)
            FROM gpu_costinterval
            WHERE start >= %(start)s AND start < %(end)s AND gpus > 0 AND gpu_cost_usd IS NOT NULL
            GROUP BY 1 ORDER BY 1
            """,
            {"step": max(w.step, 300), "epoch": EPOCH, "start": w.start, "end": w.end},
        )
        rows = [{"time": t, "attributed": a, "idle": i} for t, a, i, _ in cur.fetchall()]
    html = charts.time_series(rows, {"attributed to requests": "attributed", "idle": "idle"}, unit="USD",
                              kind="bar", stacked=True) if rows else None  # fmt: skip
    return Chart("GPU cost: attributed and idle", "What the GPUs cost (GPUs x price x time), split into the share "
                 "requests used (time in the model) and capacity nobody used (idle).", "USD", w.range_text,
                 len(rows), html)  # fmt: skip


def attributed_by(w: Window, scope: Scope, dimension: str, filters: Filters) -> tuple[Chart, list[dict[str, Any]]]:
    query = Query(("cost_usd", "requests", "input_tokens", "output_tokens"), w.start, w.end,
                  filters=Filters(**{**filters.__dict__, "providers": ("vllm",)}), group_by=(dimension,))  # fmt: skip
    rows = [row for row in run_query(query, scope).rows if row["requests"]]
    rows.sort(key=lambda row: -(row["cost_usd"] or 0))
    html = charts.bars([row[dimension] or "(unattributed)" for row in rows], [row["cost_usd"] for row in rows],
                       unit="USD") if rows else None  # fmt: skip
    chart = Chart(f"Self-hosted cost by {dimension}", f"GPU cost attributed to vLLM calls, by {dimension} (from the "
                  "metrics query layer; idle capacity is not spread).", "USD", w.range_text,
                  sum(row["requests"] for row in rows), html)  # fmt: skip
    return chart, rows


def window_for(start: datetime, end: datetime, range_text: str) -> Window:
    return Window(start, end, step_for(start, end), range_text)


def has_gpu_data(w: Window) -> bool:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT EXISTS (SELECT 1 FROM gpu_metric_series s JOIN gpu_metric_point p ON p.project_id = s.project_id "
            "AND p.series_id = s.series_id WHERE s.name = ANY(%s) AND p.time >= %s AND p.time < %s)",
            [[GPU_UTILIZATION, GPU_POWER, "vllm:num_requests_running"], w.start, w.end],
        )
        return bool(cur.fetchone()[0])
