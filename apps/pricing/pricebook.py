"""The in-memory price book and the cost arithmetic.

Which row prices a span (PriceBook.price_for):
  1. rows of the span's provider (aliases normalised, providers.py) whose pattern matches
     the whole model name, ignoring case (model = response model, else request model);
  2. of those, the rows in force at the span's start: effective_from <= start < effective_to;
  3. the most specific wins: an exact model name (a pattern without regex syntax, such as
     `gpt-4o-2024-05-13`) beats any pattern; among patterns the longest wins; a tie goes to
     the row that took effect later, then to the newer row (higher id).
Ranking exact names first matters because a family pattern such as
`gpt-4o(?:-\\d{4}-\\d{2}-\\d{2})?` is longer than the one snapshot it must give way to.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

from apps.pricing.models import Price
from apps.pricing.providers import canonical_provider
from collectors.records import CanonicalSpan

# How long a process keeps its price book before re-reading the table. An admin edit
# also drops the book at once in the process that made it (apps.py); other processes (ingest
# workers) see it within this many seconds. Re-pricing always reads the table afresh.
PRICEBOOK_TTL_SECONDS = 60.0
# Distinct (provider, model) pairs remembered per book. Model names come from clients, so
# the memo is bounded: past the limit it starts over rather than growing without end.
MODEL_MEMO_LIMIT = 10_000

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Rates are held as integers in micro-dollars per million tokens (the column has 6 decimal
# places), so tokens x rate is an exact integer in units of 1e-12 USD.
RATE_SCALE = 1_000_000
COST_DECIMAL_PLACES = 10  # telemetry_span.cost_usd is numeric(20, 10)
_EXACT_NAME = re.compile(r"(?:\\[^A-Za-z0-9]|[^\\.^$*+?{}\[\]|()])*")


def datetime_to_ns(moment: datetime) -> int:
    """Unix nanoseconds of an aware datetime (microsecond precision, like timestamptz)."""
    if moment.tzinfo is None:
        raise ValueError("prices are looked up by aware datetimes; got a naive one")
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


def ns_to_datetime(ns: int) -> datetime:
    # Floor to the microsecond, as the span store does: a boundary set in microseconds then
    # splits nanosecond start times exactly as it splits the stored ones.
    return EPOCH + timedelta(microseconds=ns // 1000)


def is_exact_name(pattern: str) -> bool:
    """True when the pattern matches one model name only (no regex syntax besides escapes)."""
    return _EXACT_NAME.fullmatch(pattern) is not None


@dataclass(frozen=True, slots=True)
class Rates:
    """A price row's rates with the fall-backs applied, in micro-USD per million tokens."""

    input: int
    cached_input: int
    cache_write: int
    output: int
    reasoning: int

    @classmethod
    def of(cls, price: Price) -> Rates:
        def micros(value: Decimal | None, fallback: Decimal) -> int:
            return int((fallback if value is None else value) * RATE_SCALE)

        return cls(
            input=micros(price.input_per_mtok, price.input_per_mtok),
            cached_input=micros(price.cached_input_per_mtok, price.input_per_mtok),
            cache_write=micros(price.cache_write_per_mtok, price.input_per_mtok),
            output=micros(price.output_per_mtok, price.output_per_mtok),
            reasoning=micros(price.reasoning_per_mtok, price.output_per_mtok),
        )


def cost_of(
    *,
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read_tokens: int | None = None,
    cache_write_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    price: Price | Rates,
) -> Decimal | None:
    """USD cost of one call, exact, rounded half-up to the 10 places the span table keeps.

    Token counts are normalised (CONVENTIONS.md): input includes cache reads and writes,
    output includes reasoning. Each input token is charged once, at one rate: the
    uncached remainder at the input rate, cache reads at the cached-input rate, cache
    writes at the cache-write rate; output splits the same way into non-reasoning and
    reasoning. Unknown (None) when input or output tokens are unknown: never 0. Counts
    that contradict the normalisation (cache reads above input) leave a remainder of 0,
    never a negative charge. repricing.py repeats this arithmetic in SQL: keep them in step.
    """
    if input_tokens is None or output_tokens is None:
        return None
    rates = price if isinstance(price, Rates) else Rates.of(price)
    cache_read = max(cache_read_tokens or 0, 0)
    cache_write = max(cache_write_tokens or 0, 0)
    reasoning = max(reasoning_tokens or 0, 0)
    uncached = max(max(input_tokens, 0) - cache_read - cache_write, 0)
    non_reasoning = max(max(output_tokens, 0) - reasoning, 0)
    # Integer arithmetic: tokens x micro-USD per million tokens = units of 1e-12 USD.
    pico_usd = (
        uncached * rates.input
        + cache_read * rates.cached_input
        + cache_write * rates.cache_write
        + non_reasoning * rates.output
        + reasoning * rates.reasoning
    )
    # Round half up to 1e-10 USD, as PostgreSQL's round(numeric, 10) does for these
    # non-negative values: the number stored is the number computed here.
    tenth_nano_usd, remainder = divmod(pico_usd, 100)
    if remainder >= 50:
        tenth_nano_usd += 1
    # Built from a string: exact whatever the thread's decimal context says.
    return Decimal(f"{tenth_nano_usd}E-{COST_DECIMAL_PLACES}")


@dataclass(frozen=True, slots=True)
class _Entry:
    price: Price
    rates: Rates
    regex: re.Pattern[str]
    from_ns: int
    to_ns: int | None  # exclusive; None = still in force

    def in_force(self, at_ns: int) -> bool:
        return self.from_ns <= at_ns and (self.to_ns is None or at_ns < self.to_ns)


def _rank(price: Price) -> tuple[bool, int, datetime, int]:
    # Sorted descending: exact name, then longer pattern, then later start, then newer row.
    return (is_exact_name(price.model_pattern), len(price.model_pattern), price.effective_from, price.pk or 0)


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of time over which one price row (or none) prices a (provider, model)."""

    start: datetime
    end: datetime
    entry: _Entry | None


class PriceBook:
    """Every price row in memory, with compiled patterns, for lookups at ingest speed.

    Matching a model against the patterns is done once per distinct (provider, model) and
    remembered; a lookup is then a dict hit and a scan of the few rows that matched.
    """

    _current: PriceBook | None = None
    _current_lock = threading.Lock()

    def __init__(self, prices: Iterable[Price]) -> None:
        by_provider: dict[str, list[tuple[tuple[bool, int, datetime, int], _Entry]]] = {}
        for price in prices:
            entry = _Entry(
                price=price,
                rates=Rates.of(price),
                regex=re.compile(price.model_pattern, re.IGNORECASE),
                from_ns=datetime_to_ns(price.effective_from),
                to_ns=datetime_to_ns(price.effective_to) if price.effective_to else None,
            )
            provider = canonical_provider(price.provider) or ""
            by_provider.setdefault(provider, []).append((_rank(price), entry))
        self._by_provider: dict[str, tuple[_Entry, ...]] = {
            provider: tuple(entry for _, entry in sorted(ranked, key=lambda item: item[0], reverse=True))
            for provider, ranked in by_provider.items()
        }
        self._memo: dict[tuple[str | None, str | None], tuple[_Entry, ...]] = {}
        self.loaded_at = time.monotonic()

    @classmethod
    def load(cls) -> PriceBook:
        """A book of the rows in the table now."""
        return cls(Price.objects.all())

    @classmethod
    def current(cls) -> PriceBook:
        """The process-wide book, re-read when older than PRICEBOOK_TTL_SECONDS."""
        book = cls._current
        if book is None or time.monotonic() - book.loaded_at > PRICEBOOK_TTL_SECONDS:
            with cls._current_lock:
                book = cls._current
                if book is None or time.monotonic() - book.loaded_at > PRICEBOOK_TTL_SECONDS:
                    book = cls._current = cls.load()
        return book

    @classmethod
    def forget(cls) -> None:
        """Drop the process-wide book; the next current() re-reads the table (tests, admin edits)."""
        cls._current = None

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._by_provider.values())

    def _candidates(self, provider: str | None, model: str | None) -> tuple[_Entry, ...]:
        """Rows whose pattern matches, best first (the ranking in the module docstring)."""
        key = (provider, model)
        found = self._memo.get(key)
        if found is None:
            canonical = canonical_provider(provider)
            if not canonical or not model:
                found = ()
            else:
                found = tuple(e for e in self._by_provider.get(canonical, ()) if e.regex.fullmatch(model))
            if len(self._memo) >= MODEL_MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = found
        return found

    def entry_at_ns(self, provider: str | None, model: str | None, at_ns: int) -> _Entry | None:
        for entry in self._candidates(provider, model):
            if entry.in_force(at_ns):
                return entry
        return None

    def price_for(self, provider: str | None, model: str | None, at: datetime) -> Price | None:
        """The row that prices `model` of `provider` for a call that started at `at`."""
        entry = self.entry_at_ns(provider, model, datetime_to_ns(at))
        return entry.price if entry else None

    def segments(self, provider: str | None, model: str | None, start: datetime, end: datetime) -> list[Segment]:
        """[start, end) cut where the winning row changes, each piece with its winner.

        Re-pricing joins stored spans to these pieces, so it picks rows with this very code
        rather than a second implementation of the matching and ranking rules in SQL.
        """
        start_ns, end_ns = datetime_to_ns(start), datetime_to_ns(end)
        candidates = self._candidates(provider, model)
        cuts = {start_ns, end_ns}
        for entry in candidates:
            for boundary in (entry.from_ns, entry.to_ns):
                if boundary is not None and start_ns < boundary < end_ns:
                    cuts.add(boundary)
        pieces: list[Segment] = []
        for lower, upper in pairwise(sorted(cuts)):
            winner = next((e for e in candidates if e.in_force(lower)), None)
            if pieces and pieces[-1].entry is winner:
                pieces[-1] = Segment(pieces[-1].start, ns_to_datetime(upper), winner)
            else:
                pieces.append(Segment(ns_to_datetime(lower), ns_to_datetime(upper), winner))
        return pieces


def span_model(span: CanonicalSpan) -> str | None:
    """The model a call is priced as: what the provider says answered, else what was asked for."""
    return span.response_model or span.request_model
