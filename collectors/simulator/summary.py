"""What a simulation run sent, counted the way Observatory should count it once stored.

Tokens are summed once per provider call, as the call's span reports them: a vLLM call's
server span repeats its client span's usage and is not counted again, and a service on the
deprecated convention reports no cached or reasoning tokens, so none are counted for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from collectors.simulator.catalog import GENAI_LEGACY, OPENINFERENCE
from collectors.simulator.emit import TraceCounts
from collectors.simulator.plan import RATE_LIMIT_ERROR, VALIDATION_FAILED, CallPlan, RequestPlan


@dataclass(slots=True)
class UsageTotals:
    traces: int = 0
    failed_traces: int = 0
    llm_calls: int = 0  # provider calls, failed ones included
    failed_llm_calls: int = 0
    input_tokens: int = 0  # includes cached input
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0  # includes reasoning
    reasoning_tokens: int = 0

    def add_call(self, call: CallPlan) -> None:
        self.llm_calls += 1
        if call.failed:
            self.failed_llm_calls += 1
            return
        self.input_tokens += call.input_tokens
        self.output_tokens += call.output_tokens
        convention = "genai" if call.provider.self_hosted else call.convention
        if convention == GENAI_LEGACY or call.provider.self_hosted:
            return
        self.cache_read_tokens += call.cache_read_tokens
        if call.model.reasoning:
            self.reasoning_tokens += call.reasoning_tokens
        if convention != OPENINFERENCE:
            self.cache_write_tokens += call.cache_write_tokens


@dataclass(slots=True)
class SimulationSummary:
    seed: int
    start: datetime | None = None  # the backfill's range; None for a live-only run
    end: datetime | None = None
    traces: int = 0
    spans: int = 0
    llm_spans: int = 0  # successful spans carrying usage: client calls plus vLLM server spans
    vllm_server_spans: int = 0
    error_spans: int = 0
    rate_limited_calls: int = 0
    resends: int = 0  # calls with http.request.resend_count (after a 429 or a 5xx)
    validation_retries: int = 0  # calls made again because the app rejected the answer
    validation_failures: int = 0  # requests that gave up: root error.type=validation_failed
    exported_spans: int = 0
    failed_spans: int = 0  # spans in batches the exporter gave up on
    metric_points: int = 0  # GPU and vLLM metric points exported (serving.py)
    failed_metric_exports: int = 0
    elapsed_s: float = 0.0
    totals: UsageTotals = field(default_factory=UsageTotals)
    per_tenant: dict[str, UsageTotals] = field(default_factory=dict)
    per_feature: dict[str, UsageTotals] = field(default_factory=dict)
    per_model: dict[str, UsageTotals] = field(default_factory=dict)
    incident_hits: dict[str, int] = field(default_factory=dict)

    @property
    def failed_traces(self) -> int:
        return self.totals.failed_traces

    def record(self, req: RequestPlan, counts: TraceCounts) -> None:
        self.traces += 1
        self.spans += counts.spans
        self.llm_spans += counts.llm_spans
        self.vllm_server_spans += counts.vllm_server_spans
        self.error_spans += counts.error_spans
        groups = (
            self.totals,
            self.per_tenant.setdefault(req.tenant.name, UsageTotals()),
            self.per_feature.setdefault(req.feature.name, UsageTotals()),
        )
        for group in groups:
            group.traces += 1
            group.failed_traces += req.error_type is not None
        self.validation_failures += req.error_type == VALIDATION_FAILED
        for call in req.calls:
            self.rate_limited_calls += call.error_type == RATE_LIMIT_ERROR
            self.resends += call.resend_count > 0
            self.validation_retries += call.validation_attempt > 0 and call.resend_count == 0
            for group in (*groups, self.per_model.setdefault(call.model.name, UsageTotals())):
                group.add_call(call)
        for spec in req.incident_hits:
            self.incident_hits[spec] = self.incident_hits.get(spec, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["start"] = self.start.isoformat() if self.start else None
        data["end"] = self.end.isoformat() if self.end else None
        return data

    def format(self) -> str:
        t = self.totals
        lines = [
            f"sent {self.traces:,} traces, {self.spans:,} spans ({self.llm_spans:,} LLM spans, "
            f"{self.vllm_server_spans:,} vLLM server spans) in {self.elapsed_s:.1f} s (seed {self.seed})",
            f"export: {self.exported_spans:,} spans accepted, {self.failed_spans:,} failed; "
            f"{self.metric_points:,} GPU / vLLM metric points, {self.failed_metric_exports:,} failed exports",
            f"failures: {t.failed_traces:,} failed requests, {t.failed_llm_calls:,} failed calls, "
            f"{self.rate_limited_calls:,} rate limited, {self.resends:,} resends, "
            f"{self.validation_retries:,} validation retries, {self.validation_failures:,} gave up",
            f"tokens: {t.input_tokens:,} in ({t.cache_read_tokens:,} cache read, {t.cache_write_tokens:,} cache write),"
            f" {t.output_tokens:,} out ({t.reasoning_tokens:,} reasoning)",
        ]
        for name, group in sorted(self.per_tenant.items()):
            lines.append(
                f"  {name:<10} {group.traces:>7,} traces {group.llm_calls:>7,} calls "
                f"{group.input_tokens:>13,} in {group.output_tokens:>11,} out"
            )
        lines.extend(f"  incident {spec}: {hits:,} requests" for spec, hits in self.incident_hits.items())
        return "\n".join(lines)
