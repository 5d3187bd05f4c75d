"""Pricing services: what ingest, commands and admin call.

The price book and cost arithmetic are in pricebook.py, re-pricing stored spans and the
unpriced-models listing in repricing.py; this module prices spans at ingest and re-exports
the rest, so callers import every pricing service from here.
"""

from __future__ import annotations

from collections.abc import Sequence

from apps.pricing.pricebook import PRICEBOOK_TTL_SECONDS, PriceBook, Rates, Segment, cost_of, span_model
from apps.pricing.providers import is_self_hosted
from apps.pricing.repricing import UnpricedModel, reprice_range, unpriced_models
from collectors.records import CanonicalSpan

__all__ = [
    "PRICEBOOK_TTL_SECONDS",
    "PriceBook",
    "Rates",
    "Segment",
    "UnpricedModel",
    "cost_of",
    "price_spans",
    "reprice_range",
    "span_model",
    "unpriced_models",
]


def price_spans(spans: Sequence[CanonicalSpan], book: PriceBook | None = None) -> None:
    """Set cost_usd and price_id on each LLM span, by the row in force at its start.

    - A matching row and known tokens: cost from the row; price_id records the row.
    - No row, or tokens unknown: the instrumentation's own figure (supplied_cost_usd) when
      it sent one, with price_id None since no row of ours made the number; otherwise
      cost unknown (None, never 0), and price_id still names the matching row if there is
      one, so the unpriced listing shows only models that lack a price.
    - Self-hosted spans (provider vllm) are left alone: apps.gpu.attribution prices them
      from GPU-hours, shared among the requests each GPU served (cost_source 'attributed').
    """
    if book is None:
        book = PriceBook.current()
    for span in spans:
        if not span.is_llm or is_self_hosted(span.provider):
            continue
        entry = book.entry_at_ns(span.provider, span_model(span), span.start_ns)
        cost = None
        if entry is not None:
            cost = cost_of(
                input_tokens=span.input_tokens,
                output_tokens=span.output_tokens,
                cache_read_tokens=span.cache_read_tokens,
                cache_write_tokens=span.cache_write_tokens,
                reasoning_tokens=span.reasoning_tokens,
                price=entry.rates,
            )
            if cost is not None:
                span.cost_usd, span.price_id = cost, entry.price.pk
                continue
        if span.supplied_cost_usd is not None:
            span.cost_usd, span.price_id = span.supplied_cost_usd, None
        else:
            span.cost_usd, span.price_id = None, entry.price.pk if entry else None
