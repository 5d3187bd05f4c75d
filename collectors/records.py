"""Canonical records: what every collector produces, whatever convention the bytes used.

Pure Python; no Django. `apps.telemetry.store` writes these to PostgreSQL column by column,
so a field added here needs a column in the span table too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# OTLP SpanKind values (opentelemetry.proto.trace.v1.Span.SpanKind).
SPAN_KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
# OTLP Status.StatusCode values.
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
# Span events read per span: a stream can carry one event per chunk (OpenLLMetry), and a
# hostile span 100k of them. The first-token event is among the first, an `exception`
# event among the last, so the decoders read this many from each end and skip the middle.
EVENTS_READ_FROM_EACH_END = 16
MAX_EVENTS_READ = 2 * EVENTS_READ_FROM_EACH_END


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One span event as decoded (OTLP Span.Event): what happened at a moment of the span.

    Read only by the convention mapping (a first-token event gives the TTFT, an `exception`
    event the error type); events are never stored, so their content goes nowhere.
    """

    name: str
    time_unix_nano: int
    attributes: dict[str, Any]


@dataclass(slots=True)
class RawSpan:
    """One OTLP span as decoded, before any convention mapping.

    Ids are raw bytes (16 for a trace, 8 for a span) whichever encoding the payload used;
    timestamps are unix nanoseconds. Attribute values are Python scalars or lists of them
    (OTLP kvlist values become dicts, bytes values become hex strings).
    """

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str
    scope_version: str = ""
    # At most MAX_EVENTS_READ of the span's events, in their order: the first ones and the
    # last ones (collectors.otlp says why those).
    events: tuple[RawEvent, ...] = ()


@dataclass(slots=True)
class CanonicalSpan:
    """A span in Observatory's own terms (CONVENTIONS.md, "Canonical fields").

    Token counts are normalised once: input_tokens includes cached input, output_tokens
    includes reasoning. None always means "not known", never 0.
    """

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    service_name: str
    scope_name: str

    is_llm: bool = False
    provider: str | None = None
    operation: str | None = None
    request_model: str | None = None
    response_model: str | None = None

    input_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None

    ttft_ms: float | None = None
    queue_ms: float | None = None
    prefill_ms: float | None = None
    decode_ms: float | None = None
    # The server's own end-to-end figure (vLLM gen_ai.latency.e2e); the span duration is
    # end_ns - start_ns.
    server_e2e_ms: float | None = None

    finish_reasons: list[str] | None = None
    error_type: str | None = None
    is_streaming: bool | None = None

    tenant: str | None = None
    feature: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    # An explicit task id (observatory.task.id); otherwise a task is its trace.
    task_id: str | None = None
    # Retry attempt number: 0 for a first try (http.request.resend_count, observatory.retry.attempt).
    retry_attempt: int | None = None
    # Semantic (application) cache lookups: None = this span is no cache lookup.
    semantic_cache_hit: bool | None = None
    # The application's verdict on the answer (observatory.output.valid): False = it failed
    # the app's validation; None = the app said nothing.
    output_valid: bool | None = None
    # The provider declined to answer (a refusal finish reason or refusal message); None = not seen.
    refused: bool | None = None

    system_fingerprint: str | None = None
    service_tier: str | None = None
    response_id: str | None = None

    # Cost the instrumentation itself reported (OpenInference llm.cost.total, Langfuse).
    supplied_cost_usd: Decimal | None = None
    # Set by pricing: None = unknown (no price row, or tokens unknown).
    cost_usd: Decimal | None = None
    price_id: int | None = None

    # Content is never stored; its size and a hash are (drift detection).
    prompt_chars: int | None = None
    completion_chars: int | None = None
    prompt_hash: str | None = None

    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class SpanRejected(ValueError):
    """One span cannot be kept (bad ids, absurd timestamps); the rest of the batch can."""


class PayloadError(ValueError):
    """The whole payload cannot be decoded; the message says what was wrong."""
