"""The building blocks of the dashboard pages: headline cards, charts and tables.

Every number comes from the metrics query layer (apps/metrics/query.run_query) with the
viewer's Scope, so a page shows exactly what the JSON API, CSV and emails show, and a user
limited to some tenants sees only those, totals included.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from apps.dashboard import charts
from apps.dashboard.charts import Chart
from apps.dashboard.params import ViewParams
from apps.metrics.query import Query, Scope, run_query

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
    return run_query(query, scope).rows


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


def cost_by(params: ViewParams, scope: Scope, dimension: str) -> Chart:
    rows = _query(params, scope, ("cost_usd", "requests"), group_by=(dimension,), granularity=params.granularity)
    rows = [row for row in rows if row["requests"]]
    return Chart(
        title=f"Cost by {params.granularity}, stacked by {dimension}",
        what=f"LLM cost of calls per {params.granularity}, one colour per {dimension} (the top 8; the rest as other).",
        unit="USD",
        range_text=params.describe_range().capitalize(),
        samples=sum(row["requests"] for row in rows),
        html=charts.stacked_by(rows, dimension, "cost_usd", unit="USD"),
    )


def traffic_over_time(params: ViewParams, scope: Scope) -> Chart:
    rows = _query(params, scope, ("requests", "errors", "retries"), granularity=params.granularity)
    return Chart(
        title="Requests, errors and retries",
        what=f"LLM calls per {params.granularity}, the failed ones and the retries among them.",
        unit=f"calls per {params.granularity}",
        range_text=params.describe_range().capitalize(),
        samples=sum(row["requests"] or 0 for row in rows),
        html=charts.time_series(rows, {"requests": "requests", "errors": "errors", "retries": "retries"},
                                unit="calls", kind="bar") if any(r["requests"] for r in rows) else None,
    )  # fmt: skip


def percentiles_over_time(params: ViewParams, scope: Scope, distribution: str, title: str) -> Chart:
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
        html=charts.time_series(rows, {"p50": metrics[0], "p95": metrics[1], "p99": metrics[2]}, unit=unit)
        if samples
        else None,
    )


def caching_over_time(params: ViewParams, scope: Scope) -> Chart:
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
        html=charts.time_series(series_rows, {"prompt cache": "prompt", "semantic cache": "semantic"}, unit="%")
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
