"""Re-pricing stored spans, and the listing of models without a price, against the real span table."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal

import pytest
from django.db import connection

from apps.accounts.models import Project
from apps.pricing import repricing
from apps.pricing.models import Price
from apps.pricing.pricebook import PriceBook, ns_to_datetime
from apps.pricing.services import price_spans, reprice_range, unpriced_models
from apps.telemetry.store import insert_spans, span_id_to_int
from collectors.records import CanonicalSpan
from tests.pricing.helpers import at, make_span

D = Decimal
DAYS = ("2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04")


def _day_spans(day: str) -> list[CanonicalSpan]:
    """One of each kind of LLM span, at the first and the last microsecond of the day and at noon."""
    spans = []
    for clock in ("00:00:00", "12:00:00", "23:59:59.999999"):
        when = f"{day}T{clock}"
        spans += [
            make_span(when, model="gpt-4o-mini", cache_read_tokens=400, reasoning_tokens=None),
            make_span(when, provider="openai", model="gpt-4o-mini-2024-07-18", input_tokens=None),
            make_span(
                when,
                provider="anthropic",
                model="claude-sonnet-4-5-20250929",
                cache_read_tokens=500,
                cache_write_tokens=20,
            ),
            make_span(when, provider="gemini", model="gemini-2.5-flash", reasoning_tokens=150),
            make_span(when, provider="openai", model="acme-unknown"),
            make_span(when, provider="mistral", model="acme-supplied", supplied_cost_usd=D("0.0123456789")),
            make_span(when, provider="vllm", model="llama-3.1-8b"),
            make_span(when, model="gpt-4o-mini", is_llm=False),
        ]
    return spans


def _stored(project: Project) -> dict[int, tuple[Decimal | None, int | None]]:
    with connection.cursor() as cur:
        cur.execute("SELECT span_id, cost_usd, price_id FROM telemetry_span WHERE project_id = %s", [project.pk])
        return {span_id: (cost, price_id) for span_id, cost, price_id in cur.fetchall()}


def _key(span: CanonicalSpan) -> int:
    return span_id_to_int(span.span_id)


def _start(span: CanonicalSpan) -> datetime:
    return ns_to_datetime(span.start_ns)


@pytest.fixture
def stored_spans(project: Project) -> list[CanonicalSpan]:
    """Spans over four days, priced at ingest with the shipped catalog and stored."""
    spans = [span for day in DAYS for span in _day_spans(day)]
    price_spans(spans)
    assert insert_spans(project.pk, spans) == len(spans)
    return spans


def _priced_now(spans: list[CanonicalSpan]) -> dict[int, tuple[Decimal | None, int | None]]:
    """What price_spans gives these spans with the catalog as it is now."""
    fresh = [dataclasses.replace(span, cost_usd=None, price_id=None) for span in spans]
    price_spans(fresh, PriceBook.load())
    return {_key(span): (span.cost_usd, span.price_id) for span in fresh}


def _change_prices() -> None:
    # A cut for one snapshot name mid-range (an exact name beats the gpt-4o-mini family row),
    # and a first price for a model nobody had priced.
    Price.objects.create(
        provider="openai",
        model_pattern="gpt-4o-mini",
        effective_from=at("2026-03-02T12:00:00"),
        input_per_mtok=D("0.1"),
        cached_input_per_mtok=D("0.05"),
        output_per_mtok=D("0.4"),
    )
    Price.objects.create(
        provider="openai",
        model_pattern="acme-unknown",
        effective_from=at("2026-01-01T00:00:00"),
        input_per_mtok=D("1"),
        output_per_mtok=D("3"),
    )


@pytest.mark.django_db
def test_reprice_after_a_price_change_updates_only_the_range_and_matches_price_spans(
    project: Project, stored_spans: list[CanonicalSpan]
) -> None:
    before = _stored(project)
    _change_prices()
    start, end = at("2026-03-02T00:00:00"), at("2026-03-04T00:00:00")

    changed = reprice_range(start, end)

    after = _stored(project)
    expected = _priced_now(stored_spans)
    for span in stored_spans:
        key = _key(span)
        if span.is_llm and start <= _start(span) < end:
            assert after[key] == expected[key], (span.provider, span.response_model, _start(span))
        else:
            assert after[key] == before[key], (span.provider, span.response_model, _start(span))
    # 2 days x 3 acme-unknown spans now priced, and the gpt-4o-mini spans from noon on the 2nd (2 + 3).
    assert changed == sum(1 for key in after if after[key] != before[key]) == 6 + 5
    cut = next(s for s in stored_spans if s.response_model == "gpt-4o-mini" and _start(s) == at("2026-03-03T12:00:00"))
    # 600 uncached x 0.10 + 400 cached x 0.05 + 200 out x 0.40 = 60 + 20 + 80 = 160 USD per million.
    assert after[_key(cut)] == (D("0.00016"), Price.objects.get(model_pattern="gpt-4o-mini").pk)
    # Nothing left to do: a second run writes nothing.
    assert reprice_range(start, end) == 0


@pytest.mark.django_db
def test_reprice_of_everything_equals_pricing_at_ingest(project: Project, stored_spans: list[CanonicalSpan]) -> None:
    _change_prices()
    Price.objects.filter(provider="anthropic", model_pattern__startswith="claude-sonnet-4-5").update(
        input_per_mtok=D("2.75"), cached_input_per_mtok=None
    )
    reprice_range(at("2026-01-01T00:00:00"), at("2026-04-01T00:00:00"))
    after = _stored(project)
    expected = _priced_now(stored_spans)
    assert {k: v for k, v in after.items() if k in {_key(s) for s in stored_spans if s.is_llm}} == {
        _key(s): expected[_key(s)] for s in stored_spans if s.is_llm
    }


@pytest.mark.django_db
def test_reprice_filters_by_provider_and_model(project: Project, stored_spans: list[CanonicalSpan]) -> None:
    _change_prices()
    start, end = at("2026-03-01T00:00:00"), at("2026-03-05T00:00:00")
    assert reprice_range(start, end, provider="anthropic") == 0
    assert reprice_range(start, end, provider="openai", model="acme-unknown") == 12
    assert reprice_range(start, end, provider="openai") == 2 + 3 + 3  # gpt-4o-mini from noon on the 2nd


@pytest.mark.django_db
def test_self_hosted_spans_are_never_repriced(project: Project, stored_spans: list[CanonicalSpan]) -> None:
    Price.objects.create(
        provider="vllm",
        model_pattern="llama-.*",
        effective_from=at("2026-01-01T00:00:00"),
        input_per_mtok=1,
        output_per_mtok=1,
    )
    assert reprice_range(at("2026-03-01T00:00:00"), at("2026-03-05T00:00:00")) == 0
    vllm = {_key(s) for s in stored_spans if s.provider == "vllm"}
    assert {v for k, v in _stored(project).items() if k in vllm} == {(None, None)}


@pytest.mark.django_db
def test_reprice_deleted_price_falls_back_to_supplied_or_unknown(
    project: Project, stored_spans: list[CanonicalSpan]
) -> None:
    Price.objects.filter(provider="gcp.gemini", model_pattern__contains="gemini-2\\.5-flash(").delete()
    changed = reprice_range(at("2026-03-01T00:00:00"), at("2026-03-02T00:00:00"))
    assert changed == 3
    gemini = [s for s in stored_spans if s.provider == "gemini" and _start(s) < at("2026-03-02T00:00:00")]
    assert {_stored(project)[_key(s)] for s in gemini} == {(None, None)}


def test_day_chunks_follow_partitions() -> None:
    chunks = list(repricing.day_chunks(at("2026-03-01T18:00:00"), at("2026-03-03T06:30:00")))
    assert chunks == [
        (at("2026-03-01T18:00:00"), at("2026-03-02T00:00:00")),
        (at("2026-03-02T00:00:00"), at("2026-03-03T00:00:00")),
        (at("2026-03-03T00:00:00"), at("2026-03-03T06:30:00")),
    ]
    assert list(repricing.day_chunks(at("2026-03-01T00:00:00"), at("2026-03-01T00:00:00"))) == []


@pytest.mark.django_db
def test_the_update_touches_one_day_partition(project: Project, stored_spans: list[CanonicalSpan]) -> None:
    """The plan the UPDATE relies on: constant bounds prune it to the one day's partition."""
    with connection.cursor() as cur:
        cur.execute(repricing._CREATE_SEGMENTS)
        cur.execute(
            f"EXPLAIN {repricing._REPRICE_DAY}", {"start": at("2026-03-02T00:00:00"), "end": at("2026-03-03T00:00:00")}
        )
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert "telemetry_span_p20260302" in plan
    for other in ("telemetry_span_p20260301", "telemetry_span_p20260303", "telemetry_span_p20260304"):
        assert other not in plan


def test_reprice_needs_aware_datetimes() -> None:
    with pytest.raises(ValueError, match="aware"):
        reprice_range(datetime(2026, 1, 1), at("2026-01-02T00:00:00"))


@pytest.mark.django_db
def test_unpriced_models_lists_models_without_a_price(project: Project, stored_spans: list[CanonicalSpan]) -> None:
    listed = {(row.provider, row.model): row for row in unpriced_models(None)}
    # Priced, supplied-cost, tokens-unknown-but-priced and self-hosted spans are not listed.
    assert set(listed) == {("openai", "acme-unknown")}
    row = listed[("openai", "acme-unknown")]
    assert row.spans == 12
    assert (row.first_seen, row.last_seen) == (at("2026-03-01T00:00:00"), at("2026-03-04T23:59:59.999999"))
    assert (row.input_tokens, row.output_tokens) == (12_000, 2_400)

    assert unpriced_models(at("2026-03-04T12:00:00"))[0].spans == 2
    assert unpriced_models(at("2026-03-05T00:00:00")) == []

    # Once someone adds a price and re-prices, the model leaves the list.
    _change_prices()
    reprice_range(at("2026-03-01T00:00:00"), at("2026-03-05T00:00:00"))
    assert unpriced_models(None) == []


@pytest.mark.django_db
def test_unpriced_models_uses_canonical_provider_names(project: Project) -> None:
    spans = [
        make_span("2026-03-01T10:00:00", provider="gemini", model="gemini-9-ultra"),
        make_span("2026-03-01T11:00:00", provider="gcp.vertex_ai", model="gemini-9-ultra", output_tokens=None),
        make_span("2026-03-01T12:00:00", provider=None, model=None),
    ]
    price_spans(spans)
    insert_spans(project.pk, spans)
    listed = {(row.provider, row.model): row for row in unpriced_models(None)}
    assert listed[("gcp.gemini", "gemini-9-ultra")].spans == 2
    assert listed[("gcp.gemini", "gemini-9-ultra")].output_tokens == 200
    assert listed[(None, None)].spans == 1
