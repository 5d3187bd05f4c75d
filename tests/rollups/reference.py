"""docs/metrics.md written a second time, in plain Python over the stored spans, to check the
rollup SQL against on generated traffic. Slow and simple on purpose: one pass per trace."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import connection

from apps.rollups.sketch import bucket_index

STATUS_ERROR = 2
SPAN_COLUMNS = (
    "project_id", "trace_id", "span_id", "parent_span_id", "start_time", "duration_ms", "status_code", "is_llm",
    "service_name", "provider", "request_model", "response_model", "input_tokens", "cache_read_tokens",
    "cache_write_tokens", "output_tokens", "reasoning_tokens", "ttft_ms", "queue_ms", "finish_reasons",
    "error_type", "tenant", "feature", "task_id", "retry_attempt", "semantic_cache_hit", "cost_usd", "price_id",
    "resource",
)  # fmt: skip


@dataclass
class Cell:
    """One all-dimensions rollup row, accumulated."""

    requests: int = 0
    errors: int = 0
    errors_by_type: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    tokens_unknown: int = 0
    cost_usd: Decimal = Decimal(0)
    cost_unknown: int = 0
    cache_savings_usd: Decimal = Decimal(0)
    semantic_cache_lookups: int = 0
    semantic_cache_hits: int = 0
    tasks: int = 0
    successful_tasks: int = 0
    generation_tokens: int = 0
    generation_ms: float = 0.0
    sketches: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _model(span: dict[str, Any]) -> str:
    return span["request_model"] or span["response_model"] or ""


def _fallback(span: dict[str, Any]) -> str | None:
    key = settings.FEATURE_FALLBACK_ATTRIBUTE
    value = span["service_name"] if key == "service.name" else (span["resource"] or {}).get(key)
    return value or None


def expected_cells(project_id: int, start: datetime, end: datetime) -> dict[tuple[Any, ...], Cell]:
    """(bucket, tenant, feature, provider, model, service) -> Cell for spans in [start, end),
    reading every span of the project (the data set is small and fits one window)."""
    with connection.cursor() as cur:
        cur.execute(f"SELECT {', '.join(SPAN_COLUMNS)} FROM telemetry_span WHERE project_id = %s", [project_id])
        spans = [dict(zip(SPAN_COLUMNS, row, strict=True)) for row in cur.fetchall()]
        cur.execute("SELECT id, input_per_mtok, coalesce(cached_input_per_mtok, input_per_mtok) FROM pricing_price")
        rates = {pk: (full, cached) for pk, full, cached in cur.fetchall()}

    by_trace: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        by_trace[span["trace_id"]].append(span)

    cells: dict[tuple[Any, ...], Cell] = defaultdict(Cell)
    trace_roots: list[dict[str, Any]] = []
    for members in by_trace.values():
        members.sort(key=lambda s: (s["parent_span_id"] is not None, s["start_time"], s["span_id"]))
        llm_ids = {s["span_id"] for s in members if s["is_llm"]}
        for s in members:
            s["is_call"] = s["is_llm"] and s["parent_span_id"] not in llm_ids

        def first(name: str, members: list[dict[str, Any]] = members) -> Any:
            return next((s[name] for s in members if s[name]), None)

        tenant, feature, task_id = first("tenant"), first("feature"), first("task_id")
        calls = [s for s in members if s["is_call"]]
        root = members[0]
        trace_roots.append(
            {
                "root": root,
                "has_root": root["parent_span_id"] is None,
                "tenant": tenant,
                "feature": feature,
                "task_id": task_id,
                "first_call": calls[0] if calls else None,
                "llm_work": any(s["is_llm"] or s["semantic_cache_hit"] is not None for s in members),
            }
        )
        for s in members:
            if not (start <= s["start_time"] < end):
                continue
            queue = s["is_llm"] and s["queue_ms"] is not None
            if not (s["is_call"] or s["semantic_cache_hit"] is not None or queue):
                continue
            key = (
                _hour(s["start_time"]),
                s["tenant"] or tenant or "",
                s["feature"] or feature or _fallback(s) or "",
                s["provider"] or "",
                _model(s),
                s["service_name"] or "",
            )
            cell = cells[key]
            if s["semantic_cache_hit"] is not None:
                cell.semantic_cache_lookups += 1
                cell.semantic_cache_hits += bool(s["semantic_cache_hit"])
            if queue:
                cell.sketches["queue_ms"][bucket_index(s["queue_ms"])] += 1
            if s["is_call"]:
                _add_call(cell, s, rates)

    # Tasks: a trace, or all traces of a task id; counted in the hour of the (earliest) root.
    tasks: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for info in trace_roots:
        tasks[("id", info["task_id"]) if info["task_id"] else ("trace", info["root"]["trace_id"])].append(info)
    for infos in tasks.values():
        if not any(info["llm_work"] for info in infos):
            continue
        infos.sort(key=lambda i: (not i["has_root"], i["root"]["start_time"], i["root"]["trace_id"]))
        head = infos[0]
        root = head["root"]
        if not (start <= root["start_time"] < end):
            continue
        with_calls = [i for i in infos if i["first_call"]]
        call = min(with_calls, key=lambda i: (i["first_call"]["start_time"], i["root"]["trace_id"]))["first_call"] \
            if with_calls else root  # fmt: skip
        key = (
            _hour(root["start_time"]),
            head["tenant"] or "",
            head["feature"] or _fallback(root) or "",
            call["provider"] or "",
            _model(call),
            call["service_name"] or "",
        )
        cells[key].tasks += 1
        cells[key].successful_tasks += root["status_code"] != STATUS_ERROR
    for cell in cells.values():
        cell.cache_savings_usd = cell.cache_savings_usd.quantize(Decimal("1e-10"), ROUND_HALF_UP)
    return dict(cells)


def _add_call(cell: Cell, s: dict[str, Any], rates: dict[int, tuple[Decimal, Decimal]]) -> None:
    cell.requests += 1
    if s["status_code"] == STATUS_ERROR or s["error_type"] or "abort" in (s["finish_reasons"] or []):
        cell.errors += 1
        cell.errors_by_type[s["error_type"] or "error"] += 1
    cell.retries += (s["retry_attempt"] or 0) > 0
    if s["input_tokens"] is not None and s["output_tokens"] is not None:
        cell.input_tokens += s["input_tokens"]
        cell.output_tokens += s["output_tokens"]
        cell.cache_read_tokens += s["cache_read_tokens"] or 0
        cell.cache_write_tokens += s["cache_write_tokens"] or 0
        cell.reasoning_tokens += s["reasoning_tokens"] or 0
    else:
        cell.tokens_unknown += 1
    if s["cost_usd"] is None:
        cell.cost_unknown += 1
    else:
        cell.cost_usd += s["cost_usd"]
    if s["price_id"] in rates and s["cache_read_tokens"]:
        full, cached = rates[s["price_id"]]
        cell.cache_savings_usd += s["cache_read_tokens"] * (full - cached) / Decimal(1_000_000)
    if s["ttft_ms"] is not None and s["output_tokens"] is not None:
        cell.generation_tokens += s["output_tokens"]
        cell.generation_ms += s["duration_ms"] - s["ttft_ms"]
    sketches = cell.sketches
    sketches["e2e_ms"][bucket_index(s["duration_ms"])] += 1
    if s["ttft_ms"] is not None:
        sketches["ttft_ms"][bucket_index(s["ttft_ms"])] += 1
        if s["output_tokens"] is not None and s["output_tokens"] >= 2:
            sketches["tpot_ms"][bucket_index((s["duration_ms"] - s["ttft_ms"]) / (s["output_tokens"] - 1))] += 1
    if s["output_tokens"] is not None:
        sketches["output_tokens"][bucket_index(float(s["output_tokens"]))] += 1
