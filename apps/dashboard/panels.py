"""The building blocks of the dashboard pages: headline cards, charts and tables.

Every number comes from the metrics query layer (apps/metrics/query.run_query) with the
viewer's Scope, so a page shows exactly what the JSON API, CSV and emails show, and a user
limited to some tenants sees only those, totals included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from apps.dashboard import charts
from apps.dashboard.charts import Chart, Mark
from apps.dashboard.page_reads import query as page_query
from apps.dashboard.params import ViewParams
from apps.metrics.distributions import coarsen, merged_distributions
from apps.metrics.query import Query, Scope, SharedReads

HEADLINE_METRICS = (
    "cost_usd",
    "requests",
    "errors",
    "error_rate",
    "retry_rate",
    "e2e_ms_p50",
    "e2e_ms_p95",
    "e2e_ms_p99",
    "ttft_ms_p50",
    "ttft_ms_p95",
    "ttft_ms_p99",
    "prompt_cache_hit_rate",
    "cache_savings_usd",
    "semantic_cache_hit_rate",
    "semantic_cache_lookups",
    "cost_per_successful_task",
    "successful_tasks",
    "tasks",
    "cost_unknown_requests",
    "cost_per_1k_requests",
)
COMPARED = ("cost_usd", "requests", "error_rate", "e2e_ms_p99", "ttft_ms_p95", "cost_per_successful_task")


def _query(params: ViewParams, scope: Scope, metrics: tuple[str, ...], **kwargs: Any) -> list[dict[str, Any]]:
    start, end = kwargs.pop("range", (params.start, params.end))
    query = Query(metrics=metrics, start=start, end=end, filters=params.query_filters(), **kwargs)
    return page_query(query, scope).rows


def change(current: Any, previous: Any) -> float | None:
    """Relative change, or None when there is nothing to compare with."""
    if current is None or previous in (None, 0):
        return None
    return float(Decimal(str(current)) / Decimal(str(previous)) - 1)


@dataclass(frozen=True)
class Headline:
    values: dict[str, Any]
    previous: dict[str, Any]

    @property
    def changes(self) -> dict[str, float | None]:
        return {name: change(self.values.get(name), self.previous.get(name)) for name in COMPARED}

    @property
    def has_data(self) -> bool:
        return bool(self.values.get("requests")) or bool(self.values.get("tasks"))


def headline(params: ViewParams, scope: Scope) -> Headline:
    current = _query(params, scope, HEADLINE_METRICS)
    previous = _query(params, scope, COMPARED, range=params.previous)
    return Headline(values=current[0] if current else {}, previous=previous[0] if previous else {})


def cost_by(params: ViewParams, scope: Scope, dimension: str, *, marks: Sequence[Mark] = ()) -> Chart:
    rows = _query(params, scope, ("cost_usd", "requests"), group_by=(dimension,), granularity=params.granularity)
    rows = [row for row in rows if row["requests"]]
    unpriced = sum(row["cost_unknown_requests"] for row in rows)
    unpriced_note = f" {unpriced:,} calls of unknown cost (no price) add nothing here." if unpriced else ""
    return Chart(
        title=f"Cost by {params.granularity}, stacked by {dimension}",
        what=f"LLM cost of calls per {params.granularity}, one colour per {dimension} (the top 8; the rest as other)."
        + unpriced_note,
        unit="USD",
        range_text=params.describe_range().capitalize(),
        samples=sum(row["requests"] for row in rows),
        html=charts.stacked_by(rows, dimension, "cost_usd", unit="USD", marks=marks),
    )


def traffic_over_time(params: ViewParams, scope: Scope, *, marks: Sequence[Mark] = ()) -> Chart:
    rows = _query(params, scope, ("requests", "errors", "retries"), granularity=params.granularity)
    return Chart(
        title="Requests, errors and retries",
        what=f"LLM calls per {params.granularity}, the failed ones and the retries among them.",
        unit=f"calls per {params.granularity}",
        range_text=params.describe_range().capitalize(),
        samples=sum(row["requests"] or 0 for row in rows),
        html=charts.time_series(rows, {"requests": "requests", "errors": "errors", "retries": "retries"},
                                unit="calls", kind="bar", marks=marks) if any(r["requests"] for r in rows) else None,
    )  # fmt: skip


def percentiles_over_time(
    params: ViewParams, scope: Scope, distribution: str, title: str, *, marks: Sequence[Mark] = ()
) -> Chart:
    metrics = tuple(f"{distribution}_p{n}" for n in ("50", "95", "99"))
    rows = _query(params, scope, metrics, granularity=params.granularity)
    samples = sum(row[f"{metrics[0]}_samples"] or 0 for row in rows)
    unit = "tokens" if distribution == "output_tokens" else "ms"
    return Chart(
        title=title,
        what=f"p50, p95 and p99 per {params.granularity}, from mergeable distributions (within 1% of exact).",
        unit=unit,
        range_text=params.describe_range().capitalize(),
        samples=samples,
        html=charts.time_series(rows, {"p50": metrics[0], "p95": metrics[1], "p99": metrics[2]}, unit=unit, marks=marks)
        if samples
        else None,
    )


def caching_over_time(params: ViewParams, scope: Scope, *, marks: Sequence[Mark] = ()) -> Chart:
    rows = _query(
        params, scope, ("prompt_cache_hit_rate", "semantic_cache_hit_rate", "input_tokens"),
        granularity=params.granularity,
    )  # fmt: skip
    series_rows = [
        {**row, "prompt": _pct(row["prompt_cache_hit_rate"]), "semantic": _pct(row["semantic_cache_hit_rate"])}
        for row in rows
    ]
    return Chart(
        title="Cache hit rates",
        what="Provider prompt cache (cached input tokens / input tokens) and semantic cache (hits / lookups).",
        unit="%",
        range_text=params.describe_range().capitalize(),
        samples=sum(row["input_tokens"] or 0 for row in rows),
        html=charts.time_series(
            series_rows, {"prompt cache": "prompt", "semantic cache": "semantic"}, unit="%", marks=marks
        )
        if any(row["input_tokens"] for row in rows)
        else None,
    )


def _pct(value: float | None) -> float | None:
    return None if value is None else value * 100


TOP_METRICS = ("cost_usd", "requests", "error_rate", "e2e_ms_p95", "cost_per_successful_task", "cost_unknown_requests")


def top_by_cost(params: ViewParams, scope: Scope, dimension: str, limit: int = 10) -> list[dict[str, Any]]:
    """The `limit` values of `dimension` with the highest cost, with their change vs the previous period."""
    rows = _query(params, scope, TOP_METRICS, group_by=(dimension,))
    previous = {
        row[dimension]: row["cost_usd"]
        for row in _query(params, scope, ("cost_usd",), group_by=(dimension,), range=params.previous)
    }
    rows = [row for row in rows if row["requests"]]
    rows.sort(key=lambda row: (-(row["cost_usd"] or 0), -(row["requests"] or 0)))
    for row in rows:
        row["name"] = row[dimension] or "(unattributed)"
        row["previous_cost_usd"] = previous.get(row[dimension])
        row["cost_change"] = change(row["cost_usd"], row["previous_cost_usd"])
    return rows[:limit]


TABLE_COLUMNS = (
    ("name", "Name"),
    ("cost_usd", "Cost (USD)"),
    ("previous_cost_usd", "Previous period cost (USD)"),
    ("cost_change", "Cost change"),
    ("requests", "Requests"),
    ("error_rate", "Error rate"),
    ("e2e_ms_p95", "p95 latency (ms)"),
    ("e2e_ms_p95_samples", "p95 samples"),
    ("cost_per_successful_task", "Cost per successful task (USD)"),
    ("cost_unknown_requests", "Calls with unknown cost"),
)


# Lists and detail pages (features, tenants, models): every value in range, and one value's
# figures. Their group-bys and filters map onto materialised grouping sets: feature, tenant,
# (provider, model), (tenant, feature), (feature, provider, model), (tenant, provider, model).

BREAKDOWN_METRICS = (
    "cost_usd",
    "requests",
    "errors",
    "error_rate",
    "retries",
    "retry_rate",
    "e2e_ms_p50",
    "e2e_ms_p95",
    "e2e_ms_p99",
    "cost_per_1k_requests",
    "cost_per_successful_task",
    "successful_tasks",
    "cost_unknown_requests",
)
UNATTRIBUTED_LABEL = "(unattributed)"


def _run(
    params: ViewParams, scope: Scope, metrics: tuple[str, ...], shared: SharedReads | None, **kwargs: Any
) -> list[dict[str, Any]]:
    start, end = kwargs.pop("range", (params.start, params.end))
    query = Query(metrics=metrics, start=start, end=end, filters=params.query_filters(), **kwargs)
    return page_query(query, scope, shared).rows


def breakdown(
    params: ViewParams, scope: Scope, dimensions: tuple[str, ...], *, shared: SharedReads | None = None
) -> list[dict[str, Any]]:
    """Every value (or combination) of `dimensions` with calls in range, by cost, highest first,
    with its change against the previous period. Each row's `labels` name it for people."""
    rows = _run(params, scope, BREAKDOWN_METRICS, shared, group_by=dimensions)
    previous = {
        tuple(row[dim] for dim in dimensions): row["cost_usd"]
        for row in _run(params, scope, ("cost_usd",), shared, group_by=dimensions, range=params.previous)
    }
    rows = [row for row in rows if row["requests"]]
    for row in rows:
        key = tuple(row[dim] for dim in dimensions)
        row["labels"] = [value or UNATTRIBUTED_LABEL for value in key]
        row["name"] = " / ".join(row["labels"])
        row["previous_cost_usd"] = previous.get(key)
        row["cost_change"] = change(row["cost_usd"], row["previous_cost_usd"])
        row["latency_samples"] = row["e2e_ms_p50_samples"]
    return sort_rows(rows, "-cost_usd")


# Columns a breakdown table sorts by (?sort=<key>, ?sort=-<key> for highest first).
SORT_KEYS = (
    "name",
    "cost_usd",
    "cost_change",
    "requests",
    "error_rate",
    "retry_rate",
    "e2e_ms_p50",
    "e2e_ms_p95",
    "e2e_ms_p99",
    "latency_samples",
    "cost_per_1k_requests",
    "cost_per_successful_task",
)


def sort_rows(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """Rows by one SORT_KEYS column ("-" first: descending); rows without a value go last
    either way, and ties keep the cost order."""
    key = sort.removeprefix("-")
    descending = sort.startswith("-")
    if key not in SORT_KEYS:
        raise ValueError(f"cannot sort by {key!r}")
    present = [row for row in rows if row.get(key) is not None]
    missing = [row for row in rows if row.get(key) is None]
    if key == "name":
        present.sort(key=lambda row: row["name"].casefold(), reverse=descending)
    else:
        present.sort(key=lambda row: row[key], reverse=descending)
    return present + missing


def breakdown_columns(dimensions: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """CSV columns of a breakdown (views.table_csv): the names, then every figure in full."""
    return (
        *((f"label_{dim}", dim.capitalize()) for dim in dimensions),
        ("cost_usd", "Cost (USD)"),
        ("previous_cost_usd", "Previous period cost (USD)"),
        ("cost_change", "Cost change"),
        ("requests", "Requests"),
        ("errors", "Errors"),
        ("error_rate", "Error rate"),
        ("retries", "Retries"),
        ("retry_rate", "Retry rate"),
        ("e2e_ms_p50", "p50 latency (ms)"),
        ("e2e_ms_p95", "p95 latency (ms)"),
        ("e2e_ms_p99", "p99 latency (ms)"),
        ("latency_samples", "Latency samples"),
        ("cost_per_1k_requests", "Cost per 1,000 requests (USD)"),
        ("cost_per_successful_task", "Cost per successful task (USD)"),
        ("successful_tasks", "Successful tasks"),
        ("cost_unknown_requests", "Calls with unknown cost"),
    )


def csv_rows(rows: list[dict[str, Any]], dimensions: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{**row, **{f"label_{dim}": label for dim, label in zip(dimensions, row["labels"], strict=True)}}
            for row in rows]  # fmt: skip


USAGE_METRICS = (
    "requests",
    "retries",
    "retry_rate",
    "cost_usd",
    "cost_per_1k_requests",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "tokens_unknown",
)
TOKEN_KINDS = {
    "input, not cached": "input_uncached",
    "cache read": "cache_read_tokens",
    "cache write": "cache_write_tokens",
    "output, not reasoning": "output_plain",
    "reasoning": "reasoning_tokens",
}


def usage_over_time(
    params: ViewParams, scope: Scope, *, shared: SharedReads | None = None, marks: Sequence[Mark] = ()
) -> list[Chart]:
    """Token mix, cost per 1,000 requests and retry rate over time, from one query."""
    rows = _run(params, scope, USAGE_METRICS, shared, granularity=params.granularity)
    requests = sum(row["requests"] for row in rows)
    unknown = sum(row["tokens_unknown"] for row in rows)
    for row in rows:
        # Input counts cached input (read and write) and output counts reasoning (docs/metrics.md):
        # the stack shows each token once.
        row["input_uncached"] = max(0, row["input_tokens"] - row["cache_read_tokens"] - row["cache_write_tokens"])
        row["output_plain"] = max(0, row["output_tokens"] - row["reasoning_tokens"])
        row["retry_pct"] = _pct(row["retry_rate"])
    range_text = params.describe_range().capitalize()
    has_tokens = any(row["input_tokens"] or row["output_tokens"] for row in rows)
    unknown_note = f" {unknown:,} calls without token counts are left out." if unknown else ""
    return [
        Chart(
            title="Token mix",
            what=f"Tokens per {params.granularity}: input not from the prompt cache, read from it, written to it, "
            f"output other than reasoning, and reasoning; over calls with known counts.{unknown_note}",
            unit=f"tokens per {params.granularity}",
            range_text=range_text,
            samples=requests - unknown,
            html=charts.time_series(rows, TOKEN_KINDS, unit="tokens", kind="bar", stacked=True, marks=marks)
            if has_tokens
            else None,
        ),
        Chart(
            title="Cost per 1,000 requests",
            what=f"LLM cost / calls x 1,000 per {params.granularity} (calls with unknown cost add calls, not cost).",
            unit="USD per 1,000 calls",
            range_text=range_text,
            samples=requests,
            html=charts.time_series(rows, {"cost per 1,000 requests": "cost_per_1k_requests"}, unit="USD", marks=marks)
            if requests
            else None,
        ),
        Chart(
            title="Retry rate",
            what=f"Calls that retry an earlier call / calls, per {params.granularity}.",
            unit="% of calls",
            range_text=range_text,
            samples=requests,
            html=charts.time_series(rows, {"retry rate": "retry_pct"}, unit="%", marks=marks) if requests else None,
        ),
    ]


def latency_distribution(params: ViewParams, scope: Scope, *, shared: SharedReads | None = None) -> Chart:
    """Histogram of e2e latency and TTFT over the whole range, from the merged distributions."""
    found = merged_distributions(("e2e_ms", "ttft_ms"), params.start, params.end, params.query_filters(), scope,
                                 shared=shared)  # fmt: skip
    e2e, ttft = found["e2e_ms"], found["ttft_ms"]
    e2e_calls, ttft_calls = int(e2e[1].sum()), int(ttft[1].sum())
    series = {"end-to-end": coarsen(*e2e), "time to first token": coarsen(*ttft)}
    return Chart(
        title="Latency distribution",
        what=f"Share of calls in each latency bucket (log scale, 20 per decade): end-to-end over {e2e_calls:,} "
        f"calls, time to first token over {ttft_calls:,} calls that report it; from the merged distributions.",
        unit="ms (x axis), % of calls (y axis)",
        range_text=params.describe_range().capitalize(),
        samples=e2e_calls,
        html=charts.distribution(series, unit="ms") if e2e_calls or ttft_calls else None,
    )
