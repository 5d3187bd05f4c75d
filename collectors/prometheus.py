"""Prometheus exposition text (vLLM /metrics, the DCGM exporter) into canonical MetricPoints.

The text is parsed by prometheus_client's own parser; this module only maps names, labels and
units, through the two tables below (one row per source name). vLLM's older names map to the
same canonical names as the current ones, and DCGM's GPU fields to the same canonical GPU
series as the NVML sampler (collectors.gpu_sampler), so a page reads one name whatever the
source. Pure Python; no Django.

Canonical names:
- vLLM: the current V1 name without `_total` (`vllm:prefix_cache_hits`, ...); labels kept
  as point attributes (`model_name`, `engine`, `finished_reason`).
- GPU: OTel's hardware semantic conventions where they have the quantity (`hw.gpu.utilization`
  as a fraction with `hw.gpu.task=general`, `hw.gpu.memory.usage` / `.limit` in bytes,
  `hw.power` W, `hw.energy` J, `hw.temperature` Cel) and `observatory.gpu.*` where they do not
  (memory-copy utilisation, SM clock, power limit, last XID). Attributes: `hw.id` (GPU UUID),
  `hw.model` (product name), `gpu.index`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from collectors.capping import cap_attributes
from collectors.metric_records import (
    GAUGE,
    HISTOGRAM,
    SUM,
    TEMPORALITY_CUMULATIVE,
    MetricPoint,
    resource_key,
    series_hash,
)

VLLM, DCGM = "vllm", "dcgm"

# Canonical GPU metric names, shared with collectors.gpu_sampler.
GPU_UTILIZATION = "hw.gpu.utilization"
GPU_MEMORY_COPY_UTILIZATION = "observatory.gpu.memory_copy.utilization"
GPU_MEMORY_USAGE = "hw.gpu.memory.usage"
GPU_MEMORY_LIMIT = "hw.gpu.memory.limit"
GPU_POWER = "hw.power"
GPU_POWER_LIMIT = "observatory.gpu.power.limit"
GPU_ENERGY = "hw.energy"
GPU_TEMPERATURE = "hw.temperature"
GPU_SM_CLOCK = "observatory.gpu.sm_clock"
GPU_LAST_XID = "observatory.gpu.last_xid"
GPU_ATTRIBUTES = ("hw.id", "hw.model", "gpu.index")

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Mapping:
    canonical: str
    kind: str  # GAUGE, SUM (a monotonic cumulative counter) or HISTOGRAM
    unit: str
    scale: float = 1.0
    # Extra point attributes (e.g. hw.gpu.task=general on utilisation).
    extra: tuple[tuple[str, str], ...] = ()
    # A deprecated source name: skipped when the current name is in the same exposition.
    deprecated: bool = False


def _vllm_table() -> dict[str, Mapping]:
    table: dict[str, Mapping] = {}
    for name in ("num_requests_running", "num_requests_waiting"):
        table[f"vllm:{name}"] = Mapping(f"vllm:{name}", GAUGE, "{request}")
    table["vllm:kv_cache_usage_perc"] = Mapping("vllm:kv_cache_usage_perc", GAUGE, "1")
    table["vllm:gpu_cache_usage_perc"] = Mapping("vllm:kv_cache_usage_perc", GAUGE, "1", deprecated=True)
    for name in ("prefix_cache_queries", "prefix_cache_hits"):
        table[f"vllm:{name}"] = Mapping(f"vllm:{name}", SUM, "{token}")
        table[f"vllm:gpu_{name}"] = Mapping(f"vllm:{name}", SUM, "{token}", deprecated=True)
    for name in ("prompt_tokens", "generation_tokens", "prompt_tokens_cached"):
        table[f"vllm:{name}"] = Mapping(f"vllm:{name}", SUM, "{token}")
    table["vllm:num_preemptions"] = Mapping("vllm:num_preemptions", SUM, "{preemption}")
    table["vllm:request_success"] = Mapping("vllm:request_success", SUM, "{request}")
    for name in (
        "time_to_first_token_seconds",
        "inter_token_latency_seconds",
        "e2e_request_latency_seconds",
        "request_queue_time_seconds",
        "request_prefill_time_seconds",
        "request_decode_time_seconds",
        "request_time_per_output_token_seconds",
    ):
        table[f"vllm:{name}"] = Mapping(f"vllm:{name}", HISTOGRAM, "s")
    table["vllm:time_per_output_token_seconds"] = Mapping(
        "vllm:inter_token_latency_seconds", HISTOGRAM, "s", deprecated=True
    )
    return table


VLLM_TABLE = _vllm_table()

DCGM_TABLE: dict[str, Mapping] = {
    "DCGM_FI_DEV_GPU_UTIL": Mapping(GPU_UTILIZATION, GAUGE, "1", 0.01, (("hw.gpu.task", "general"),)),
    "DCGM_FI_DEV_MEM_COPY_UTIL": Mapping(GPU_MEMORY_COPY_UTILIZATION, GAUGE, "1", 0.01),
    "DCGM_FI_DEV_FB_USED": Mapping(GPU_MEMORY_USAGE, GAUGE, "By", _MIB),
    # FB_FREE is not a canonical series of its own: used + free is the memory limit (below).
    "DCGM_FI_DEV_POWER_USAGE": Mapping(GPU_POWER, GAUGE, "W"),
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": Mapping(GPU_POWER_LIMIT, GAUGE, "W"),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": Mapping(GPU_ENERGY, SUM, "J", 0.001),
    "DCGM_FI_DEV_GPU_TEMP": Mapping(GPU_TEMPERATURE, GAUGE, "Cel"),
    "DCGM_FI_DEV_SM_CLOCK": Mapping(GPU_SM_CLOCK, GAUGE, "MHz"),
    # The value of the last XID error, not a count of them.
    "DCGM_FI_DEV_XID_ERRORS": Mapping(GPU_LAST_XID, GAUGE, "1"),
}


@dataclass
class ScrapeResult:
    points: list[MetricPoint]
    problems: list[str]
    unmapped: set[str]


def _vllm_attributes(labels: dict[str, str]) -> dict[str, Any]:
    # Label values are the server's own; NUL would still fail the store, and size is bounded.
    return cap_attributes(dict(labels), 1024, 16384)


def _dcgm_attributes(labels: dict[str, str]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if labels.get("UUID"):
        attributes["hw.id"] = labels["UUID"]
    if labels.get("modelName"):
        attributes["hw.model"] = labels["modelName"]
    if labels.get("gpu", "").isdigit():
        attributes["gpu.index"] = int(labels["gpu"])
    return attributes


def _time_ns(sample_timestamp: Any, scraped_at_ns: int) -> int:
    # An exposition may carry its own timestamps (seconds, as a float or Timestamp).
    if sample_timestamp is None:
        return scraped_at_ns
    return int(float(sample_timestamp) * 1e9)


def parse_exposition(
    text: str, kind: str, *, scraped_at_ns: int, instance: str, host: str | None = None
) -> ScrapeResult:
    """Map one scrape's text to points. Raises ValueError when the text is not exposition format."""
    table = VLLM_TABLE if kind == VLLM else DCGM_TABLE
    attributes_of: Callable[[dict[str, str]], dict[str, Any]] = _vllm_attributes if kind == VLLM else _dcgm_attributes
    families = list(text_string_to_metric_families(text))
    present = {family.name for family in families}
    canonical_present = {table[name].canonical for name in present if name in table and not table[name].deprecated}
    points: list[MetricPoint] = []
    problems: list[str] = []
    unmapped: set[str] = set()
    # prometheus_client writes a counter's or histogram's start as a `<name>_created` sample,
    # which the text-format parser returns as a family of its own: it is the series' start
    # time (a changed one means the server restarted).
    created: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in families:
        if family.name.endswith("_created") and family.name.removesuffix("_created") in table:
            for sample in family.samples:
                created[(family.name.removesuffix("_created"), tuple(sorted(sample.labels.items())))] = sample.value
    # Per GPU (its label set), FB used and free (bytes): their sum is the memory limit.
    framebuffer: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
    for family in families:
        if kind == DCGM and family.name in ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"):
            part = "used" if family.name.endswith("USED") else "free"
            for sample in family.samples:
                entry = framebuffer.setdefault(tuple(sorted(sample.labels.items())), {})
                entry[part] = sample.value * _MIB
                entry["time_ns"] = _time_ns(sample.timestamp, scraped_at_ns)
        mapping = table.get(family.name)
        if mapping is None:
            if family.name != "DCGM_FI_DEV_FB_FREE" and family.name.removesuffix("_created") not in table:
                unmapped.add(family.name)
            continue
        if mapping.deprecated and mapping.canonical in canonical_present:
            continue
        if mapping.kind == HISTOGRAM:
            produced, trouble = _histograms(family, mapping, attributes_of, scraped_at_ns, created)
        else:
            produced, trouble = _scalars(family, mapping, attributes_of, scraped_at_ns, created)
        problems.extend(trouble)
        points.extend(produced)
    for key, parts in framebuffer.items():
        if "used" in parts and "free" in parts and math.isfinite(parts["used"] + parts["free"]):
            labels = dict(key)
            points.append(
                MetricPoint(
                    name=GPU_MEMORY_LIMIT, kind=GAUGE, unit="By", resource=_host_resource(labels),
                    attributes=_dcgm_attributes(labels), time_ns=int(parts["time_ns"]),
                    value=parts["used"] + parts["free"],
                )
            )  # fmt: skip
    # Resource: the serving instance, and the host the exporter names (DCGM's Hostname label).
    resources: dict[str, tuple[dict[str, Any], bytes]] = {}
    for point in points:
        host_name = host or point.resource.get("host.name", "")
        if host_name not in resources:
            resource: dict[str, Any] = {"service.instance.id": instance, "observatory.scrape.kind": kind}
            if host_name:
                resource["host.name"] = host_name
            resources[host_name] = (resource, resource_key(resource))
        point.resource, key_bytes = resources[host_name]
        point.series_id = series_hash(point.name, key_bytes, point.attributes)
    return ScrapeResult(points, problems, unmapped)


def _host_resource(labels: dict[str, str]) -> dict[str, Any]:
    return {"host.name": labels["Hostname"]} if labels.get("Hostname") else {}


Created = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scalars(
    family: Any,
    mapping: Mapping,
    attributes_of: Callable[[dict[str, str]], dict[str, Any]],
    scraped_at_ns: int,
    created: Created,
) -> tuple[list[MetricPoint], list[str]]:
    produced: list[MetricPoint] = []
    problems: list[str] = []
    for sample in family.samples:
        if sample.name.endswith("_created"):
            continue
        value = sample.value
        if not math.isfinite(value):
            problems.append(f"{sample.name}{sample.labels}: value is {value}")
            continue
        if mapping.kind == SUM and value < 0:
            problems.append(f"{sample.name}{sample.labels}: a counter cannot be negative ({value})")
            continue
        attributes = {**attributes_of(sample.labels), **dict(mapping.extra)}
        point = MetricPoint(
            name=mapping.canonical, kind=mapping.kind, unit=mapping.unit, resource={}, attributes=attributes,
            time_ns=_time_ns(sample.timestamp, scraped_at_ns), value=value * mapping.scale,
        )  # fmt: skip
        if mapping.kind == SUM:
            point.temporality = TEMPORALITY_CUMULATIVE
            point.monotonic = True
            # A server up long before the first scrape: its first reading is a baseline.
            point.first_counts = False
            start = created.get((family.name, tuple(sorted(sample.labels.items()))))
            point.start_ns = int(start * 1e9) if start else 0
        point.resource = _host_resource(sample.labels)
        produced.append(point)
    return produced, problems


def _histograms(
    family: Any,
    mapping: Mapping,
    attributes_of: Callable[[dict[str, str]], dict[str, Any]],
    scraped_at_ns: int,
    created: Created,
) -> tuple[list[MetricPoint], list[str]]:
    """Prometheus histograms (cumulative `le` buckets) as OTLP-style explicit histograms
    (per-bucket counts, bounds without +Inf), one point per label set."""
    groups: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for sample in family.samples:
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        group = groups.setdefault(tuple(sorted(labels.items())), {"buckets": [], "labels": labels, "time": None})
        if sample.timestamp is not None:
            group["time"] = sample.timestamp
        if sample.name.endswith("_bucket"):
            group["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            group["count"] = sample.value
        elif sample.name.endswith("_sum"):
            group["sum"] = sample.value
    produced: list[MetricPoint] = []
    problems: list[str] = []
    for group in groups.values():
        where = f"{family.name}{group['labels']}"
        buckets = sorted(group["buckets"])
        if not buckets or not math.isinf(buckets[-1][0]):
            problems.append(f"{where}: histogram has no +Inf bucket")
            continue
        cumulative = [count for _, count in buckets]
        if any(not math.isfinite(c) or c < 0 for c in cumulative) or any(
            b < a for a, b in itertools.pairwise(cumulative)
        ):
            problems.append(f"{where}: bucket counts are not non-negative and increasing")
            continue
        per_bucket = [int(cumulative[0])] + [int(b - a) for a, b in itertools.pairwise(cumulative)]
        total = group.get("count", cumulative[-1])
        total_sum = group.get("sum")
        if total_sum is not None and not math.isfinite(total_sum):
            problems.append(f"{where}: sum is {total_sum}")
            continue
        point = MetricPoint(
            name=mapping.canonical, kind=HISTOGRAM, unit=mapping.unit, resource={},
            attributes=attributes_of(group["labels"]), time_ns=_time_ns(group["time"], scraped_at_ns),
            temporality=TEMPORALITY_CUMULATIVE, monotonic=True, first_counts=False,
            count=int(total), sum=total_sum, bounds=[bound for bound, _ in buckets[:-1]], bucket_counts=per_bucket,
        )  # fmt: skip
        start = created.get((family.name, tuple(sorted(group["labels"].items()))))
        point.start_ns = int(start * 1e9) if start else 0
        point.resource = _host_resource(group["labels"])
        produced.append(point)
    return produced, problems


def canonical_names(kind: str) -> Iterable[str]:
    table = VLLM_TABLE if kind == VLLM else DCGM_TABLE
    return sorted({mapping.canonical for mapping in table.values()})
