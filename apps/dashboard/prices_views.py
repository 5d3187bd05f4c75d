"""The prices page: the price catalog with its effective dates, and the models seen without a price.

    /prices/                               rows in force now, every provider
    /prices/?when=all&provider=openai      openai's rows, past and scheduled ones included
    /prices/?range=30d&csv=unpriced        the unpriced listing of the last 30 days as CSV

`provider` (repeatable) filters both tables; the range and the other filters of every page
apply to the unpriced listing.

The catalog is public pricing, not tenant data: everyone sees all of it. The unpriced
listing counts calls, which are tenant data, so it reads the metrics query layer with the
viewer's Scope (trace attribution, like every figure) rather than
apps.pricing.services.unpriced_models, whose SQL sees every tenant. Which (provider, model)
pairs lack a price is then the price book's answer for the stretch they were seen in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from apps.accounts.access import scope_for
from apps.dashboard.page_reads import page_reads
from apps.dashboard.page_reads import query as page_query
from apps.dashboard.params import BadParameter, ViewParams, filter_bar_context, page_now, parse_params
from apps.dashboard.views import bad_request, checked_page, table_csv
from apps.metrics.query import Filters, Query, Scope
from apps.pricing.models import Price
from apps.pricing.providers import canonical_provider, is_self_hosted
from apps.pricing.services import PriceBook

WHEN = {"now": "in force now", "all": "all rows, past and scheduled included"}
DEFAULT_WHEN = "now"
CSV_TABLES = ("prices", "unpriced")
# First/last seen come from hourly buckets up to this range, daily ones past it, so a long
# range reads a bounded number of rows.
HOURLY_UP_TO = timedelta(days=31)

PRICE_COLUMNS = (
    ("provider", "Provider"),
    ("model_pattern", "Model pattern"),
    ("effective_from", "Effective from"),
    ("effective_to", "Effective to"),
    ("status", "Status"),
    ("input_per_mtok", "Input (USD per 1M tokens)"),
    ("cached_input_per_mtok", "Cached input (USD per 1M tokens)"),
    ("cache_write_per_mtok", "Cache write (USD per 1M tokens)"),
    ("output_per_mtok", "Output (USD per 1M tokens)"),
    ("reasoning_per_mtok", "Reasoning (USD per 1M tokens)"),
    ("source_url", "Source"),
    ("retrieved_on", "Retrieved on"),
    ("notes", "Notes"),
)
UNPRICED_COLUMNS = (
    ("provider", "Provider"),
    ("model", "Model"),
    ("cost_unknown_requests", "Calls with unknown cost"),
    ("requests", "Calls"),
    ("first_seen", "First seen (UTC)"),
    ("last_seen", "Last seen (UTC)"),
    ("input_tokens", "Input tokens"),
    ("output_tokens", "Output tokens"),
)
RATE_FIELDS = (
    "input_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
    "output_per_mtok",
    "reasoning_per_mtok",
)


# The catalog -----------------------------------------------------------------------------


def price_rows(providers: tuple[str, ...], when: str, now: datetime) -> QuerySet[Price]:
    rows = Price.objects.all()
    if providers:
        rows = rows.filter(provider__in=providers)
    if when == "now":
        rows = rows.filter(Q(effective_to__isnull=True) | Q(effective_to__gt=now), effective_from__lte=now)
    return rows.order_by("provider", "model_pattern", "-effective_from")


def _rate(value: Decimal | None) -> str:
    # The column keeps 6 places; 2.500000 reads as 2.5, and 10.000000 as 10, not 1E+1.
    return "" if value is None else f"{value.normalize():f}"


def _moment(value: datetime) -> str:
    # Prices change at midnight UTC nearly always: show the date alone then.
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%d}" if value.time() == time.min else f"{value:%Y-%m-%d %H:%M} UTC"


def price_status(price: Price, now: datetime) -> str:
    if price.effective_from > now:
        return "scheduled"
    if price.effective_to is not None and price.effective_to <= now:
        return "ended"
    return "in force"


def catalog_table(prices: QuerySet[Price], now: datetime, *, staff: bool) -> list[dict[str, Any]]:
    rows = []
    for price in prices:
        row = {key: getattr(price, key) for key, _ in PRICE_COLUMNS if key != "status"}
        row["status"] = price_status(price, now)
        for key in RATE_FIELDS:
            row[f"{key}_text"] = _rate(row[key])
        row["effective_from_text"] = _moment(price.effective_from)
        row["effective_to_text"] = _moment(price.effective_to) if price.effective_to else "—"
        row["edit_url"] = reverse("admin:pricing_price_change", args=[price.pk]) if staff else None
        rows.append(row)
    return rows


# Models seen without a price ---------------------------------------------------------------


@dataclass(frozen=True)
class Unpriced:
    """The scoped listing: models no price row covers, and calls unknown for other reasons."""

    rows: list[dict[str, Any]]
    # Calls of priced models whose cost is still unknown: token counts missing (a stream
    # without usage), so a price would not help.
    priced_but_unknown: int
    granularity: str


def unpriced_listing(params: ViewParams, scope: Scope, book: PriceBook | None = None) -> Unpriced:
    granularity = "hour" if params.length <= HOURLY_UP_TO else "day"
    book = book or PriceBook.current()
    # Every model by day first (whole days are kept by the query layer). A model whose calls
    # of unknown cost all fall where a price covers it, even at day precision, is priced; only
    # the others are read hour by hour (for ranges shown by the hour), to tell exactly when
    # they were first and last seen. A month of every model by hour would be ~10k rows.
    pairs = _seen_unpriced(params, scope, "day", params.query_filters())
    candidates = {key: pair for key, pair in pairs.items()
                  if pair["cost_unknown_requests"] and not is_self_hosted(pair["provider"])}  # fmt: skip
    unpriced = {key: pair for key, pair in candidates.items() if not _priced_throughout(pair, params, book, "day")}
    if granularity == "hour" and unpriced:
        narrowed = replace(
            params.query_filters(),
            providers=tuple(sorted({pair["provider"] for pair in unpriced.values()})),
            models=tuple(sorted({pair["model"] for pair in unpriced.values()})),
        )
        by_hour = _seen_unpriced(params, scope, "hour", narrowed)
        for key, pair in unpriced.items():
            pair["first_seen"], pair["last_seen"] = by_hour[key]["first_seen"], by_hour[key]["last_seen"]
        unpriced = {key: pair for key, pair in unpriced.items() if not _priced_throughout(pair, params, book, "hour")}
    rows = sorted(unpriced.values(), key=lambda row: (-row["cost_unknown_requests"], row["provider"], row["model"]))
    # Calls of priced models whose cost is unknown anyway: a price would not help them.
    priced_but_unknown = sum(pair["cost_unknown_requests"] for key, pair in candidates.items() if key not in unpriced)
    return Unpriced(rows=rows, priced_but_unknown=priced_but_unknown, granularity=granularity)


def _priced_throughout(pair: dict[str, Any], params: ViewParams, book: PriceBook, granularity: str) -> bool:
    """Whether a price row covers every moment of the buckets with calls of unknown cost."""
    step = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
    seen_from = max(pair["first_seen"], params.start)
    seen_to = min(pair["last_seen"] + step, params.end)
    segments = book.segments(pair["provider"], pair["model"], seen_from, seen_to)
    return all(segment.entry is not None for segment in segments)


def _seen_unpriced(
    params: ViewParams, scope: Scope, granularity: str, filters: Filters
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (provider, model) in range: calls, calls of unknown cost, tokens, and the first
    and last `granularity` bucket with a call of unknown cost."""
    query = Query(
        ("cost_unknown_requests", "requests", "input_tokens", "output_tokens"),
        params.start,
        params.end,
        filters,
        group_by=("provider", "model"),
        granularity=granularity,
    )
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for bucket in page_query(query, scope).rows:
        pair = pairs.setdefault(
            (bucket["provider"] or "", bucket["model"] or ""),
            {"provider": bucket["provider"] or "", "model": bucket["model"] or "", "cost_unknown_requests": 0,
             "requests": 0, "input_tokens": 0, "output_tokens": 0, "first_seen": None, "last_seen": None},
        )  # fmt: skip
        for key in ("cost_unknown_requests", "requests", "input_tokens", "output_tokens"):
            pair[key] += bucket[key] or 0
        if bucket["cost_unknown_requests"]:
            pair["first_seen"] = min(filter(None, (pair["first_seen"], bucket["time"])))
            pair["last_seen"] = max(filter(None, (pair["last_seen"], bucket["time"])))
    return pairs


def add_price_hints(rows: list[dict[str, Any]], *, staff: bool, today: datetime) -> None:
    """What to do about each unpriced model: an admin form filled in for staff, and the
    reprice command that prices the calls already stored."""
    tomorrow = (today.astimezone(UTC) + timedelta(days=1)).date().isoformat()
    for row in rows:
        if staff:
            initial = {"provider": canonical_provider(row["provider"]) or "", "model_pattern": re.escape(row["model"])}
            row["add_url"] = f"{reverse('admin:pricing_price_add')}?{urlencode(initial)}"
        since = row["first_seen"].astimezone(UTC).date().isoformat()
        command = f"python manage.py reprice --since {since} --until {tomorrow}"
        if row["provider"]:
            command += f" --provider {row['provider']}"
        # --model matches the priced name (response model, else requested): the listing names
        # the requested one, so the command stays model-agnostic when the two may differ.
        row["reprice_command"] = command


# The view ------------------------------------------------------------------------------


@require_GET
@login_required
@checked_page
@page_reads
def prices(request: HttpRequest) -> HttpResponse:
    now = page_now()
    try:
        params = parse_params(request.GET, now)
        when = request.GET.get("when") or DEFAULT_WHEN
        if when not in WHEN:
            raise BadParameter(f"when={when!r} is not one of {', '.join(WHEN)}")
        csv_table = request.GET.get("csv")
        if csv_table is not None and csv_table not in CSV_TABLES:
            raise BadParameter(f"csv={csv_table!r} is not one of {', '.join(CSV_TABLES)}")
    except BadParameter as exc:
        return bad_request(request, exc.message, "dashboard/prices.html")
    # One `provider` filter for both tables: the catalog stores canonical names, spans the
    # name they arrived with (the query layer filters on that).
    providers = tuple(dict.fromkeys(filter(None, map(canonical_provider, params.filters.get("provider", ())))))
    staff = request.user.is_staff
    if csv_table == "prices":
        table = catalog_table(price_rows(providers, when, now), now, staff=False)
        return table_csv(table, PRICE_COLUMNS, f"observatory prices {when} {' '.join(providers) or 'all providers'}")
    unpriced = unpriced_listing(params, scope_for(request.user))
    if csv_table == "unpriced":
        return table_csv(unpriced.rows, UNPRICED_COLUMNS, f"observatory unpriced models {params.describe_range()}")
    add_price_hints(unpriced.rows, staff=staff, today=now)
    bar = filter_bar_context(params)
    for link in bar["range_links"]:  # type: ignore[attr-defined]
        link["qs"] += f"&when={when}"
    for chip in bar["filter_chips"]:  # type: ignore[attr-defined]
        chip["remove_qs"] += f"&when={when}"
    context = {
        **bar,
        "when": when,
        "when_links": [
            {"label": label, "qs": params.querystring(when=value), "active": value == when}
            for value, label in WHEN.items()
        ],
        "providers": providers,
        "catalog_providers": [
            {"name": name, "qs": params.querystring(provider=name, when=when), "active": name in providers}
            for name in Price.objects.order_by("provider").values_list("provider", flat=True).distinct()
        ],
        "all_providers_qs": params.querystring(provider=None, when=when),
        "prices": catalog_table(price_rows(providers, when, now), now, staff=staff),
        "unpriced": unpriced,
        "staff": staff,
        "admin_prices_url": reverse("admin:pricing_price_changelist") if staff else None,
        "csv_prices_qs": params.querystring(csv="prices", when=when),
        "csv_unpriced_qs": params.querystring(csv="unpriced", when=when),
    }
    return render(request, "dashboard/prices.html", context)
