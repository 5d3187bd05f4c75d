"""Synthetic traces for the metrics tests: heavy-tailed latencies, several tenants, features,
models and services, and the span shapes that decide what a call is.

Each trace is one of:
- an application root span (tenant and feature on it) with an LLM client span beneath
  (the call, which inherits tenant and feature from the trace), sometimes a retry beside it,
  sometimes an LLM span nested in the call (a vLLM server span, or a second instrumentation)
  that must not count as a call;
- a lone LLM span that is its own root, with or without its own tenant.

Latencies are lognormal with a Pareto tail, so the p99 sits far from the p50.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np

from collectors.records import STATUS_ERROR, STATUS_OK, CanonicalSpan

TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
FEATURES = ("support-chat", "summarize", "search-rerank", "code-review")
MODELS = (("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("vllm", "llama-3.1-8b"))
SERVICES = ("checkout-api", "support-bot", "batch-worker")

_serial = itertools.count(1)


def _ids() -> tuple[bytes, bytes]:
    serial = next(_serial)
    return os.urandom(8) + serial.to_bytes(8, "big"), serial.to_bytes(8, "big")


def _span_id() -> bytes:
    return next(_serial).to_bytes(8, "big")


def heavy_tailed_ms(rng: np.random.Generator, size: int, median_ms: float) -> np.ndarray:
    """Lognormal around median_ms with 4% of values from a Pareto tail (alpha 1.3) above 5x it."""
    values = rng.lognormal(np.log(median_ms), 0.7, size)
    tail = rng.random(size) < 0.04
    values[tail] = median_ms * 5 * (1 + rng.pareto(1.3, int(tail.sum())))
    return values


@dataclass
class Traffic:
    """Trace generator; `spans(n, start, end)` returns at least n spans starting in [start, end)."""

    seed: int = 7

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def spans(self, count: int, start: datetime, end: datetime) -> list[CanonicalSpan]:
        out: list[CanonicalSpan] = []
        start_ns = int(start.timestamp() * 1e9)
        width_ns = int((end - start).total_seconds() * 1e9)
        while len(out) < count:
            batch = 2048
            rng = self.rng
            starts = start_ns + (rng.random(batch) * width_ns * 0.999).astype(np.int64)
            e2e = heavy_tailed_ms(rng, batch, 900.0)
            ttft = e2e * rng.uniform(0.05, 0.6, batch) * np.where(rng.random(batch) < 0.05, 3.0, 1.0)
            ttft = np.minimum(ttft, e2e)
            for n in range(batch):
                out.extend(self._trace(int(starts[n]), float(e2e[n]), float(ttft[n])))
        return out

    def _trace(self, start_ns: int, e2e_ms: float, ttft_ms: float) -> list[CanonicalSpan]:
        rng = self.rng
        trace_id, root_id = _ids()
        provider, model = MODELS[int(rng.integers(len(MODELS)))]
        service = SERVICES[int(rng.integers(len(SERVICES)))]
        tenant = TENANTS[int(rng.integers(len(TENANTS)))] if rng.random() < 0.9 else None
        feature = FEATURES[int(rng.integers(len(FEATURES)))]
        e2e_ns = max(1000, int(e2e_ms * 1e6))
        if rng.random() < 0.1:
            # A lone LLM span: its own root, carrying its own tenant and feature.
            return [self._call(trace_id, root_id, None, start_ns, e2e_ns, ttft_ms, provider, model, service,
                               tenant=tenant, feature=feature)]  # fmt: skip
        failed = rng.random() < 0.06
        root = CanonicalSpan(
            trace_id=trace_id, span_id=root_id, parent_span_id=None, name="POST /v1/chat", kind=2,
            start_ns=start_ns, end_ns=start_ns + e2e_ns + 3_000_000, status_code=STATUS_ERROR if failed else STATUS_OK,
            status_message="", service_name=service, scope_name="app", tenant=tenant, feature=feature,
        )  # fmt: skip
        call_id = _span_id()
        spans = [root, self._call(trace_id, call_id, root_id, start_ns + 1_000_000, e2e_ns, ttft_ms, provider, model,
                                  service, error=failed)]  # fmt: skip
        if rng.random() < 0.15:
            retry_ns = max(1000, int(e2e_ns * rng.uniform(0.3, 2.0)))
            spans.append(self._call(trace_id, _span_id(), root_id, start_ns + 2_000_000, retry_ns, None, provider,
                                    model, service, retry=1))  # fmt: skip
        if rng.random() < 0.2:
            # The same call seen again beneath itself (vLLM server span / second instrumentation).
            spans.append(self._call(trace_id, _span_id(), call_id, start_ns + 1_500_000, e2e_ns // 2, ttft_ms / 2,
                                    "vllm", model, "vllm-serving", kind=2))  # fmt: skip
        return spans

    def _call(
        self,
        trace_id: bytes,
        span_id: bytes,
        parent_id: bytes | None,
        start_ns: int,
        e2e_ns: int,
        ttft_ms: float | None,
        provider: str,
        model: str,
        service: str,
        *,
        tenant: str | None = None,
        feature: str | None = None,
        error: bool = False,
        retry: int = 0,
        kind: int = 3,
    ) -> CanonicalSpan:
        rng = self.rng
        tokens_known = rng.random() > 0.03
        input_tokens = int(rng.lognormal(7, 0.8)) if tokens_known else None
        output_tokens = int(rng.lognormal(5, 0.7)) + 1 if tokens_known else None
        priced = tokens_known and rng.random() > 0.05
        cost = Decimal(int(rng.integers(1, 5_000_000))).scaleb(-10) if priced else None
        return CanonicalSpan(
            trace_id=trace_id, span_id=span_id, parent_span_id=parent_id, name=f"chat {model}", kind=kind,
            start_ns=start_ns, end_ns=start_ns + e2e_ns, status_code=STATUS_ERROR if error else STATUS_OK,
            status_message="", service_name=service, scope_name="instr", is_llm=True, provider=provider,
            operation="chat", request_model=model, response_model=model, input_tokens=input_tokens,
            cache_read_tokens=(input_tokens // 3) if input_tokens else None, output_tokens=output_tokens,
            ttft_ms=ttft_ms if ttft_ms is not None and rng.random() < 0.85 else None,
            error_type="rate_limit" if error and rng.random() < 0.5 else None, tenant=tenant, feature=feature,
            retry_attempt=retry, cost_usd=cost,
        )  # fmt: skip


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
