"""What self-hosted calls cost: each interval's GPU cost shared among the requests the GPUs
served, the rest shown as idle (docs/gpu.md, "Self-hosted cost").

For one interval [a, b) of GPU_COST_INTERVAL_SECONDS and one GPU pool (the GPUs whose series
name one instance: resource service.instance.id, else host.name):

- **GPU cost** = sum over the pool's GPUs that reported any presence series in [a, b) (a GPU
  that reported was paid for) of price x interval length, each GPU's figure rounded half up
  to 1e-10 USD. The price is the GpuPrice row of the instance's provider whose pattern
  matches the GPU model, in force at a.
- **Work** of a request = microseconds its vLLM llm_request span spent in the model (prefill
  then decode, vLLM's measured gen_ai.latency.time_in_model_prefill / _decode) that fall in
  [a, b): the in-model window starts at arrival + queue time.
- **Busy time** = the length of the union of the requests' in-model windows inside [a, b):
  while any request is in the model, the whole pool is serving (continuous batching).
- **Attributed** = GPU cost x busy / interval (half up), split among the requests in
  proportion to their work (largest remainder, so the shares add up to it exactly); **idle**
  = GPU cost - attributed. No request: all idle.

All money is integer units of 1e-10 USD until it is written, so attributed + idle == GPU
cost exactly. A request's share is written on its call's span (the carrier: the LLM span it
is nested in when that span has no price of its own, else the server span itself) as
telemetry_span.cost_usd with cost_source 'attributed', summed over every interval its work
touched (CostShare keeps each share). An interval is recomputed from scratch in one
transaction that also writes the DirtyHour notes of the spans it changed, so running it
twice changes nothing and the rollups re-read exactly what changed.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from apps.gpu.models import CostInterval, CostShare, GpuPrice, ServingInstance
from apps.pricing.providers import SELF_HOSTED_PROVIDERS
from collectors.prometheus import GPU_MEMORY_USAGE, GPU_POWER, GPU_UTILIZATION

log = logging.getLogger(__name__)

ATTRIBUTED = "attributed"
# A GPU counts as present in an interval when any of these series has a point in it.
PRESENCE_SERIES = (GPU_UTILIZATION, GPU_POWER, GPU_MEMORY_USAGE)
# A request is looked for this long before the interval: its work may have started earlier.
MAX_REQUEST = timedelta(hours=1)
# Money: integer units of 1e-10 USD, the scale telemetry_span.cost_usd keeps.
UNITS_PER_USD = 10**10
MICROS_PER_USD = 10**6  # GpuPrice.usd_per_gpu_hour has 6 decimal places
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
SPAN_KIND_SERVER = 2
# The pool of self-hosted calls that reached no engine: no GPU, $0 each.
UNSERVED_POOL = "(no engine)"
_LOCK_CLASS = 7_310_201  # pg_advisory_xact_lock(class, project): one recompute per project at a time


def interval_seconds() -> int:
    return int(settings.GPU_COST_INTERVAL_SECONDS)


def floor_interval(moment: datetime, seconds: int | None = None) -> datetime:
    seconds = seconds or interval_seconds()
    offset = (moment - EPOCH) // timedelta(seconds=seconds)
    return EPOCH + offset * timedelta(seconds=seconds)


def instance_key_sql(alias: str) -> str:
    """The instance a span or a series names (docs/gpu.md): service.instance.id, else host.name."""
    return f"coalesce({alias}.resource ->> 'service.instance.id', {alias}.resource ->> 'host.name', '')"


def _half_up_div(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (2 * remainder >= denominator)


def gpu_cost_units(usd_per_gpu_hour: Decimal, seconds: int) -> int:
    """One GPU for `seconds` at the hourly price, in 1e-10 USD, rounded half up."""
    micros = int(usd_per_gpu_hour * MICROS_PER_USD)
    return _half_up_div(micros * (UNITS_PER_USD // MICROS_PER_USD) * seconds, 3600)


def units_to_usd(units: int) -> Decimal:
    return Decimal(f"{units}E-10")


# --------------------------------------------------------------------------- prices


@dataclass(frozen=True, slots=True)
class _PriceEntry:
    price: GpuPrice
    regex: re.Pattern[str]

    def in_force(self, at: datetime) -> bool:
        return self.price.effective_from <= at and (self.price.effective_to is None or at < self.price.effective_to)


class GpuPriceBook:
    """GpuPrice rows in memory. The row for (provider, GPU model, moment): of the provider's
    rows whose pattern matches the whole model name (ignoring case) and that are in force,
    the longest pattern, then the later start, then the newer row."""

    def __init__(self, prices: Iterable[GpuPrice]) -> None:
        self._by_provider: dict[str, list[_PriceEntry]] = defaultdict(list)
        for price in prices:
            self._by_provider[price.provider.strip().lower()].append(
                _PriceEntry(price, re.compile(price.gpu_model_pattern, re.IGNORECASE))
            )
        for entries in self._by_provider.values():
            entries.sort(
                key=lambda e: (len(e.price.gpu_model_pattern), e.price.effective_from, e.price.pk), reverse=True
            )

    @classmethod
    def load(cls) -> GpuPriceBook:
        return cls(GpuPrice.objects.all())

    def price_for(self, provider: str, gpu_model: str, at: datetime) -> GpuPrice | None:
        for entry in self._by_provider.get(provider.strip().lower(), ()):
            if entry.regex.fullmatch(gpu_model) and entry.in_force(at):
                return entry.price
        return None


@dataclass(frozen=True)
class InstanceMap:
    """Span instance -> GPU pool key, and the price provider of each pool."""

    pool_of_span_instance: dict[str, str]
    provider_of_pool: dict[str, str]
    default_provider: str

    @classmethod
    def for_project(cls, project_id: int) -> InstanceMap:
        pools, providers = {}, {}
        for row in ServingInstance.objects.filter(project_id=project_id):
            pools[row.name] = row.gpu_key
            if row.price_provider:
                providers[row.gpu_key] = row.price_provider
        return cls(pools, providers, settings.GPU_PRICE_PROVIDER)

    def pool(self, span_instance: str) -> str:
        return self.pool_of_span_instance.get(span_instance, span_instance)

    def provider(self, pool: str) -> str:
        return self.provider_of_pool.get(pool, self.default_provider)


# --------------------------------------------------------------------------- reading an interval


@dataclass(frozen=True, slots=True)
class Gpu:
    pool: str
    gpu_id: str
    model: str


@dataclass(slots=True)
class Request:
    trace_id: uuid.UUID
    span_id: int
    carrier_span_id: int
    carrier_start: datetime
    pool: str
    work_from_us: int  # in-model window, microseconds since EPOCH
    work_to_us: int


# Every GPU (hw.id) of the project with a presence point in [a, b), by pool. Series by the
# (project_id, name) index, points by the primary key within the interval's partition.
_GPUS_SQL = f"""
SELECT {instance_key_sql("s")} AS pool, s.attributes ->> 'hw.id' AS gpu, max(s.attributes ->> 'hw.model') AS model
FROM gpu_metric_series AS s
JOIN gpu_metric_point AS p ON p.project_id = s.project_id AND p.series_id = s.series_id
WHERE s.project_id = %(project)s AND s.name = ANY(%(names)s) AND s.attributes ? 'hw.id'
  AND p.time >= %(start)s AND p.time < %(end)s
GROUP BY 1, 2
"""

# vLLM server spans with model time that may reach into [a, b), each with its carrier: the
# LLM span it is nested in when that span has no price of its own (the client span is the
# call, docs/metrics.md), else itself. The BRIN on start_time bounds the scan; the parent is
# one probe of the primary key (trace_id, span_id, start_time).
_REQUESTS_SQL = f"""
SELECT s.trace_id, s.span_id, s.start_time, {instance_key_sql("s")} AS instance,
       coalesce(s.queue_ms, 0), coalesce(s.prefill_ms, 0), coalesce(s.decode_ms, 0),
       c.span_id, c.start_time
FROM telemetry_span AS s
LEFT JOIN LATERAL (
    SELECT c.span_id, c.start_time FROM telemetry_span AS c
    WHERE c.trace_id = s.trace_id AND c.span_id = s.parent_span_id AND c.project_id = s.project_id AND c.is_llm
      AND c.start_time >= %(lookback)s - interval '1 hour' AND c.start_time < %(end)s + interval '1 minute'
      AND (c.cost_source = '{ATTRIBUTED}' OR c.cost_usd IS NULL)
    LIMIT 1
) AS c ON true
WHERE s.project_id = %(project)s AND s.is_llm AND s.kind = {SPAN_KIND_SERVER} AND s.provider = ANY(%(providers)s)
  AND s.start_time >= %(lookback)s AND s.start_time < %(end)s
  -- the work ends by the span's end: only spans still open at the interval's start, so the
  -- parent probes run for this interval's requests, not the whole hour looked back over
  AND s.end_time >= %(start)s
"""

# Self-hosted calls that never reached the engine (a rejected request: vLLM writes no
# llm_request span) used no GPU time: they are attributed $0 in the interval they start in,
# so no self-hosted call is left "cost unknown". A server span arriving later (late data)
# makes it an ordinary request on the next recompute.
_UNSERVED_SQL = f"""
SELECT s.trace_id, s.span_id, s.start_time
FROM telemetry_span AS s
WHERE s.project_id = %(project)s AND s.is_llm AND s.kind <> {SPAN_KIND_SERVER} AND s.provider = ANY(%(providers)s)
  AND s.start_time >= %(start)s AND s.start_time < %(end)s
  AND (s.cost_source = '{ATTRIBUTED}' OR s.cost_usd IS NULL)
  AND NOT EXISTS (
      SELECT 1 FROM telemetry_span AS c
      WHERE c.trace_id = s.trace_id AND c.parent_span_id = s.span_id AND c.is_llm AND c.kind = {SPAN_KIND_SERVER}
        AND c.start_time >= %(start)s - interval '1 minute' AND c.start_time < %(end)s + interval '1 hour')
"""


def _us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def read_gpus(project_id: int, start: datetime, end: datetime) -> list[Gpu]:
    with connection.cursor() as cur:
        cur.execute(_GPUS_SQL, {"project": project_id, "names": list(PRESENCE_SERIES), "start": start, "end": end})
        return [Gpu(pool, gpu, model or "") for pool, gpu, model in cur.fetchall()]


def read_requests(project_id: int, start: datetime, end: datetime, instances: InstanceMap) -> list[Request]:
    params: dict[str, Any] = {
        "project": project_id,
        "providers": sorted(SELF_HOSTED_PROVIDERS),
        "lookback": start - MAX_REQUEST,
        "start": start,
        "end": end,
    }
    start_us, end_us = _us(start), _us(end)
    out = []
    with connection.cursor() as cur:
        cur.execute(_REQUESTS_SQL, params)
        for trace_id, span_id, span_start, instance, queue_ms, prefill_ms, decode_ms, carrier, carrier_start in cur:
            work_from = _us(span_start) + round(queue_ms * 1000)
            work_to = work_from + round((prefill_ms + decode_ms) * 1000)
            if work_to == work_from:
                # No time in the model (aborted in the queue): $0, in the interval it ended in.
                if not start_us <= work_from < end_us:
                    continue
            elif work_to <= start_us or work_from >= end_us:
                continue
            out.append(
                Request(
                    trace_id=trace_id,
                    span_id=span_id,
                    carrier_span_id=carrier if carrier is not None else span_id,
                    carrier_start=carrier_start if carrier is not None else span_start,
                    pool=instances.pool(instance),
                    work_from_us=max(work_from, start_us),
                    work_to_us=min(work_to, end_us),
                )
            )
        cur.execute(_UNSERVED_SQL, params)
        for trace_id, span_id, span_start in cur.fetchall():
            # Its own pool is unknown (no server span names an instance); it carries $0 anyway.
            out.append(Request(trace_id, span_id, span_id, span_start, UNSERVED_POOL, _us(start), _us(start)))
    return out


# --------------------------------------------------------------------------- the arithmetic


def busy_us(windows: Iterable[tuple[int, int]]) -> int:
    """Length of the union of [from, to) windows."""
    total, reach = 0, None
    for lo, hi in sorted(windows):
        if reach is None or lo > reach:
            total += hi - lo
            reach = hi
        elif hi > reach:
            total += hi - reach
            reach = hi
    return total


def split_units(total: int, weights: Sequence[int]) -> list[int]:
    """`total` split in proportion to `weights`, whole units, adding up to `total` exactly
    (largest remainder; ties to the earlier weight)."""
    weight_sum = sum(weights)
    if weight_sum <= 0:
        return [0] * len(weights)
    floors = [total * w // weight_sum for w in weights]
    left = total - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i))
    for i in order[:left]:
        floors[i] += 1
    return floors


@dataclass
class PoolResult:
    pool: str
    gpus: int = 0
    gpu_models: dict[str, int] = field(default_factory=dict)
    unpriced_gpus: int = 0
    gpu_cost_units: int | None = 0
    busy_us: int = 0
    attributed_units: int | None = None
    idle_units: int | None = None
    shares: list[tuple[Request, int, int]] = field(default_factory=list)  # (request, work_us, units)

    @property
    def requests(self) -> int:
        return len(self.shares)


def attribute_pool(
    pool: str,
    gpus: Sequence[Gpu],
    requests: Sequence[Request],
    start: datetime,
    seconds: int,
    book: GpuPriceBook,
    provider: str,
) -> PoolResult:
    result = PoolResult(pool=pool, gpus=len(gpus))
    cost = 0
    for gpu in gpus:
        result.gpu_models[gpu.model] = result.gpu_models.get(gpu.model, 0) + 1
        price = book.price_for(provider, gpu.model, start)
        if price is None:
            result.unpriced_gpus += 1
        else:
            cost += gpu_cost_units(price.usd_per_gpu_hour, seconds)
    ordered = sorted(requests, key=lambda r: (str(r.trace_id), r.span_id))
    works = [r.work_to_us - r.work_from_us for r in ordered]
    result.busy_us = busy_us((r.work_from_us, r.work_to_us) for r in ordered)
    if pool == UNSERVED_POOL and not gpus:
        result.shares = [(r, 0, 0) for r in ordered]
        result.attributed_units, result.idle_units = 0, 0
        return result
    if not gpus or result.unpriced_gpus:
        # No GPU reported (nothing known to share) or one has no price: the cost is unknown,
        # and so stay the requests' shares of it; the interval row says why.
        result.gpu_cost_units = None if result.unpriced_gpus else 0
        return result
    result.gpu_cost_units = cost
    attributed = _half_up_div(cost * result.busy_us, seconds * 1_000_000) if ordered else 0
    result.attributed_units = attributed
    result.idle_units = cost - attributed
    units = split_units(attributed, works)
    result.shares = list(zip(ordered, works, units, strict=True))
    return result


# --------------------------------------------------------------------------- writing


# The carriers' totals over every interval, written where they differ, with a DirtyHour note
# per changed hour in the same statement (as ingest and re-pricing do). A carrier left with no
# share goes back to cost unknown. Spans priced by a row or supplied cost are never touched.
_WRITE_CARRIERS_SQL = f"""
WITH carriers AS (
    SELECT DISTINCT * FROM unnest(%(traces)s::uuid[], %(spans)s::bigint[], %(starts)s::timestamptz[])
        AS k(trace_id, span_id, start_time)
), totals AS (
    SELECT k.trace_id, k.span_id, k.start_time, sum(cs.share_usd) AS total
    FROM carriers AS k
    LEFT JOIN gpu_costshare AS cs
           ON cs.project_id = %(project)s AND cs.trace_id = k.trace_id AND cs.carrier_span_id = k.span_id
    GROUP BY 1, 2, 3
), changed AS (
    UPDATE telemetry_span AS t
    SET cost_usd = totals.total,
        cost_source = CASE WHEN totals.total IS NULL THEN NULL ELSE '{ATTRIBUTED}' END,
        price_id = CASE WHEN totals.total IS NULL THEN t.price_id END
    FROM totals
    WHERE t.trace_id = totals.trace_id AND t.span_id = totals.span_id AND t.start_time = totals.start_time
      AND t.project_id = %(project)s
      AND (t.cost_source = '{ATTRIBUTED}' OR t.cost_usd IS NULL)
      AND (t.cost_usd IS DISTINCT FROM totals.total
           OR t.cost_source IS DISTINCT FROM (CASE WHEN totals.total IS NULL THEN NULL ELSE '{ATTRIBUTED}' END))
    RETURNING t.project_id, t.start_time
), noted AS (
    INSERT INTO rollups_dirtyhour (project_id, hour, noted_at)
    SELECT DISTINCT project_id, date_trunc('hour', start_time, 'UTC'), now() FROM changed
)
SELECT count(*) FROM changed
"""


@dataclass
class IntervalResult:
    start: datetime
    pools: list[PoolResult]
    spans_changed: int


def attribute_interval(
    project_id: int,
    start: datetime,
    *,
    book: GpuPriceBook | None = None,
    instances: InstanceMap | None = None,
) -> IntervalResult:
    """Recompute one interval of one project from scratch (every pool), in one transaction."""
    seconds = interval_seconds()
    if floor_interval(start, seconds) != start:
        raise ValueError(f"{start} is not the start of a {seconds} s interval")
    end = start + timedelta(seconds=seconds)
    book = book or GpuPriceBook.load()
    instances = instances or InstanceMap.for_project(project_id)
    with transaction.atomic(), connection.cursor() as cur:
        # One recompute of a project at a time: two intervals can share a request (work across
        # their boundary), and each re-sums that request's shares; a concurrent pair would each
        # miss the other's uncommitted share. The sweep runs a project's intervals in turn anyway.
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_CLASS, project_id % 2**31])
        gpus_by_pool: dict[str, list[Gpu]] = defaultdict(list)
        for gpu in read_gpus(project_id, start, end):
            gpus_by_pool[gpu.pool].append(gpu)
        requests_by_pool: dict[str, list[Request]] = defaultdict(list)
        for request in read_requests(project_id, start, end, instances):
            requests_by_pool[request.pool].append(request)
        pools = [
            attribute_pool(
                pool, gpus_by_pool.get(pool, []), requests_by_pool.get(pool, []), start, seconds, book,
                instances.provider(pool),
            )
            for pool in sorted(set(gpus_by_pool) | set(requests_by_pool))
        ]  # fmt: skip

        old = list(
            CostShare.objects.filter(project_id=project_id, interval_start=start).values_list(
                "trace_id", "carrier_span_id", "carrier_start"
            )
        )
        CostShare.objects.filter(project_id=project_id, interval_start=start).delete()
        CostInterval.objects.filter(project_id=project_id, start=start).delete()
        now = datetime.now(UTC)
        CostInterval.objects.bulk_create(
            CostInterval(
                project_id=project_id,
                gpu_instance=p.pool,
                start=start,
                seconds=seconds,
                gpus=p.gpus,
                gpu_models=p.gpu_models,
                unpriced_gpus=p.unpriced_gpus,
                gpu_cost_usd=units_to_usd(p.gpu_cost_units) if p.gpu_cost_units is not None and p.gpus else None,
                busy_seconds=p.busy_us / 1e6,
                attributed_usd=units_to_usd(p.attributed_units) if p.attributed_units is not None else None,
                idle_usd=units_to_usd(p.idle_units) if p.idle_units is not None else None,
                requests=len(requests_by_pool.get(p.pool, [])),
                computed_at=now,
            )
            for p in pools
        )
        CostShare.objects.bulk_create(
            CostShare(
                project_id=project_id,
                gpu_instance=p.pool,
                interval_start=start,
                trace_id=r.trace_id,
                server_span_id=r.span_id,
                carrier_span_id=r.carrier_span_id,
                carrier_start=r.carrier_start,
                work_us=work,
                share_usd=units_to_usd(units),
            )
            for p in pools
            for r, work, units in p.shares
        )
        carriers = old + [(r.trace_id, r.carrier_span_id, r.carrier_start) for p in pools for r, _, _ in p.shares]
        changed = 0
        if carriers:
            cur.execute(
                _WRITE_CARRIERS_SQL,
                {
                    "project": project_id,
                    "traces": [c[0] for c in carriers],
                    "spans": [c[1] for c in carriers],
                    "starts": [c[2] for c in carriers],
                },
            )
            changed = int(cur.fetchone()[0])
    return IntervalResult(start, pools, changed)


def attribute_range(project_id: int, start: datetime, end: datetime) -> list[IntervalResult]:
    """Recompute every interval from the one holding `start` up to `end` (exclusive)."""
    seconds = interval_seconds()
    book = GpuPriceBook.load()
    instances = InstanceMap.for_project(project_id)
    results = []
    moment = floor_interval(start, seconds)
    while moment < end:
        results.append(attribute_interval(project_id, moment, book=book, instances=instances))
        moment += timedelta(seconds=seconds)
    return results
