"""Cost arithmetic and pricing at ingest; expected amounts are worked out by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.pricing.models import Price
from apps.pricing.pricebook import PriceBook
from apps.pricing.services import cost_of, price_spans
from tests.pricing.helpers import at, make_span

D = Decimal


def _price(**rates: str) -> Price:
    values = {"input_per_mtok": "1", "output_per_mtok": "2"} | rates
    return Price(
        pk=7,
        provider="openai",
        model_pattern="acme-1",
        effective_from=at("2025-01-01T00:00:00"),
        **{name: D(value) for name, value in values.items()},
    )


SONNET = _price(input_per_mtok="3", cached_input_per_mtok="0.3", cache_write_per_mtok="3.75", output_per_mtok="15")


def test_cache_reads_and_writes_are_each_charged_once_at_their_own_rate() -> None:
    # The Anthropic call of CONVENTIONS.md: input 1250 = 200 uncached + 1000 cache read + 50 cache write.
    # 200 x 3 + 1000 x 0.30 + 50 x 3.75 + 300 x 15 = 600 + 300 + 187.5 + 4500 = 5587.5 USD per million.
    cost = cost_of(input_tokens=1250, cache_read_tokens=1000, cache_write_tokens=50, output_tokens=300, price=SONNET)
    assert cost == D("0.0055875")


def test_reasoning_at_output_rate_when_the_row_has_none() -> None:
    # o4-mini: 1200 in of which 1000 cached, 300 out of which 100 reasoning.
    # 200 x 1.10 + 1000 x 0.275 + 300 x 4.40 = 220 + 275 + 1320 = 1815 USD per million.
    o4_mini = _price(input_per_mtok="1.1", cached_input_per_mtok="0.275", output_per_mtok="4.4")
    cost = cost_of(input_tokens=1200, cache_read_tokens=1000, output_tokens=300, reasoning_tokens=100, price=o4_mini)
    assert cost == D("0.001815")


def test_reasoning_at_its_own_rate_when_it_differs() -> None:
    # 100 in x 1 + 60 visible out x 2 + 40 reasoning x 8 = 100 + 120 + 320 = 540 USD per million.
    thinker = _price(input_per_mtok="1", output_per_mtok="2", reasoning_per_mtok="8")
    assert cost_of(input_tokens=100, output_tokens=100, reasoning_tokens=40, price=thinker) == D("0.00054")


def test_empty_cache_rates_fall_back_to_the_input_rate() -> None:
    # No cached or cache-write rate: every input token at 2.5, so caching changes nothing.
    flat = _price(input_per_mtok="2.5", output_per_mtok="10")
    with_cache = cost_of(input_tokens=1000, cache_read_tokens=600, cache_write_tokens=100, output_tokens=0, price=flat)
    without = cost_of(input_tokens=1000, output_tokens=0, price=flat)
    assert with_cache == without == D("0.0025")


def test_a_fully_cached_prompt_is_not_charged_as_input_too() -> None:
    assert cost_of(input_tokens=1000, cache_read_tokens=1000, output_tokens=0, price=SONNET) == D("0.0003")


def test_counts_that_contradict_the_normalisation_never_go_negative() -> None:
    # Cache reads above input (input counted without cache, Anthropic's raw shape) and reasoning
    # above output: the remainders are 0, each reported token is charged once.
    cost = cost_of(input_tokens=200, cache_read_tokens=1000, output_tokens=10, reasoning_tokens=50, price=SONNET)
    assert cost == D("0.00105")  # 1000 x 0.30 + 50 x 15 = 300 + 750


def test_unknown_tokens_mean_unknown_cost_not_zero() -> None:
    assert cost_of(input_tokens=None, output_tokens=10, price=SONNET) is None
    assert cost_of(input_tokens=10, output_tokens=None, price=SONNET) is None
    assert cost_of(input_tokens=0, output_tokens=0, price=SONNET) == D("0")


def test_rounded_half_up_to_ten_places_like_the_span_table() -> None:
    tiny = _price(input_per_mtok="0.00005", output_per_mtok="0.000049")
    # 1 token x 0.00005 USD per million = 5e-11 USD: half, rounds up to 1e-10.
    assert cost_of(input_tokens=1, output_tokens=0, price=tiny) == D("1E-10")
    # 1 token x 0.000049 = 4.9e-11: rounds down to 0.
    assert cost_of(input_tokens=0, output_tokens=1, price=tiny) == D("0")
    # No float anywhere: a large call stays exact.
    big = cost_of(input_tokens=2_000_000_000, output_tokens=2_000_000_000, price=_price(input_per_mtok="999999.999999"))
    assert big == D("1999999999.998") + D("4000")


def test_price_spans_sets_cost_and_the_row_that_priced_it() -> None:
    book = PriceBook([SONNET])
    span = make_span("2026-01-01T10:00:00", model="acme-1", input_tokens=1250, cache_read_tokens=1000)
    span.cache_write_tokens, span.output_tokens = 50, 300
    price_spans([span], book)
    assert (span.cost_usd, span.price_id) == (D("0.0055875"), 7)


def test_response_model_wins_over_request_model() -> None:
    book = PriceBook([SONNET])
    span = make_span("2026-01-01T10:00:00", model="acme-1", request_model="acme-latest")
    price_spans([span], book)
    assert span.price_id == 7
    asked_only = make_span("2026-01-01T10:00:00", model=None, request_model="acme-1")
    price_spans([asked_only], book)
    assert asked_only.price_id == 7


def test_unknown_model_has_unknown_cost_not_zero() -> None:
    span = make_span("2026-01-01T10:00:00", model="acme-unknown")
    price_spans([span], PriceBook([SONNET]))
    assert span.cost_usd is None
    assert span.price_id is None


def test_supplied_cost_is_the_fallback() -> None:
    book = PriceBook([SONNET])
    unknown = make_span("2026-01-01T10:00:00", model="acme-unknown", supplied_cost_usd=D("0.0123"))
    no_tokens = make_span("2026-01-01T10:00:00", model="acme-1", output_tokens=None, supplied_cost_usd=D("0.02"))
    priced = make_span("2026-01-01T10:00:00", model="acme-1", supplied_cost_usd=D("9"))
    price_spans([unknown, no_tokens, priced], book)
    assert (unknown.cost_usd, unknown.price_id) == (D("0.0123"), None)
    assert (no_tokens.cost_usd, no_tokens.price_id) == (D("0.02"), None)
    # Our price wins over the instrumentation's figure when we can compute one.
    assert (priced.cost_usd, priced.price_id) == (D("0.006"), 7)  # 1000 x 3 + 200 x 15 = 6000 per million


def test_missing_tokens_leave_cost_unknown_but_name_the_row() -> None:
    span = make_span("2026-01-01T10:00:00", model="acme-1", input_tokens=None)
    price_spans([span], PriceBook([SONNET]))
    assert span.cost_usd is None
    assert span.price_id == 7


def test_before_the_row_takes_effect_there_is_no_price() -> None:
    span = make_span("2024-06-01T00:00:00", model="acme-1")
    price_spans([span], PriceBook([SONNET]))
    assert (span.cost_usd, span.price_id) == (None, None)


def test_self_hosted_and_non_llm_spans_are_left_alone() -> None:
    book = PriceBook([SONNET])
    vllm = make_span("2026-01-01T10:00:00", provider="vllm", model="acme-1", supplied_cost_usd=D("1"))
    tool = make_span("2026-01-01T10:00:00", model="acme-1", is_llm=False)
    price_spans([vllm, tool], book)
    assert (vllm.cost_usd, vllm.price_id) == (None, None)
    assert (tool.cost_usd, tool.price_id) == (None, None)


@pytest.mark.django_db
def test_price_spans_uses_the_shipped_catalog_by_default() -> None:
    span = make_span("2026-11-01T10:00:00", provider="anthropic", model="claude-sonnet-4-5-20250929")
    span.input_tokens, span.cache_read_tokens, span.cache_write_tokens, span.output_tokens = 1250, 1000, 50, 300
    price_spans([span])
    assert span.cost_usd == D("0.0055875")
    assert span.price_id is not None
    assert Price.objects.get(pk=span.price_id).model_pattern.startswith("claude-sonnet-4-5")
