"""Self-hosted vs API: cost per 1M tokens, and what moving a feature would have cost.

For each feature that used the self-hosted tier in the range (metrics query layer, scoped):

- **self-hosted cost per 1M tokens** = its attributed GPU cost / (input + output tokens) x 1e6;
- **API cost per 1M tokens** of each API model the same feature used = its cost / tokens x 1e6;
- **self-hosted traffic on the API model** = the feature's self-hosted input and output tokens
  priced at the API model's catalog row in force at the end of the range (no prompt caching:
  the self-hosted calls report none);
- **API traffic on the self-hosted tier** = the feature's API tokens (input + output) at the
  measured self-hosted cost per token of the range, over all self-hosted calls the viewer
  sees: the marginal rate (attributed cost only, which assumes the tier had room: its idle
  capacity is the headroom) and, for people who see every tenant, the fully loaded rate
  ((attributed + idle) / tokens: what the tier costs per token as it is used now).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from apps.metrics.query import Filters, Query, Scope, run_query
from apps.pricing.pricebook import PriceBook, cost_of
from apps.pricing.providers import is_self_hosted

MILLION = Decimal(1_000_000)


def per_mtok(cost: Decimal | None, tokens: int) -> Decimal | None:
    if cost is None or not tokens:
        return None
    return (cost / tokens * MILLION).quantize(Decimal("0.0001"))


@dataclass
class ApiModelUse:
    provider: str
    model: str
    requests: int
    tokens: int
    cost: Decimal | None
    cost_per_mtok: Decimal | None
    self_hosted_volume_here: Decimal | None  # the feature's self-hosted tokens at this model's catalog rates
    this_volume_self_hosted: Decimal | None  # this model's tokens at the self-hosted marginal rate
    this_volume_fully_loaded: Decimal | None


@dataclass
class FeatureComparison:
    feature: str
    self_hosted_requests: int = 0
    self_hosted_input: int = 0
    self_hosted_output: int = 0
    self_hosted_cost: Decimal | None = None
    api: list[ApiModelUse] = field(default_factory=list)

    @property
    def self_hosted_tokens(self) -> int:
        return self.self_hosted_input + self.self_hosted_output

    @property
    def self_hosted_per_mtok(self) -> Decimal | None:
        return per_mtok(self.self_hosted_cost, self.self_hosted_tokens)


@dataclass
class Comparison:
    features: list[FeatureComparison]
    marginal_per_mtok: Decimal | None
    fully_loaded_per_mtok: Decimal | None


def compare(start: datetime, end: datetime, scope: Scope, idle_usd: Decimal | None = None) -> Comparison:
    """`idle_usd`: the tier's idle cost over the range, for viewers who may see it (else None)."""
    query = Query(("requests", "input_tokens", "output_tokens", "cost_usd"), start, end, filters=Filters(),
                  group_by=("feature", "provider", "model"))  # fmt: skip
    rows = [row for row in run_query(query, scope).rows if row["requests"]]
    self_hosted_cost, self_hosted_tokens = Decimal(0), 0
    by_feature: dict[str, FeatureComparison] = {}
    for row in rows:
        if is_self_hosted(row["provider"]):
            entry = by_feature.setdefault(row["feature"], FeatureComparison(row["feature"]))
            entry.self_hosted_requests += row["requests"]
            entry.self_hosted_input += row["input_tokens"] or 0
            entry.self_hosted_output += row["output_tokens"] or 0
            if row["cost_usd"] is not None:
                entry.self_hosted_cost = (entry.self_hosted_cost or Decimal(0)) + row["cost_usd"]
                self_hosted_cost += row["cost_usd"]
            self_hosted_tokens += (row["input_tokens"] or 0) + (row["output_tokens"] or 0)
    marginal = per_mtok(self_hosted_cost, self_hosted_tokens)
    fully_loaded = per_mtok(self_hosted_cost + idle_usd, self_hosted_tokens) if idle_usd is not None else None
    book = PriceBook.current()
    for row in rows:
        found = by_feature.get(row["feature"])
        if found is None or is_self_hosted(row["provider"]):
            continue
        entry = found
        tokens = (row["input_tokens"] or 0) + (row["output_tokens"] or 0)
        price = book.price_for(row["provider"], row["model"], end)
        moved_here = None
        if price is not None:
            moved_here = cost_of(input_tokens=entry.self_hosted_input, output_tokens=entry.self_hosted_output,
                                 price=price)  # fmt: skip
        entry.api.append(
            ApiModelUse(
                provider=row["provider"],
                model=row["model"],
                requests=row["requests"],
                tokens=tokens,
                cost=row["cost_usd"],
                cost_per_mtok=per_mtok(row["cost_usd"], tokens),
                self_hosted_volume_here=moved_here,
                this_volume_self_hosted=_at_rate(tokens, marginal),
                this_volume_fully_loaded=_at_rate(tokens, fully_loaded),
            )
        )
    for entry in by_feature.values():
        entry.api.sort(key=lambda use: -(use.cost or 0))
    features = sorted(by_feature.values(), key=lambda e: -(e.self_hosted_cost or 0))
    return Comparison(features, marginal, fully_loaded)


def _at_rate(tokens: int, rate_per_mtok: Decimal | None) -> Decimal | None:
    if rate_per_mtok is None:
        return None
    return (rate_per_mtok * tokens / MILLION).quantize(Decimal("0.01"))
