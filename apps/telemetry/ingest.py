"""From decoded OTLP spans to stored, priced rows: the service behind POST /v1/traces."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cache

from django.conf import settings

from apps.pricing.services import price_spans
from apps.telemetry.store import insert_spans
from collectors.capping import TRUNCATED_ATTRIBUTE
from collectors.conventions import MappingConfig, map_span
from collectors.records import CanonicalSpan, RawSpan
from observatory.logthrottle import ThrottledLog

log = logging.getLogger(__name__)
# One line per project a minute about values cut to their byte limits, then a count.
_throttled = ThrottledLog(log)

# Tokens in one request beyond this are not a real request: reject the span, keep the batch.
MAX_TOKENS_PER_SPAN = 50_000_000


@dataclass
class IngestResult:
    accepted: int = 0
    inserted: int = 0
    rejected: list[str] = field(default_factory=list)


@cache
def mapping_config() -> MappingConfig:
    return MappingConfig(
        tenant_keys=tuple(settings.TENANT_ATTRIBUTE_KEYS),
        feature_keys=tuple(settings.FEATURE_ATTRIBUTE_KEYS),
        max_attribute_chars=settings.SPAN_ATTRIBUTE_MAX_CHARS,
        max_attributes_chars=settings.SPAN_ATTRIBUTES_MAX_CHARS,
        vllm_model=settings.VLLM_SERVED_MODEL or None,
        feature_fallback_key=(
            settings.FEATURE_FALLBACK_ATTRIBUTE if settings.FEATURE_FALLBACK_ATTRIBUTE != "service.name" else None
        ),
    )


def _absurdity(span: CanonicalSpan, now_ns: int) -> str | None:
    """Why a well-formed span still cannot be kept, or None."""
    oldest_ns = now_ns - settings.SPAN_RETENTION_DAYS * 86_400 * 10**9
    if span.start_ns < oldest_ns:
        return f"start time is older than the {settings.SPAN_RETENTION_DAYS}-day retention"
    if span.start_ns > now_ns + settings.SPAN_MAX_FUTURE_SECONDS * 10**9:
        return "start time is in the future"
    if span.end_ns - span.start_ns > 7 * 86_400 * 10**9:
        return "span lasts longer than 7 days"
    for name in ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens"):
        value = getattr(span, name)
        if value is not None and not 0 <= value <= MAX_TOKENS_PER_SPAN:
            return f"{name}={value} is out of range (0..{MAX_TOKENS_PER_SPAN})"
    for name in ("ttft_ms", "queue_ms", "prefill_ms", "decode_ms", "server_e2e_ms"):
        value = getattr(span, name)
        if value is not None and not 0 <= value <= 7 * 86_400_000:
            return f"{name}={value} is out of range"
    return None


def forget_log_state() -> None:
    _throttled.forget()


def _note_truncation(project_id: int, kept: list[CanonicalSpan]) -> None:
    """One log line for the batch (not one per span) naming the fields that were cut."""
    cut_spans = 0
    fields: set[str] = set()
    for span in kept:
        cut = span.attributes.get(TRUNCATED_ATTRIBUTE)
        if cut:
            cut_spans += 1
            fields.update(cut)
    if cut_spans:
        _throttled.warning(
            ("truncated", project_id),
            "ingest project=%d: %d of %d spans had values cut to their byte limits (%s); "
            "see the span attribute %s",
            project_id, cut_spans, len(kept), ", ".join(sorted(fields)), TRUNCATED_ATTRIBUTE,
        )  # fmt: skip


def _label(raw: RawSpan) -> str:
    return f"span {raw.span_id.hex()} of trace {raw.trace_id.hex()}"


def ingest_spans(project_id: int, raw_spans: list[RawSpan], rejected: list[str]) -> IngestResult:
    """Map, validate, price and store one decoded batch.

    `rejected` holds the decoder's per-span rejections; this adds its own. Database errors
    propagate: the view turns them into 503 so the exporter retries the whole batch.
    """
    result = IngestResult(rejected=list(rejected))
    config = mapping_config()
    now_ns = time.time_ns()
    kept: list[CanonicalSpan] = []
    for raw in raw_spans:
        try:
            span = map_span(raw, config)
        except ValueError as exc:
            result.rejected.append(f"{_label(raw)}: {exc}")
            continue
        reason = _absurdity(span, now_ns)
        if reason:
            result.rejected.append(f"{_label(raw)}: {reason}")
            continue
        kept.append(span)
    _note_truncation(project_id, kept)
    price_spans(kept)
    result.accepted = len(kept)
    result.inserted = insert_spans(project_id, kept)
    return result
