"""When requests arrive: a daily and weekly shape per tenant, and time expressions for the CLI."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from collectors.simulator.catalog import FEATURES, TENANTS, TenantProfile

NS_PER_S = 1_000_000_000
# Arrival times are drawn per (15-minute bin, tenant): fine enough for a smooth day, coarse
# enough that 90 days is ~35k weights, which rng.choices handles in one call.
BIN_S = 15 * 60


def load_factor(tenant: TenantProfile, at: datetime) -> float:
    """Relative traffic of a tenant at a UTC instant, 0..1: busy working hours, quiet weekends.

    A Gaussian bump around mid-afternoon local time over a night floor; weekends at a third.
    Tenants sit in different time zones, so the sum over tenants has shoulders, not one peak.
    """
    local = at + timedelta(hours=tenant.utc_offset_h)
    hour = local.hour + local.minute / 60
    daily = 0.18 + 0.82 * math.exp(-(((hour - 13.5) / 3.8) ** 2))
    weekly = 0.35 if local.weekday() >= 5 else 1.0
    return daily * weekly


def overall_load(at: datetime) -> float:
    """Traffic-weighted load across tenants: drives provider rate limits and vLLM queueing."""
    return sum(t.weight * load_factor(t, at) for t in TENANTS.values())


@dataclass(frozen=True, slots=True)
class Arrival:
    at_ns: int
    tenant: str
    feature: str
    # Seed material for this request's own Random: keeps each request reproducible whatever
    # happens to the others (an incident adding or changing requests elsewhere).
    key: str


def mean_overall_load() -> float:
    """`overall_load` averaged over a week (15-minute steps): what a backfill's requests per
    day average over, so live traffic scaled by load / mean matches the backfill's volume."""
    monday = datetime(2026, 11, 16, tzinfo=UTC)
    steps = 7 * 24 * 4
    return sum(overall_load(monday + timedelta(minutes=15 * i)) for i in range(steps)) / steps


def draw_arrivals(rng: random.Random, start_ns: int, end_ns: int, count: int, key_prefix: str) -> list[Arrival]:
    """`count` arrivals in [start_ns, end_ns), shaped by each tenant's load, sorted by time."""
    if count <= 0 or end_ns <= start_ns:
        return []
    bins: list[tuple[int, int, TenantProfile]] = []
    cum_weights: list[float] = []
    total = 0.0
    bin_ns = BIN_S * NS_PER_S
    lo = start_ns
    while lo < end_ns:
        hi = min(lo + bin_ns, end_ns)
        mid = datetime.fromtimestamp((lo + hi) / 2 / NS_PER_S, tz=UTC)
        width = (hi - lo) / bin_ns  # a partial last bin gets its share, not a full bin's
        for tenant in TENANTS.values():
            total += tenant.weight * load_factor(tenant, mid) * width
            cum_weights.append(total)
            bins.append((lo, hi, tenant))
        lo = hi
    picks = rng.choices(bins, cum_weights=cum_weights, k=count)
    arrivals: list[Arrival] = []
    for i, (lo, hi, tenant) in enumerate(picks):
        at_ns = lo + int(rng.random() * (hi - lo))
        arrivals.append(Arrival(at_ns, tenant.name, pick_feature(rng, tenant), f"{key_prefix}:{i}"))
    arrivals.sort(key=lambda a: a.at_ns)
    return arrivals


def pick_feature(rng: random.Random, tenant: TenantProfile) -> str:
    names = [name for name, _ in tenant.features if name in FEATURES]
    weights = [w for name, w in tenant.features if name in FEATURES]
    return rng.choices(names, weights=weights, k=1)[0]


def pick_tenant(rng: random.Random, at: datetime) -> TenantProfile:
    """A tenant for a live request, weighted by who is awake right now."""
    tenants = list(TENANTS.values())
    return rng.choices(tenants, weights=[t.weight * load_factor(t, at) for t in tenants], k=1)[0]


_RELATIVE = re.compile(r"^(?P<sign>[+-])(?P<body>(?:\d+(?:\.\d+)?[wdhms])+)$")
_RELATIVE_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNIT_S = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_time(text: str, now: datetime) -> datetime:
    """`now`, a relative offset from now (`-2d`, `-1d12h`, `+30m`) or ISO 8601 (naive = UTC)."""
    text = text.strip()
    if text == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _RELATIVE_PART.findall(match["body"]))
        return now + timedelta(seconds=seconds if match["sign"] == "+" else -seconds)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"bad time {text!r}: use 'now', a relative offset like -2d or -6h30m, or ISO 8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def to_ns(at: datetime) -> int:
    # Integer arithmetic: a float of 1.7e18 ns loses sub-microsecond precision.
    delta = at - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000


def from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / NS_PER_S, tz=UTC)
