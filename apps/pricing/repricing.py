"""Re-pricing stored spans after a price change, and listing the models nobody has priced.

Re-pricing picks rows with the same PriceBook code that prices spans at ingest, and leaves
the per-span work to PostgreSQL: for each day (one partition) it asks for the distinct
(provider, model) pairs that day holds (a handful), has the book cut the day into pieces
over which one row wins for each pair (PriceBook.segments), COPYs those pieces into a temp
table and runs one UPDATE ... FROM joining the day's spans to them. Matching and ranking
stay in one implementation, so a re-priced span gets exactly what price_spans would give
it, and no regex runs per span in SQL. One transaction per day keeps each UPDATE's locks
and WAL bounded while ingest goes on writing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.db import connection, transaction

from apps.pricing.pricebook import PriceBook
from apps.pricing.providers import PROVIDER_ALIASES, SELF_HOSTED_PROVIDERS, canonical_provider

# The model a span is priced as, in SQL: pricebook.span_model (response model, else request
# model; an empty string counts as absent, like Python's `or`).
_SPAN_MODEL_SQL = "coalesce(nullif(s.response_model, ''), s.request_model)"

_CREATE_SEGMENTS = """
CREATE TEMP TABLE IF NOT EXISTS pricing_reprice_segment (
    provider        text NOT NULL,
    model           text NOT NULL,
    seg_from        timestamptz NOT NULL,
    seg_to          timestamptz NOT NULL,
    price_id        bigint,
    -- pricebook.Rates: micro-USD per million tokens, fall-backs already applied.
    input_rate      bigint,
    cached_rate     bigint,
    write_rate      bigint,
    output_rate     bigint,
    reasoning_rate  bigint
) ON COMMIT DELETE ROWS
"""
_SEGMENT_COLUMNS = (
    "provider, model, seg_from, seg_to, price_id, input_rate, cached_rate, write_rate, output_rate, reasoning_rate"
)

# Plan: the constant start_time bounds prune to one day partition; the partial index
# telemetry_span_llm_start serves it when the range is a small part of the day, otherwise a
# sequential scan of the partition is cheaper. Returns a handful of rows (HashAggregate).
_DAY_MODELS = f"""
SELECT DISTINCT s.provider, {_SPAN_MODEL_SQL}
FROM telemetry_span AS s
WHERE s.is_llm AND s.start_time >= %s AND s.start_time < %s
"""

# cost_of() in SQL, on the same integers: tokens x micro-USD per Mtok = 1e-12 USD units,
# rounded half up (round() on a non-negative numeric) to the 10 places cost_usd keeps.
# numeric throughout, so nothing overflows or rounds early. Keep in step with cost_of().
_PRICED = "seg.price_id IS NOT NULL AND s.input_tokens IS NOT NULL AND s.output_tokens IS NOT NULL"
_COST = """round((
      greatest(greatest(s.input_tokens, 0) - greatest(coalesce(s.cache_read_tokens, 0), 0)
               - greatest(coalesce(s.cache_write_tokens, 0), 0), 0)::numeric * seg.input_rate
    + greatest(coalesce(s.cache_read_tokens, 0), 0)::numeric * seg.cached_rate
    + greatest(coalesce(s.cache_write_tokens, 0), 0)::numeric * seg.write_rate
    + greatest(greatest(s.output_tokens, 0) - greatest(coalesce(s.reasoning_tokens, 0), 0), 0)::numeric
      * seg.output_rate
    + greatest(coalesce(s.reasoning_tokens, 0), 0)::numeric * seg.reasoning_rate
  ) * 0.000000000001, 10)"""
# price_spans' rules: our cost when a row matched and tokens are known; else the supplied
# cost (price_id NULL: no row of ours made it); else unknown, still naming the matched row.
_NEW_PRICE_ID = (
    f"CASE WHEN {_PRICED} THEN seg.price_id WHEN s.supplied_cost_usd IS NOT NULL THEN NULL ELSE seg.price_id END"
)
_NEW_COST = f"CASE WHEN {_PRICED} THEN {_COST} ELSE s.supplied_cost_usd END"

# Expected plan for one day (checked with EXPLAIN on 1M LLM spans a day):
#   Update on telemetry_span s  -- only telemetry_span_pYYYYMMDD: constant bounds prune the rest
#     -> Hash Join  Hash Cond: (s.provider = seg.provider AND model expression = seg.model)
#                   Join Filter: seg.seg_from <= s.start_time < seg.seg_to, and the changed-row test
#          -> Seq Scan on telemetry_span_pYYYYMMDD s  Filter: is_llm AND start_time bounds
#             (Bitmap Heap Scan on telemetry_span_llm_start for a part of a day)
#          -> Hash -> Seq Scan on pricing_reprice_segment seg  (tens of rows, ANALYZEd)
# Each span costs one hash probe and the arithmetic. Only rows whose price_id or cost
# changes are written (IS DISTINCT FROM), so a re-run writes nothing and leaves no dead tuples.
_REPRICE_DAY = f"""
UPDATE telemetry_span AS s
SET price_id = {_NEW_PRICE_ID},
    cost_usd = {_NEW_COST}
FROM pricing_reprice_segment AS seg
WHERE s.is_llm
  AND s.start_time >= %(start)s AND s.start_time < %(end)s
  AND seg.provider = s.provider
  AND seg.model = {_SPAN_MODEL_SQL}
  AND s.start_time >= seg.seg_from AND s.start_time < seg.seg_to
  -- a share of self-hosted GPU time (apps.gpu.attribution) is not a catalog price
  AND s.cost_source IS DISTINCT FROM 'attributed'
  AND (s.price_id IS DISTINCT FROM ({_NEW_PRICE_ID}) OR s.cost_usd IS DISTINCT FROM ({_NEW_COST}))
"""

# The hours whose spans changed get a rollup note in the same transaction, as ingest does
# (apps/rollups/models.py, DirtyHour): the rollups re-read those hours once this commits.
_REPRICE_DAY_AND_NOTE = f"""
WITH repriced AS (
{_REPRICE_DAY}
RETURNING s.project_id, s.start_time
), noted AS (
    INSERT INTO rollups_dirtyhour (project_id, hour, noted_at)
    SELECT DISTINCT project_id, date_trunc('hour', start_time, 'UTC'), now() FROM repriced
)
SELECT count(*) FROM repriced
"""


def day_chunks(start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """[start, end) cut at UTC midnights: one piece per day partition of telemetry_span."""
    lower = start
    while lower < end:
        next_midnight = datetime.combine(lower.astimezone(UTC).date() + timedelta(days=1), time.min, tzinfo=UTC)
        upper = min(next_midnight, end)
        yield lower, upper
        lower = upper


def _segment_rows(
    book: PriceBook,
    pairs: list[tuple[str | None, str | None]],
    start: datetime,
    end: datetime,
    provider: str | None,
    model: str | None,
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for raw_provider, model_name in pairs:
        canonical = canonical_provider(raw_provider)
        if canonical is None or not model_name or canonical in SELF_HOSTED_PROVIDERS:
            continue  # unpriceable, or priced from GPU-hours by another service
        if (provider is not None and canonical != provider) or (model is not None and model_name != model):
            continue
        for piece in book.segments(raw_provider, model_name, start, end):
            entry = piece.entry
            rates = entry.rates if entry else None
            rows.append(
                (
                    raw_provider,
                    model_name,
                    piece.start,
                    piece.end,
                    entry.price.pk if entry else None,
                    rates.input if rates else None,
                    rates.cached_input if rates else None,
                    rates.cache_write if rates else None,
                    rates.output if rates else None,
                    rates.reasoning if rates else None,
                )
            )
    return rows


def _reprice_day(book: PriceBook, start: datetime, end: datetime, provider: str | None, model: str | None) -> int:
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(_DAY_MODELS, [start, end])
        rows = _segment_rows(book, cur.fetchall(), start, end, provider, model)
        if not rows:
            return 0
        cur.execute(_CREATE_SEGMENTS)
        # ON COMMIT DELETE ROWS empties it at commit, but inside an outer transaction (a
        # caller's atomic block, a test) the previous day's rows would still be there.
        cur.execute("TRUNCATE pricing_reprice_segment")
        with cur.copy(f"COPY pricing_reprice_segment ({_SEGMENT_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        # A temp table has no statistics: without them the planner guesses its size badly.
        cur.execute("ANALYZE pricing_reprice_segment")
        cur.execute(_REPRICE_DAY_AND_NOTE, {"start": start, "end": end})
        return int(cur.fetchone()[0])


def reprice_range(
    start: datetime,
    end: datetime,
    provider: str | None = None,
    model: str | None = None,
    *,
    book: PriceBook | None = None,
) -> int:
    """Re-price stored LLM spans that started in [start, end) with the catalog as it is now.

    `provider` (aliases accepted) and `model` (the exact name a span is priced as: its
    response model, else its request model) narrow the spans touched. Self-hosted spans are
    left alone. Returns how many spans changed price or cost.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("reprice_range needs aware datetimes")
    if book is None:
        book = PriceBook.load()  # the table as it is now, not a process's cached copy
    wanted_provider = canonical_provider(provider) if provider else None
    return sum(
        _reprice_day(book, day_start, day_end, wanted_provider, model) for day_start, day_end in day_chunks(start, end)
    )


@dataclass(frozen=True, slots=True)
class UnpricedModel:
    """A (provider, model) seen on LLM spans that no price row covers."""

    provider: str | None  # canonical name
    model: str | None
    spans: int
    first_seen: datetime
    last_seen: datetime
    input_tokens: int | None
    output_tokens: int | None


# Spans with cost unknown and no price row: models someone should add a price for. Spans
# whose row matched but whose tokens are unknown are left out (a price would not help), as
# are self-hosted ones. Plan: with `since`, a Bitmap Index Scan on telemetry_span_llm_start
# over the recent partitions only, then a HashAggregate over a few distinct models.
_UNPRICED = f"""
SELECT coalesce(alias.canonical, nullif(lower(btrim(s.provider)), '')) AS provider,
       {_SPAN_MODEL_SQL} AS model,
       count(*), min(s.start_time), max(s.start_time), sum(s.input_tokens), sum(s.output_tokens)
FROM telemetry_span AS s
LEFT JOIN unnest(%(alias_names)s::text[], %(alias_targets)s::text[]) AS alias(name, canonical)
       ON alias.name = lower(btrim(s.provider))
WHERE s.is_llm AND s.cost_usd IS NULL AND s.price_id IS NULL
  AND coalesce(alias.canonical, lower(btrim(s.provider)), '') <> ALL(%(self_hosted)s::text[])
  {{since}}
GROUP BY 1, 2
ORDER BY count(*) DESC, 1, 2
"""


def unpriced_models(since: datetime | None = None) -> list[UnpricedModel]:
    """Models on LLM spans (since `since`, else ever) whose cost is unknown for want of a price."""
    params: dict[str, Any] = {
        "alias_names": list(PROVIDER_ALIASES),
        "alias_targets": list(PROVIDER_ALIASES.values()),
        "self_hosted": sorted(SELF_HOSTED_PROVIDERS),
    }
    since_sql = ""
    if since is not None:
        since_sql = "AND s.start_time >= %(since)s"
        params["since"] = since
    with connection.cursor() as cur:
        cur.execute(_UNPRICED.format(since=since_sql), params)
        return [
            UnpricedModel(
                provider=provider,
                model=model,
                spans=count,
                first_seen=first,
                last_seen=last,
                input_tokens=int(tokens_in) if tokens_in is not None else None,
                output_tokens=int(tokens_out) if tokens_out is not None else None,
            )
            for provider, model, count, first, last, tokens_in, tokens_out in cur.fetchall()
        ]
