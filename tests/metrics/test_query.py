"""The query layer on hand-made rollup rows: metric names, grouping-set choice, merging,
ratios, scope, granularity. The raw-span paths are in test_edges.py and test_accuracy.py."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import time_machine

from apps.accounts.models import Project
from apps.metrics.catalog import METRICS, metric_spec, percentile_from_digits
from apps.metrics.plan import choose_grouping, dims_of
from apps.metrics.query import Filters, Query, Scope, dimension_values, run_query
from apps.rollups.models import ALL_DIMS, DIM_BITS, RollupHour, mask
from apps.rollups.sketch import bucket_index, bucket_value, merge, quantiles
from tests.metrics.traffic import at

DAY = at("2026-02-02T00:00:00")  # a Monday
LATER = at("2026-02-20T10:30:00")  # "now": every hour of DAY is closed
EVERYTHING = Scope.everything()
NO_FILTERS = Filters()


def sketch(values: list[float]) -> tuple[list[int], list[int]]:
    indexes, counts = merge([([bucket_index(v) for v in values], [1] * len(values))])
    return indexes.tolist(), counts.tolist()


def rollup(project: Project, hour: int, grouping: int, e2e: list[float] | None = None, **fields: Any) -> RollupHour:
    e2e = e2e or []
    idx, cnt = sketch(e2e)
    values = {"requests": len(e2e), **fields}
    return RollupHour.objects.create(
        project=project, bucket=DAY + timedelta(hours=hour), grouping=grouping, e2e_ms_idx=idx, e2e_ms_cnt=cnt, **values
    )


@pytest.fixture
def travelled() -> Any:
    with time_machine.travel(LATER, tick=False) as traveller:
        yield traveller


def test_unknown_metric_is_a_value_error_listing_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown metric 'latency_p99'.*error_rate.*e2e_ms"):
        Query(("requests", "latency_p99"), DAY, LATER)
    with pytest.raises(ValueError, match="unknown metric"):
        metric_spec("e2e_ms_p")
    with pytest.raises(ValueError, match="dimension"):
        Query(("requests",), DAY, LATER, group_by=("customer",))
    with pytest.raises(ValueError, match="granularity"):
        Query(("requests",), DAY, LATER, granularity="month")
    with pytest.raises(ValueError, match="after start"):
        Query(("requests",), LATER, DAY)


def test_percentile_names_parse_generally() -> None:
    assert percentile_from_digits("50") == 0.5
    assert percentile_from_digits("5") == 0.05
    assert percentile_from_digits("99") == 0.99
    assert percentile_from_digits("999") == pytest.approx(0.999)
    assert percentile_from_digits("9999") == pytest.approx(0.9999)
    assert percentile_from_digits("995") == pytest.approx(0.995)
    assert percentile_from_digits("100") == 1.0
    spec = metric_spec("tpot_ms_p75")
    assert (spec.kind, spec.distribution, spec.quantile, spec.unit) == ("quantile", "tpot_ms", 0.75, "ms")
    assert metric_spec("output_tokens_p999").unit == "tokens"
    for name in ("requests", "cost_unknown_requests", "tokens_per_second", "e2e_ms_p99", "queue_ms_samples"):
        assert name in METRICS
    assert METRICS["cost_per_successful_task"].kind == "ratio"
    assert METRICS["cost_usd"].unit == "USD"


def test_smallest_covering_grouping_set() -> None:
    assert choose_grouping([]) == 0
    assert choose_grouping(["tenant"]) == mask("tenant")
    assert choose_grouping(["feature", "tenant"]) == mask("tenant", "feature")
    assert choose_grouping(["model"]) == mask("provider", "model")
    assert choose_grouping(["tenant", "provider"]) == mask("tenant", "provider", "model")
    assert choose_grouping(["service"]) == ALL_DIMS
    assert dims_of(mask("feature", "model", "provider")) == ("feature", "provider", "model")


@pytest.mark.django_db
def test_the_grouping_set_read_covers_group_by_filters_and_scope(travelled: Any) -> None:
    project = Project.objects.create(name="p")
    end = DAY + timedelta(days=1)

    def read(scope: Scope = EVERYTHING, filters: Filters = NO_FILTERS, **kwargs: Any) -> int:
        filters = replace(filters, projects=(project.pk,))
        result = run_query(Query(("requests",), DAY, end, filters=filters, **kwargs), scope)
        assert result.plan is not None
        assert result.plan.raw == ()  # closed whole hours: rollups only
        return result.plan.grouping

    assert read() == 0
    assert read(group_by=("feature",)) == mask("feature")
    assert read(Scope(tenants=("acme",)), group_by=("feature",)) == mask("tenant", "feature")
    assert read(Scope(tenants=("acme",))) == mask("tenant")
    assert read(group_by=("model",)) == mask("provider", "model")
    assert read(group_by=("feature",), filters=Filters(models=("gpt-4o",))) == mask("feature", "provider", "model")
    assert read(group_by=("service",)) == ALL_DIMS


@pytest.mark.django_db
def test_sums_ratios_and_percentiles_merge_across_hours(travelled: Any) -> None:
    project = Project.objects.create(name="p")
    first = [120.0, 80.0, 95.5, 3000.0]
    second = [101.0, 99.0, 15000.0]
    rollup(project, 3, 0, first, errors=1, errors_by_type={"429": 1}, cost_usd=Decimal("0.0000000001"),
           successful_tasks=2, input_tokens=1000, cache_read_tokens=250, generation_tokens=500,
           generation_ms=2000.0)  # fmt: skip
    rollup(project, 4, 0, second, errors=2, errors_by_type={"429": 1, "timeout": 1},
           cost_usd=Decimal("1.2500000000"), successful_tasks=0, input_tokens=0, generation_tokens=100,
           generation_ms=500.0)  # fmt: skip
    rollup(project, 5, 0, [], semantic_cache_lookups=0)  # an hour with no calls
    # Rows of other grouping sets must not be read twice.
    rollup(project, 3, mask("tenant"), first, tenant="acme", cost_usd=Decimal(7))

    metrics = ("requests", "errors", "successes", "error_rate", "errors_by_type", "cost_usd", "cost_per_1k_requests",
               "cost_per_successful_task", "prompt_cache_hit_rate", "semantic_cache_hit_rate", "tokens_per_second",
               "retry_rate", "e2e_ms_p50", "e2e_ms_p99", "e2e_ms_samples", "ttft_ms_p50")  # fmt: skip
    result = run_query(Query(metrics, DAY, DAY + timedelta(days=1)), Scope.everything())
    [row] = result.rows
    assert row["time"] is None
    assert (row["requests"], row["errors"], row["successes"]) == (7, 3, 4)
    assert row["error_rate"] == pytest.approx(3 / 7)
    assert row["errors_by_type"] == {"429": 2, "timeout": 1}
    assert row["cost_usd"] == Decimal("1.2500000001") and isinstance(row["cost_usd"], Decimal)
    # Money ratios on the one money scale: 10 decimals, rounded half-even.
    assert row["cost_per_1k_requests"] == Decimal("178.5714285857")
    assert row["cost_per_successful_task"] == Decimal("0.6250000000")  # 0.62500000005, half-even
    assert row["cost_unknown_requests"] == 0  # asked for money: the unpriced calls come along
    assert row["prompt_cache_hit_rate"] == 0.25
    assert row["semantic_cache_hit_rate"] is None  # no lookups: no rate, not 0
    assert row["tokens_per_second"] == pytest.approx(600 / 2.5)
    assert row["retry_rate"] == 0.0
    idx, cnt = (np.asarray(a) for a in sketch(first + second))
    assert row["e2e_ms_p50"] == quantiles(idx, cnt, [0.5])[0]
    assert row["e2e_ms_p99"] == quantiles(idx, cnt, [0.99])[0]
    assert row["e2e_ms_p50"] == pytest.approx(float(np.percentile(first + second, 50)), rel=0.01)
    assert row["e2e_ms_p99"] == pytest.approx(float(np.percentile(first + second, 99)), rel=0.01)
    assert row["e2e_ms_p50_samples"] == row["e2e_ms_p99_samples"] == row["e2e_ms_samples"] == 7
    assert (row["ttft_ms_p50"], row["ttft_ms_p50_samples"]) == (None, 0)

    hourly = run_query(Query(("requests", "e2e_ms_p50"), DAY, DAY + timedelta(hours=6), granularity="hour"),
                       Scope.everything())  # fmt: skip
    assert [row["requests"] for row in hourly.rows] == [0, 0, 0, 4, 3, 0]
    assert [row["time"] for row in hourly.rows] == [DAY + timedelta(hours=h) for h in range(6)]
    assert hourly.rows[0]["e2e_ms_p50"] is None
    frame = hourly.to_frame()
    assert list(frame.columns) == ["time", "requests", "e2e_ms_p50", "e2e_ms_p50_samples"]
    assert str(frame["time"].dt.tz) == "UTC"


@pytest.mark.django_db
def test_day_and_week_buckets_are_utc_and_filled(travelled: Any) -> None:
    project = Project.objects.create(name="p")
    rollup(project, 23, 0, [10.0])
    rollup(project, 24 + 5, 0, [10.0, 20.0], cost_usd=Decimal("0.5"))
    days = run_query(Query(("requests", "cost_usd"), DAY - timedelta(days=1), DAY + timedelta(days=3),
                           granularity="day"), Scope.everything())  # fmt: skip
    assert [(row["time"], row["requests"], row["cost_usd"]) for row in days.rows] == [
        (DAY - timedelta(days=1), 0, Decimal(0)),
        (DAY, 1, Decimal(0)),
        (DAY + timedelta(days=1), 2, Decimal("0.5")),
        (DAY + timedelta(days=2), 0, Decimal(0)),
    ]
    weeks = run_query(Query(("requests",), DAY - timedelta(days=1), DAY + timedelta(days=3), granularity="week"),
                      Scope.everything())  # fmt: skip
    assert [(row["time"], row["requests"]) for row in weeks.rows] == [(DAY - timedelta(days=7), 0), (DAY, 3)]


@pytest.mark.django_db
def test_scope_limits_every_figure_and_never_shows_unattributed(travelled: Any) -> None:
    project = Project.objects.create(name="p")
    tenant = mask("tenant")
    tenant_feature = mask("tenant", "feature")
    rollup(project, 1, 0, [1.0] * 6, cost_usd=Decimal(6))
    for name, calls in (("acme", 1), ("globex", 2), ("", 3)):
        rollup(project, 1, tenant, [1.0] * calls, tenant=name, cost_usd=Decimal(calls))
        rollup(project, 1, tenant_feature, [1.0] * calls, tenant=name, feature="chat", cost_usd=Decimal(calls))
    end = DAY + timedelta(days=1)

    def total(scope: Scope, filters: Filters = NO_FILTERS, **kwargs: Any) -> list[dict[str, Any]]:
        return run_query(Query(("requests", "cost_usd", "e2e_ms_p50"), DAY, end, filters, **kwargs), scope).rows

    assert total(Scope.everything())[0]["requests"] == 6
    assert total(Scope.everything(), group_by=("tenant",))[0]["tenant"] == ""
    assert total(Scope(tenants=("acme",)))[0]["requests"] == 1
    assert total(Scope(tenants=("acme", "")))[0]["requests"] == 1
    assert total(Scope(tenants=("acme", "globex")))[0]["cost_usd"] == Decimal(3)
    assert [r["tenant"] for r in total(Scope(tenants=("acme", "", "globex")), group_by=("tenant",))] == [
        "acme",
        "globex",
    ]
    assert total(Scope(tenants=("acme",)), group_by=("feature",)) == [
        {"time": None, "feature": "chat", "requests": 1, "cost_usd": Decimal(1),
         "e2e_ms_p50": bucket_value(bucket_index(1.0)), "e2e_ms_p50_samples": 1, "cost_unknown_requests": 0}
    ]  # fmt: skip
    # Filters narrow the scope, never widen it.
    assert total(Scope(tenants=("acme",)), Filters(tenants=("globex",)))[0]["requests"] == 0
    assert total(Scope(tenants=("acme",)), Filters(tenants=("globex", "acme")))[0]["requests"] == 1
    nothing = total(Scope(tenants=()))
    assert nothing == [
        {
            "time": None,
            "requests": 0,
            "cost_usd": Decimal(0),
            "e2e_ms_p50": None,
            "e2e_ms_p50_samples": 0,
            "cost_unknown_requests": 0,
        }
    ]
    assert dimension_values("tenant", DAY, end, Scope(tenants=("acme", "", "globex"))) == ["acme", "globex"]
    assert dimension_values("tenant", DAY, end, Scope.everything()) == ["", "acme", "globex"]
    assert dimension_values("tenant", DAY, end, Scope(tenants=())) == []
    with pytest.raises(ValueError):
        dimension_values("customer", DAY, end, Scope.everything())


def test_dimension_bits_are_the_rollup_ones() -> None:
    assert set(DIM_BITS) == {"tenant", "feature", "provider", "model", "service"}


@pytest.mark.django_db
def test_rollup_reads_are_index_range_scans_of_one_grouping_set(travelled: Any) -> None:
    """The plan sql.py relies on: an index on (project, grouping, bucket) (rollup_hour_read,
    or rollup_hour_sums for sums) narrows the read to one project's grouping set over the
    range, whatever else the table holds."""
    from django.db import connection

    from apps.metrics import sql
    from apps.metrics.plan import plan_reads
    from apps.rollups.models import GROUPING_SETS

    projects = [Project.objects.create(name=f"p{n}") for n in range(3)]
    RollupHour.objects.bulk_create(
        RollupHour(project=project, bucket=DAY + timedelta(hours=hour), grouping=grouping, tenant="t", requests=1)
        for project in projects
        for grouping in GROUPING_SETS
        for hour in range(-24 * 8, 24 * 3)
    )
    # Day rows too, and both tables analyzed here: the plans must not depend on statistics
    # other tests' committed (and since deleted) rows left behind.
    from apps.rollups.models import RollupDay

    RollupDay.objects.bulk_create(
        RollupDay(project=project, bucket=DAY + timedelta(days=day), grouping=grouping, tenant="t", requests=1)
        for project in projects
        for grouping in GROUPING_SETS
        for day in range(-30, 3)
    )
    with connection.cursor() as cur:
        cur.execute("ANALYZE rollups_rolluphour")
        cur.execute("ANALYZE rollups_rollupday")
    plan = plan_reads(mask("tenant"), [projects[0].pk], DAY, DAY + timedelta(days=2), LATER)
    filters = {"tenant": ("t",)}
    statements = [
        sql.sums_sql(plan, "day", ("tenant",), ["tenant"], ["requests", "cost_usd"], True),
        sql.sums_sql(plan, "day", ("tenant",), ["tenant"], ["requests"], False, days="only", with_project=True),
        sql.distributions_sql(plan, ("tenant",), ["tenant"], ["e2e_ms"], days="skip"),
    ]
    params = {**sql.rollup_params(plan, filters), **sql.day_params([(projects[0].pk, DAY)])}
    for statement in statements:
        with connection.cursor() as cur:
            cur.execute(f"EXPLAIN {statement}", params)
            text = "\n".join(row[0] for row in cur.fetchall())
        assert "using rollup_hour_read" in text or "using rollup_hour_sums" in text, text
        assert "Seq Scan on rollups_rolluphour" not in text, text
    # Whole days: their day rows by rollup_day_read, their builds and change notes by
    # day_build_identity and day_change_read.
    from apps.metrics.days import _KEPT_SQL

    for statement, index in [
        (sql.sums_sql(plan, "day", ("tenant",), ["tenant"], ["requests"], False, days="only", with_project=True,
                      table=sql.DAY_TABLE), "rollup_day_read"),
        (sql.distributions_sql(plan, ("tenant",), ["tenant"], ["e2e_ms"], days="only", with_project=True,
                               table=sql.DAY_TABLE), "rollup_day_read"),
        (_KEPT_SQL, "day_change_read"),
        (_KEPT_SQL, "day_build_identity"),
    ]:  # fmt: skip
        with connection.cursor() as cur:
            # The build and change-note tables are tiny here and their statistics come from
            # whatever ran before: what is asserted is that an index serves the statement.
            cur.execute("SET LOCAL enable_seqscan = off")
            cur.execute(f"EXPLAIN {statement}", {**params, "first_day": DAY, "end_day": DAY + timedelta(days=2)})
            text = "\n".join(row[0] for row in cur.fetchall())
        assert index in text, text


def test_distributions_merge_like_the_sketch_module() -> None:
    from apps.metrics.merge import merge_distributions
    from apps.rollups.sketch import ZERO_INDEX

    parts = [([ZERO_INDEX, -5, 3, 900], [2, 1, 4, 1]), ([-5, 4], [3, 1]), ([], []), ([ZERO_INDEX, 2_000_000], [1, 1])]
    as_numpy = [(np.asarray(i, dtype=np.int64), np.asarray(c, dtype=np.int64)) for i, c in parts]
    indexes, counts = merge_distributions(as_numpy)
    expected_indexes, expected_counts = merge(parts)
    assert indexes.tolist() == expected_indexes.tolist() == [ZERO_INDEX, -5, 3, 4, 900, 2_000_000]
    assert counts.tolist() == expected_counts.tolist() == [3, 4, 4, 1, 1, 1]
    assert merge_distributions([])[0].size == 0


@pytest.mark.django_db
def test_the_sums_index_covers_every_column_a_sums_read_touches() -> None:
    """Sums reads are Index Only Scans of rollup_hour_sums (migration 0001) only while every
    column they name is in it: a sum added to the catalog needs adding there too."""
    from django.db import connection

    from apps.metrics.catalog import SUM_COLUMNS
    from apps.rollups.models import DIMENSIONS

    with connection.cursor() as cur:
        cur.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indexrelid = 'rollup_hour_sums'::regclass"
        )
        covered = {row[0] for row in cur.fetchall()}
    assert {"project_id", "grouping", "bucket", *DIMENSIONS, *SUM_COLUMNS} <= covered


# The request model (apps/metrics/request.py): one reading of a query string for pages and API.


def test_a_preset_starts_on_the_hour_and_ends_at_the_last_10_second_boundary() -> None:
    from django.http import QueryDict

    from apps.metrics.request import API, PAGE, parse_window

    now = datetime(2026, 11, 20, 14, 37, 23, 500_000, tzinfo=UTC)
    for dialect in (API, PAGE):
        window = parse_window(QueryDict("range=7d"), now, dialect=dialect)
        boundary = now.replace(second=20, microsecond=0)
        assert (window.start, window.end) == (datetime(2026, 11, 13, 14, tzinfo=UTC), boundary)
        assert window.previous == (datetime(2026, 11, 6, 14, tzinfo=UTC), window.start)
        default = parse_window(QueryDict(""), now, dialect=dialect)
        assert (default.start, default.end, default.preset) == (window.start, window.end, "7d")
        custom = parse_window(QueryDict("start=2026-11-19"), now, dialect=dialect)
        assert (custom.start, custom.end, custom.preset) == (datetime(2026, 11, 19, tzinfo=UTC), window.end, None)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("start=0001-01-01&end=0001-01-02", "start must be between 2000-01-01 and 2200-01-01"),
        ("start=2026-01-01&end=9999-12-31", "end must be between 2000-01-01 and 2200-01-01"),
        ("start=0001-01-01T00:00:00%2B14:00", "is out of range"),
        ("start=2024-01-01&end=2025-03-01", "at most 400 days"),
        ("start=2026-01-02&end=2026-01-01", "end must be after start"),
        ("end=2026-01-01", "end needs a start"),
        ("range=7d&start=2026-01-01", "either range or start/end"),
        ("range=3y", "range must be one of 1h, 24h, 7d, 30d"),
        ("tenant=ac%00me", "tenant may not contain NUL characters"),
        ("project=x", "project takes project ids"),
    ],
)
def test_both_dialects_refuse_the_same_mistakes_with_the_same_message(query: str, message: str) -> None:
    from django.http import QueryDict

    from apps.metrics.request import API, PAGE, BadRequest, parse_filters, parse_window

    now = datetime(2026, 11, 20, 14, 37, 23, tzinfo=UTC)
    for dialect in (API, PAGE):
        with pytest.raises(BadRequest, match=re.escape(message)):
            params = QueryDict(query)
            parse_window(params, now, dialect=dialect)
            parse_filters(params, dialect=dialect)


def test_the_api_is_strict_and_splits_commas_pages_are_lenient_and_keep_them() -> None:
    from django.http import QueryDict

    from apps.metrics.request import API, PAGE, BadRequest, parse_filters, parse_window

    now = datetime(2026, 11, 20, 14, 37, 23, tzinfo=UTC)
    assert parse_filters(QueryDict("feature=a,b&feature=c"), dialect=API).features == ("a", "b", "c")
    assert parse_filters(QueryDict("feature=a,b&feature=c"), dialect=PAGE).features == ("a,b", "c")
    with pytest.raises(BadRequest, match="range may be given once"):
        parse_window(QueryDict("range=7d&range=1h"), now, dialect=API)
    with pytest.raises(BadRequest, match="start is empty"):
        parse_window(QueryDict("start=&range=1h"), now, dialect=API)
    # A cleared form field is no parameter at all on a page.
    assert parse_window(QueryDict("start=&end=&range=1h"), now, dialect=PAGE).preset == "1h"
