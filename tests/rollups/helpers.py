"""Hand-built traces for the rollup tests, and reading rollup rows back."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection

from apps.pricing.pricebook import datetime_to_ns
from apps.rollups import compute
from apps.rollups.models import ALL_DIMS, DIMENSIONS, DISTRIBUTIONS, RollupHour, mask
from apps.rollups.sketch import bucket_index
from collectors.records import STATUS_ERROR, STATUS_OK, STATUS_UNSET, CanonicalSpan

__all__ = ["ALL_DIMS", "STATUS_ERROR", "STATUS_OK", "STATUS_UNSET", "Trace", "at", "mask", "rows", "sketch", "total"]

SERVER, CLIENT, INTERNAL = 2, 3, 1


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass
class Trace:
    """A trace's spans, built parent by parent; times are offsets from `start` in ms."""

    start: datetime
    trace_id: bytes = field(default_factory=lambda: os.urandom(16))
    spans: list[CanonicalSpan] = field(default_factory=list)

    def span(
        self,
        name: str = "work",
        *,
        parent: CanonicalSpan | None = None,
        at_ms: float = 0,
        duration_ms: float = 100,
        kind: int = INTERNAL,
        status: int = STATUS_UNSET,
        service: str = "support-api",
        **fields: Any,
    ) -> CanonicalSpan:
        start_ns = datetime_to_ns(self.start) + int(at_ms * 1_000_000)
        fields.setdefault("scope_name", "tests")
        span = CanonicalSpan(
            trace_id=self.trace_id,
            span_id=os.urandom(8),
            parent_span_id=parent.span_id if parent else None,
            name=name,
            kind=kind,
            start_ns=start_ns,
            end_ns=start_ns + int(duration_ms * 1_000_000),
            status_code=status,
            status_message="",
            service_name=service,
            **fields,
        )
        self.spans.append(span)
        return span

    def root(self, **fields: Any) -> CanonicalSpan:
        fields.setdefault("kind", SERVER)
        fields.setdefault("duration_ms", 2000)
        return self.span("POST /chat", **fields)

    def llm(self, *, parent: CanonicalSpan | None, **fields: Any) -> CanonicalSpan:
        """An LLM client span: openai gpt-4o-mini, 1000 in / 200 out unless told otherwise."""
        defaults: dict[str, Any] = {
            "kind": CLIENT,
            "is_llm": True,
            "provider": "openai",
            "operation": "chat",
            "request_model": "gpt-4o-mini",
            "response_model": "gpt-4o-mini-2024-07-18",
            "input_tokens": 1000,
            "output_tokens": 200,
            "at_ms": 10,
            "duration_ms": 1000,
            "name": "chat",
        }
        return self.span(parent=parent, **{**defaults, **fields})

    def vllm_server(self, *, parent: CanonicalSpan | None, **fields: Any) -> CanonicalSpan:
        """vLLM's own `llm_request` span, as the serving tier exports it (no tenant, no feature)."""
        defaults: dict[str, Any] = {
            "kind": SERVER,
            "is_llm": True,
            "provider": "vllm",
            "operation": "chat",
            "response_model": "llama-3.1-8b",
            "input_tokens": 800,
            "output_tokens": 100,
            "queue_ms": 12.0,
            "ttft_ms": 40.0,
            "at_ms": 15,
            "duration_ms": 450,
            "service": "vllm-serving",
            "name": "llm_request",
        }
        return self.span(parent=parent, **{**defaults, **fields})


def rows(project_id: int, grouping: int = ALL_DIMS, **where: Any) -> list[RollupHour]:
    return list(RollupHour.objects.filter(project_id=project_id, grouping=grouping, **where).order_by("bucket", "id"))


def one(project_id: int, grouping: int = ALL_DIMS, **where: Any) -> RollupHour:
    found = rows(project_id, grouping, **where)
    assert len(found) == 1, f"expected one row for {where}, found {[_dims(r) for r in found]}"
    return found[0]


def _dims(row: RollupHour) -> tuple[Any, ...]:
    return (row.bucket, *(getattr(row, name) for name in DIMENSIONS))


def total(project_id: int) -> RollupHour:
    """The grouping-0 row (all dimensions merged) of the project's only hour."""
    return one(project_id, 0)


def sketch(values: list[float]) -> tuple[list[int], list[int]]:
    """The (indexes, counts) the rollup must hold for these values."""
    counts: dict[int, int] = {}
    for value in values:
        index = bucket_index(value)
        counts[index] = counts.get(index, 0) + 1
    ordered = sorted(counts)
    return ordered, [counts[index] for index in ordered]


def distribution(row: RollupHour, name: str) -> tuple[list[int], list[int]]:
    assert name in DISTRIBUTIONS
    return list(getattr(row, f"{name}_idx")), list(getattr(row, f"{name}_cnt"))


def select_rows(project_ids: list[int], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """rollup_rows_sql() run as a plain SELECT, as the metrics query layer runs it."""
    with connection.cursor() as cur:
        cur.execute(compute.rollup_rows_sql(), compute.rollup_params(project_ids, start, end))
        names = [column.name for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def hours(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(hours=n) for n in range(count)]


D = Decimal
