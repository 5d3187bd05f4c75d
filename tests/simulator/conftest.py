"""Simulator fixtures: runs kept in memory through an injected InMemorySpanExporter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collectors.simulator import SimulationSummary, simulate
from collectors.simulator.traffic import to_ns

# A fixed "now" keeps every run (and its relative incident times) reproducible.
END = datetime(2026, 11, 19, 18, 0, tzinfo=UTC)
START = END - timedelta(days=2)
REQUESTS = 2500
SEED = 42


@dataclass
class Run:
    summary: SimulationSummary
    spans: list[ReadableSpan]
    start_ns: int
    end_ns: int

    def by_trace(self) -> dict[int, list[ReadableSpan]]:
        traces: dict[int, list[ReadableSpan]] = {}
        for span in self.spans:
            traces.setdefault(span.context.trace_id, []).append(span)
        return traces

    def roots(self) -> list[ReadableSpan]:
        return [s for s in self.spans if s.parent is None]


def run_in_memory(
    *,
    seed: int = SEED,
    incidents: Sequence[str] = (),
    start: datetime = START,
    end: datetime = END,
    requests: int = REQUESTS,
) -> Run:
    exporter = InMemorySpanExporter()
    summary = simulate(start=start, end=end, requests=requests, seed=seed, incidents=incidents, exporter=exporter)
    return Run(summary, list(exporter.get_finished_spans()), to_ns(start), to_ns(end))


@pytest.fixture(scope="session")
def baseline() -> Run:
    return run_in_memory()


def service_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def is_llm_client(span: ReadableSpan) -> bool:
    attrs = span.attributes or {}
    return "gen_ai.request.model" in attrs or attrs.get("openinference.span.kind") == "LLM"


def fingerprint(span: ReadableSpan) -> tuple[object, ...]:
    """Everything that makes a span what it is, comparable across runs."""
    return (
        span.context.trace_id,
        span.context.span_id,
        span.parent.span_id if span.parent else None,
        span.name,
        span.kind,
        span.start_time,
        span.end_time,
        span.status.status_code,
        tuple(sorted((k, str(v)) for k, v in (span.attributes or {}).items())),
        tuple(sorted((k, str(v)) for k, v in span.resource.attributes.items())),
    )
