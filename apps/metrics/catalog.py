"""The metrics the query layer answers: names, units, and how each is made from rollup sums
or distributions (docs/metrics.md holds the definitions; this is their one implementation).

Three kinds:

- "sum": adds up over any slice (requests, tokens, cost, ...). `errors_by_type` is a sum too,
  of a mapping error type -> calls.
- "ratio": made from sums after they are added up (error_rate = errors / requests), never
  an average of per-hour ratios. None when the denominator is 0.
- "quantile": `<distribution>_p<N>` (e2e_ms_p99), read from the merged distribution of the
  slice. Each comes with `<name>_samples`, the number of values it rests on.

Money is Decimal everywhere in rows, on one scale: every money figure (sums, savings and
the money ratios cost_per_1k_requests and cost_per_successful_task) is quantized by
`quantize_money` to MONEY_PLACES = 10 decimals (1e-10 USD), the scale the spans' and
rollups' NUMERIC columns store, so a stored sum is exact and a computed one (savings are
products of token counts and per-token rates, ratios are divisions) is rounded half-even
once, in one place. QueryResult.to_frame turns them into floats for analysis.

Unknown is never zero: a money figure over calls none of which is priced is None, and a
row with any money figure carries `cost_unknown_requests` (query.py), so a partly priced
figure reads as "the known sum plus N unpriced calls".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from apps.rollups.models import DISTRIBUTIONS

# Decimal divisions of money: 28 significant digits whatever the caller's decimal context.
MONEY_CONTEXT = Context(prec=28)
# The one scale of money figures: the NUMERIC(_, 10) of Span.cost_usd and the rollup sums.
MONEY_PLACES = 10
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
# Quantizing needs room for every digit left of the point plus the ten after it.
_QUANTIZE_CONTEXT = Context(prec=60, rounding=ROUND_HALF_EVEN)
# The metric that travels with every money figure.
COST_UNKNOWN = "cost_unknown_requests"

# RollupHour's additive columns, and the SQL type their sum is read as.
SUM_COLUMNS: dict[str, str] = {
    "requests": "bigint",
    "errors": "bigint",
    "retries": "bigint",
    "input_tokens": "bigint",
    "cache_read_tokens": "bigint",
    "cache_write_tokens": "bigint",
    "output_tokens": "bigint",
    "reasoning_tokens": "bigint",
    "tokens_unknown": "bigint",
    "cost_usd": "numeric",
    "cost_unknown": "bigint",
    "cache_savings_usd": "numeric",
    "semantic_cache_lookups": "bigint",
    "semantic_cache_hits": "bigint",
    "tasks": "bigint",
    "successful_tasks": "bigint",
    "generation_tokens": "bigint",
    "generation_ms": "double precision",
}

Sums = Mapping[str, Any]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    description: str
    unit: str
    kind: str  # "sum", "ratio" or "quantile"
    # The RollupHour sums it is made from (sum and ratio metrics).
    columns: tuple[str, ...] = ()
    compute: Callable[[Sums], Any] | None = field(default=None, compare=False, repr=False)
    # Quantile metrics: the distribution and the quantile (0..1). `<dist>_samples` metrics
    # have a distribution and no quantile.
    distribution: str | None = None
    quantile: float | None = None

    @property
    def is_money(self) -> bool:
        return self.unit.startswith("USD")


def quantize_money(value: Decimal | None) -> Decimal | None:
    """A money figure on the one scale (MONEY_PLACES decimals, half-even); None stays None."""
    if value is None:
        return None
    return _QUANTIZE_CONTEXT.quantize(Decimal(value), MONEY_QUANTUM)


def none_priced(sums: Sums) -> bool:
    """Calls were made and none of them has a known cost: a money figure over them is
    unknown, not 0. (No calls at all cost nothing: that 0 is known.)"""
    return bool(sums["requests"]) and sums["cost_unknown"] >= sums["requests"]


def _money_sum(column: str) -> Callable[[Sums], Any]:
    return lambda sums: None if none_priced(sums) else sums[column]


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if not denominator else float(numerator) / float(denominator)


def _money_ratio(amount: Decimal, denominator: int, scale: int = 1) -> Decimal | None:
    if not denominator:
        return None
    return MONEY_CONTEXT.divide(MONEY_CONTEXT.multiply(amount, Decimal(scale)), Decimal(denominator))


def _sum(column: str, name: str, description: str, unit: str) -> MetricSpec:
    return MetricSpec(name, description, unit, "sum", (column,), lambda sums: sums[column])


def _derived(
    name: str, description: str, unit: str, kind: str, columns: tuple[str, ...], compute: Callable[[Sums], Any]
) -> MetricSpec:
    return MetricSpec(name, description, unit, kind, columns, compute)


_FIXED: tuple[MetricSpec, ...] = (
    _sum("requests", "requests", "Calls: LLM spans whose parent is not an LLM span", "calls"),
    _sum("errors", "errors", "Calls with status ERROR, an error.type, or a vLLM abort", "calls"),
    _derived(
        "successes",
        "Calls that are not errors",
        "calls",
        "sum",
        ("requests", "errors"),
        lambda s: s["requests"] - s["errors"],
    ),
    _derived(
        "error_rate",
        "errors / requests",
        "ratio",
        "ratio",
        ("errors", "requests"),
        lambda s: _ratio(s["errors"], s["requests"]),
    ),
    MetricSpec("errors_by_type", "Errors by error.type ('error' when none): a mapping type -> calls", "calls", "sum"),
    _sum("retries", "retries", "Calls that retry an earlier call", "calls"),
    _derived(
        "retry_rate",
        "retries / requests",
        "ratio",
        "ratio",
        ("retries", "requests"),
        lambda s: _ratio(s["retries"], s["requests"]),
    ),
    _sum("input_tokens", "input_tokens", "Input tokens, cached input included, of calls with known counts", "tokens"),
    _sum("cache_read_tokens", "cache_read_tokens", "Input tokens read from the provider's prompt cache", "tokens"),
    _sum("cache_write_tokens", "cache_write_tokens", "Input tokens written to the provider's prompt cache", "tokens"),
    _sum("output_tokens", "output_tokens", "Output tokens, reasoning included, of calls with known counts", "tokens"),
    _sum("reasoning_tokens", "reasoning_tokens", "Reasoning tokens (part of output tokens)", "tokens"),
    _sum("tokens_unknown", "tokens_unknown", "Calls whose input or output token count is unknown", "calls"),
    _derived(
        "cost_usd",
        "Cost of priced calls (unknown costs excluded; null when no call is priced)",
        "USD",
        "sum",
        ("cost_usd", "requests", "cost_unknown"),
        _money_sum("cost_usd"),
    ),
    _sum(
        "cost_unknown", "cost_unknown_requests", "Calls whose cost is unknown (no price row, tokens unknown)", "calls"
    ),
    _derived(
        "cost_per_1k_requests",
        "cost_usd / requests x 1000 (null when no call is priced)",
        "USD per 1k calls",
        "ratio",
        ("cost_usd", "requests", "cost_unknown"),
        lambda s: None if none_priced(s) else _money_ratio(s["cost_usd"], s["requests"], 1000),
    ),
    _sum("tasks", "tasks", "Tasks (traces, or observatory.task.id), counted in the hour of their root span", "tasks"),
    _sum("successful_tasks", "successful_tasks", "Tasks whose root span is not an ERROR", "tasks"),
    _derived(
        "cost_per_successful_task",
        "cost_usd (failures and retries included) / successful tasks (null when no call is priced)",
        "USD per task",
        "ratio",
        ("cost_usd", "successful_tasks", "requests", "cost_unknown"),
        lambda s: None if none_priced(s) else _money_ratio(s["cost_usd"], s["successful_tasks"]),
    ),
    _derived(
        "prompt_cache_hit_rate",
        "cache_read_tokens / input_tokens",
        "ratio",
        "ratio",
        ("cache_read_tokens", "input_tokens"),
        lambda s: _ratio(s["cache_read_tokens"], s["input_tokens"]),
    ),
    _derived(
        "cache_savings_usd",
        "Money saved by prompt caching: cache-read tokens x (input rate - cached-input rate) of priced calls "
        "(null when no call is priced)",
        "USD",
        "sum",
        ("cache_savings_usd", "requests", "cost_unknown"),
        _money_sum("cache_savings_usd"),
    ),
    _sum(
        "semantic_cache_lookups",
        "semantic_cache_lookups",
        "Spans that looked up the application's semantic cache",
        "spans",
    ),
    _sum("semantic_cache_hits", "semantic_cache_hits", "Semantic-cache lookups that hit", "spans"),
    _derived(
        "semantic_cache_hit_rate",
        "semantic_cache_hits / semantic_cache_lookups",
        "ratio",
        "ratio",
        ("semantic_cache_hits", "semantic_cache_lookups"),
        lambda s: _ratio(s["semantic_cache_hits"], s["semantic_cache_lookups"]),
    ),
    _derived(
        "tokens_per_second",
        "Output tokens / generation time (e2e - TTFT), summed over calls reporting both",
        "tokens/s",
        "ratio",
        ("generation_tokens", "generation_ms"),
        lambda s: _ratio(s["generation_tokens"], s["generation_ms"] / 1000.0),
    ),
)

DISTRIBUTION_UNITS = {"e2e_ms": "ms", "ttft_ms": "ms", "tpot_ms": "ms", "queue_ms": "ms", "output_tokens": "tokens"}
DISTRIBUTION_DESCRIPTIONS = {
    "e2e_ms": "end-to-end latency of calls",
    "ttft_ms": "time to first token of calls that report it",
    "tpot_ms": "time per output token (e2e - TTFT) / (output tokens - 1)",
    "queue_ms": "vLLM queue time of server spans",
    "output_tokens": "output tokens per call",
}
# The quantiles listed in METRICS; any other `_p<N>` parses too.
LISTED_PERCENTILES = ("50", "90", "95", "99", "999")

_QUANTILE_NAME = re.compile(r"^(?P<dist>" + "|".join(DISTRIBUTIONS) + r")_p(?P<digits>\d{1,6})$")


def percentile_from_digits(digits: str) -> float:
    """p50 -> 0.5, p5 -> 0.05, p999 -> 0.999, p9999 -> 0.9999, p995 -> 0.995, p100 -> 1.

    The first two digits are whole percent and the rest its decimals, the way latency
    percentiles are usually named; "100" alone is the maximum.
    """
    if digits == "100":
        return 1.0
    whole, decimals = digits[:2], digits[2:]
    return float(f"{whole}.{decimals or '0'}") / 100.0


def _quantile_spec(name: str, dist: str, digits: str) -> MetricSpec:
    q = percentile_from_digits(digits)
    return MetricSpec(
        name,
        f"{q * 100:g}th percentile of the {DISTRIBUTION_DESCRIPTIONS[dist]}",
        DISTRIBUTION_UNITS[dist],
        "quantile",
        distribution=dist,
        quantile=q,
    )


def _samples_spec(dist: str) -> MetricSpec:
    return MetricSpec(
        f"{dist}_samples",
        f"Values in the {DISTRIBUTION_DESCRIPTIONS[dist]} distribution",
        "values",
        "sum",
        distribution=dist,
    )


METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _FIXED}
for _dist in DISTRIBUTIONS:
    for _digits in LISTED_PERCENTILES:
        METRICS[f"{_dist}_p{_digits}"] = _quantile_spec(f"{_dist}_p{_digits}", _dist, _digits)
    METRICS[f"{_dist}_samples"] = _samples_spec(_dist)


def metric_spec(name: str) -> MetricSpec:
    """The spec of a metric name; any `<dist>_p<N>` parses. Unknown names raise ValueError."""
    spec = METRICS.get(name)
    if spec is not None:
        return spec
    match = _QUANTILE_NAME.match(name)
    if match:
        return _quantile_spec(name, match["dist"], match["digits"])
    fixed = ", ".join(spec.name for spec in _FIXED)
    raise ValueError(
        f"unknown metric {name!r}; valid metrics: {fixed}, <dist>_samples and <dist>_p<N> "
        f"(p50, p95, p99, p999 = 0.999, ...) for dist in {', '.join(DISTRIBUTIONS)}"
    )
