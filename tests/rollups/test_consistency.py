"""The rollup SQL against a plain-Python reference on generated traffic, the grouping sets
against each other, and the SQL bucket function against sketch.bucket_index."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.accounts.models import Project
from apps.rollups.models import ALL_DIMS, DIM_BITS, DIMENSIONS, DISTRIBUTIONS, GROUPING_SETS, RollupHour
from apps.rollups.runner import recompute_hours, rollup_range
from apps.rollups.sketch import BUCKET_SQL, ZERO_INDEX, ZERO_THRESHOLD, bucket_index
from bench._spans import DEFAULT_START, load_spans
from tests.rollups.reference import expected_cells

ADDITIVE = (
    "requests", "errors", "retries", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "tokens_unknown", "cost_usd", "cost_unknown", "cache_savings_usd", "semantic_cache_lookups",
    "semantic_cache_hits", "tasks", "successful_tasks", "generation_tokens",
)  # fmt: skip


def _key(row: RollupHour) -> tuple[Any, ...]:
    return (row.bucket, *(getattr(row, name) for name in DIMENSIONS))


def _sketch(row: RollupHour, name: str) -> Counter[int]:
    indexes, counts = getattr(row, f"{name}_idx"), getattr(row, f"{name}_cnt")
    assert list(indexes) == sorted(set(indexes)), "indexes sorted, each once"
    assert all(count > 0 for count in counts) and len(counts) == len(indexes)
    return Counter(dict(zip(indexes, counts, strict=True)))


@pytest.fixture
def generated(project: Project, price_catalog: None) -> Project:
    """A day of generated traffic (bench/_spans.py), committed: load_spans writes with COPY."""
    connection.ensure_connection()
    loaded = load_spans(connection.connection, 4000, days=1, seed=11, project_ids=(project.pk,))
    assert loaded.spans >= 4000
    return project


@pytest.mark.django_db(transaction=True)
def test_generated_traffic_matches_the_reference(generated: Project) -> None:
    start, end = DEFAULT_START, DEFAULT_START + timedelta(days=1)
    rollup_range(start, end)
    expected = expected_cells(generated.pk, start, end)
    rows = {_key(row): row for row in RollupHour.objects.filter(project_id=generated.pk, grouping=ALL_DIMS)}
    assert set(rows) == set(expected)
    assert sum(cell.requests for cell in expected.values()) > 1000
    assert sum(cell.tasks for cell in expected.values()) > 500
    for key, cell in expected.items():
        row = rows[key]
        for name in ADDITIVE:
            assert getattr(row, name) == getattr(cell, name), (key, name)
        assert row.errors_by_type == dict(cell.errors_by_type), key
        assert row.generation_ms == pytest.approx(cell.generation_ms)
        for name in DISTRIBUTIONS:
            assert _sketch(row, name) == cell.sketches[name], (key, name)

    # The noted-hour path reads a different window around each hour: the same rows (a float
    # sum may differ in its last bits: it adds in another order).
    by_range = _snapshot(generated.pk)
    recompute_hours(generated.pk, [start + timedelta(hours=n) for n in range(24)])
    by_hour = _snapshot(generated.pk)
    assert by_hour.keys() == by_range.keys()
    for key, (exact, generation_ms) in by_range.items():
        assert by_hour[key][0] == exact
        assert by_hour[key][1] == pytest.approx(generation_ms)


_FIELDS = [f.name for f in RollupHour._meta.get_fields() if f.name not in {"id", "project", "generation_ms"}]


def _snapshot(project_id: int) -> dict[tuple[Any, ...], tuple[tuple[Any, ...], float]]:
    snapshot = {}
    for row in RollupHour.objects.filter(project_id=project_id):
        values = tuple(repr(getattr(row, name)) for name in _FIELDS)
        snapshot[(row.grouping, *_key(row))] = (values, row.generation_ms)
    return snapshot


@pytest.mark.django_db(transaction=True)
def test_every_grouping_set_adds_up_to_the_full_set(generated: Project) -> None:
    rollup_range(DEFAULT_START, DEFAULT_START + timedelta(days=1))
    finest = list(RollupHour.objects.filter(project_id=generated.pk, grouping=ALL_DIMS))
    for grouping in GROUPING_SETS:
        kept = [name for name in DIMENSIONS if grouping & DIM_BITS[name]]
        merged: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
            lambda: {"sketches": defaultdict(Counter), "errors_by_type": Counter(), "generation_ms": 0.0}
        )
        for row in finest:
            target = merged[(row.bucket, *(getattr(row, name) if name in kept else None for name in DIMENSIONS))]
            for name in ADDITIVE:
                target[name] = target.get(name, 0) + getattr(row, name)
            target["errors_by_type"].update(row.errors_by_type)
            target["generation_ms"] += row.generation_ms
            for name in DISTRIBUTIONS:
                target["sketches"][name].update(_sketch(row, name))
        rows = {_key(row): row for row in RollupHour.objects.filter(project_id=generated.pk, grouping=grouping)}
        assert set(rows) == set(merged), grouping
        for key, want in merged.items():
            row = rows[key]
            for name in ADDITIVE:
                assert getattr(row, name) == want[name], (grouping, key, name)
            assert row.errors_by_type == dict(want["errors_by_type"])
            assert row.generation_ms == pytest.approx(want["generation_ms"])
            for name in DISTRIBUTIONS:
                assert _sketch(row, name) == want["sketches"][name], (grouping, key, name)


def _sql_buckets(values: list[float]) -> list[int | None]:
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT {BUCKET_SQL.format(x='v')} FROM unnest(%s::float8[]) WITH ORDINALITY AS u(v, n) ORDER BY n",
            [[float(v) for v in values]],
        )
        return [row[0] for row in cur.fetchall()]


EDGES = [0.0, -1.0, ZERO_THRESHOLD, ZERO_THRESHOLD * 1.000001, 1e-300, 5e-324, 1.0, 1.01, 0.5, 3600000.0, 1e300,
         1.7976931348623157e308, 2.0**31, 12.0, 1e6]  # fmt: skip


@pytest.mark.django_db
def test_sql_bucket_equals_python_bucket_at_the_edges() -> None:
    assert _sql_buckets(EDGES) == [bucket_index(v) for v in EDGES]
    assert _sql_buckets([0.0, 1e-7])[0] == ZERO_INDEX
    with connection.cursor() as cur:
        cur.execute(f"SELECT {BUCKET_SQL.format(x='NULL::float8')}")
        assert cur.fetchone()[0] is None


@pytest.mark.django_db
@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=0, max_value=1e308, allow_nan=False, allow_infinity=False),
            st.floats(min_value=1e-9, max_value=1e-3),
            st.floats(min_value=0.1, max_value=1e7),
            st.integers(min_value=1, max_value=10**6).map(float),
        ),
        min_size=1,
        max_size=200,
    )
)
def test_sql_bucket_equals_python_bucket(values: list[float]) -> None:
    assert _sql_buckets(values) == [bucket_index(v) for v in values]


def test_bucket_edges_are_finite() -> None:
    # The largest double still has a bucket an int can hold.
    assert bucket_index(1.7976931348623157e308) < 2**31 - 1
    assert math.isfinite(float(bucket_index(1e300)))
