"""Simulated history in the test database, fast: the simulator's spans, encoded by the real
OTLP protobuf encoder, decoded and stored by the receiver's own pipeline, then rolled up.

Skips only the HTTP hop (tests/simulator and tests/test_receiver cover that), so weeks of
traffic load in seconds. Detector tests use it for stable months and incidents alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from apps.rollups.runner import rollup_range
from apps.telemetry.ingest import ingest_spans
from collectors.otlp import decode_traces_protobuf
from collectors.simulator import SimulationSummary, simulate
from collectors.simulator.traffic import overall_load

# A Monday noon, so "the last 24 h" and "the same hours a week before" are ordinary weekdays.
NOW = datetime(2026, 11, 16, 12, 0, tzinfo=UTC)
BATCH = 2000


@dataclass
class History:
    summary: SimulationSummary
    start: datetime
    end: datetime
    spans: int


def load_history(
    project_id: int,
    *,
    days: float = 28,
    end: datetime = NOW,
    seed: int = 1,
    incidents: Sequence[str] = (),
    requests_per_day: float = 1500,
) -> History:
    """Simulate `days` of traffic ending at `end` (incident times relative to `end`), store it
    in project `project_id` through the receiver's decode + ingest path, and roll it up."""
    start = end - timedelta(days=days)
    exporter = InMemorySpanExporter()
    summary = simulate(
        start=start, end=end, seed=seed, incidents=incidents, exporter=exporter, requests_per_day=requests_per_day
    )
    spans = list(exporter.get_finished_spans())
    stored = 0
    for first in range(0, len(spans), BATCH):
        body = encode_spans(spans[first : first + BATCH]).SerializeToString()
        raw, rejected = decode_traces_protobuf(body)
        assert not rejected, rejected[:3]
        result = ingest_spans(project_id, raw, [])
        stored += result.accepted
    rollup_range(start - timedelta(hours=1), end + timedelta(hours=1), [project_id])
    return History(summary, start, end, stored)


def matching_rate(rate: float, window: tuple[datetime, datetime], run: tuple[datetime, datetime]) -> float:
    """The requests per day a short run over `window` needs so that its hours carry what the
    same hours carry inside a longer run over `run` at `rate`: a simulation spreads its
    requests over its own range by the daily and weekly load, so a seven-hour run at `rate`
    puts a whole seven hours' share in them, busy hours or not. Weekly shapes repeat, so the
    window may lie in another week than the run."""

    def mean_load(start: datetime, end: datetime) -> float:
        steps = max(1, int((end - start) / timedelta(minutes=15)))
        return sum(overall_load(start + (end - start) * (i + 0.5) / steps) for i in range(steps)) / steps

    return rate * mean_load(*window) / mean_load(*run)
