"""The acceptance test of the query layer (ARCHITECTURE principle 2): on 100,000 spans with
heavy-tailed latencies over several days up to the current hour, p50/p95/p99 of latency and
TTFT for ~30 random slices are within 1% of the exact percentile_cont on raw spans, their
sample counts are exact, and so are the sums."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine

from apps.accounts.models import Project
from apps.metrics.query import DIMENSIONS, Filters, Query, Scope, run_query
from apps.telemetry.store import insert_spans
from tests.metrics.reference import QUANTILES, create_reference_calls, exact_rows
from tests.metrics.traffic import FEATURES, MODELS, SERVICES, TENANTS, Traffic, at

NOW = at("2026-03-12T14:37:12.250000")
DATA_START = at("2026-03-08T00:00:00")
SPANS = 100_000
SLICES = 30
PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
TOLERANCE = 0.01

FILTER_CHOICES: dict[str, tuple[str, ...]] = {
    "tenants": (*TENANTS, ""),
    "features": FEATURES,
    "providers": tuple(sorted({provider for provider, _ in MODELS})),
    "models": tuple(model for _, model in MODELS),
    "services": (*SERVICES, "vllm-serving"),
}


def _random_query(rng: random.Random, metrics: tuple[str, ...]) -> tuple[Query, Scope]:
    span = (NOW - DATA_START).total_seconds()
    start = DATA_START + timedelta(seconds=rng.uniform(0, span - 1800))
    if rng.random() < 0.3:
        start = start.replace(minute=0, second=0, microsecond=0)
    length = timedelta(
        seconds=rng.choice([1800, 5400, 6 * 3600, 26 * 3600, 3 * 86400, 5 * 86400]) * rng.uniform(0.6, 1)
    )
    end = NOW if rng.random() < 0.3 else min(start + length, NOW + timedelta(hours=1))
    fields = {
        name: tuple(rng.sample(choices, rng.randint(1, 2)))
        for name, choices in FILTER_CHOICES.items()
        if rng.random() < 0.2
    }
    group_by = tuple(rng.sample(DIMENSIONS, rng.choice([0, 0, 1, 1, 2])))
    granularity = rng.choice([None, None, "day", "hour"] if end - start < timedelta(days=2) else [None, "day"])
    scope = Scope(tenants=tuple(rng.sample(TENANTS, 2))) if rng.random() < 0.25 else Scope.everything()
    query = Query(metrics, start, end, Filters(**fields), group_by=group_by, granularity=granularity)
    return query, scope


def _relative_error(got: float | None, exact: float | None) -> float:
    assert got is not None and exact is not None, (got, exact)
    return abs(got - exact) / abs(exact) if exact else abs(got)


@pytest.mark.django_db
def test_percentiles_and_sums_of_random_slices_match_raw_spans() -> None:
    from apps.rollups.runner import rollup_range

    project = Project.objects.create(name="accuracy")
    traffic = Traffic(seed=11)
    with time_machine.travel(NOW, tick=False):
        spans = traffic.spans(SPANS, DATA_START, NOW)
        for first in range(0, len(spans), 20_000):
            insert_spans(project.pk, spans[first : first + 20_000])
        rollup_range(DATA_START, NOW.replace(minute=0, second=0, microsecond=0))
        # Late arrivals in two closed hours after the rollup: noted, and read raw.
        late = traffic.spans(400, at("2026-03-10T09:00:00"), at("2026-03-10T11:00:00"))
        insert_spans(project.pk, late)
        create_reference_calls()

        metrics = ("requests", "cost_usd", "input_tokens", "output_tokens", "cache_read_tokens")
        metrics += tuple(f"{dist}_{p}" for dist in ("e2e_ms", "ttft_ms") for p in PERCENTILES)
        rng = random.Random(2026)
        worst = 0.0
        compared = 0
        noted_read = 0
        for _ in range(SLICES):
            query, scope = _random_query(rng, metrics)
            result = run_query(query, scope)
            noted_read += bool(result.plan and result.plan.noted)
            expected = exact_rows(query.start, query.end, query.filters, scope, query.group_by, query.granularity)
            got = {(row["time"], *(row[dim] for dim in query.group_by)): row for row in result.rows}
            for key, row in got.items():
                if key not in expected:
                    assert row["requests"] == 0, (query, scope, key, row)
            for key, exact in expected.items():
                assert key in got, (query, scope, key)
                row = got[key]
                context = (query, scope, key)
                assert row["requests"] == exact["requests"], context
                assert row["cost_usd"] == (exact["cost_usd"] or Decimal(0)), context
                assert isinstance(row["cost_usd"], Decimal)
                for name in ("input_tokens", "output_tokens", "cache_read_tokens"):
                    assert row[name] == (exact[name] or 0), (context, name)
                for dist, column, samples in (("e2e_ms", "e2e", "requests"), ("ttft_ms", "ttft", "ttft_samples")):
                    for p, q in PERCENTILES.items():
                        name = f"{dist}_{p}"
                        assert row[f"{name}_samples"] == exact[samples], (context, name)
                        if exact[samples] == 0:
                            assert row[name] is None
                            continue
                        error = _relative_error(row[name], exact[column][QUANTILES.index(q)])
                        assert error <= TOLERANCE, (context, name, row[name], exact[column])
                        worst = max(worst, error)
                compared += 1
        print(f"compared {compared} (bucket, group) rows; worst relative error {worst:.5f}")
        assert compared >= SLICES
        assert noted_read > 0, "no slice read a noted hour"
