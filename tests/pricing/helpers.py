"""Helpers for pricing tests: aware datetimes and LLM spans."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from apps.pricing.pricebook import datetime_to_ns
from collectors.records import CanonicalSpan

_ids = itertools.count(1)


def at(text: str) -> datetime:
    """An aware UTC datetime from an ISO string without a zone."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def make_span(
    start: datetime | str,
    *,
    provider: str | None = "openai",
    model: str | None = "gpt-4o-mini",
    request_model: str | None = None,
    input_tokens: int | None = 1000,
    output_tokens: int | None = 200,
    cache_read_tokens: int | None = None,
    cache_write_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    supplied_cost_usd: Decimal | None = None,
    is_llm: bool = True,
    **extra: Any,
) -> CanonicalSpan:
    """An LLM span with unique ids; `model` is the response model."""
    start_ns = datetime_to_ns(at(start) if isinstance(start, str) else start)
    serial = next(_ids)
    return CanonicalSpan(
        trace_id=os.urandom(8) + serial.to_bytes(8, "big"),
        span_id=serial.to_bytes(8, "big"),
        parent_span_id=None,
        name="chat",
        kind=3,
        start_ns=start_ns,
        end_ns=start_ns + 1_500_000_000,
        status_code=0,
        status_message="",
        service_name="checkout",
        scope_name="test",
        is_llm=is_llm,
        provider=provider,
        operation="chat",
        request_model=request_model if request_model is not None else model,
        response_model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens,
        reasoning_tokens=reasoning_tokens,
        supplied_cost_usd=supplied_cost_usd,
        **extra,
    )
