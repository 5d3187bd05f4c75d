"""The regression detector on simulated traffic (the receiver's decode + ingest path, rolled
up) and on hand-built error bursts.

Only what a run reads is loaded: the last days (current window and change-point series)
and the same hours of the four earlier weeks, once per module (committed, shared by the
tests, removed at the end); each test's findings are rolled back with its transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from apps.accounts.models import Project
from apps.insights import regressions
from apps.insights.models import Finding
from apps.rollups.models import DayBuild, DayChange, DirtyHour, RollupDay, RollupHour
from apps.rollups.runner import rollup_range
from apps.telemetry.ingest import ingest_spans
from collectors.otlp import decode_traces_protobuf
from tests.insights.simulated import NOW, load_history, matching_rate
from tests.otlp_helpers import LLM_ATTRIBUTES, make_traces

WEEK = timedelta(days=7)
HOUR = timedelta(hours=1)
# Enough calls for the busiest slices to be judged at the default minimums (200 calls in 6 h).
RATE = 4000
P99_START = NOW - timedelta(hours=10)
LATER = NOW + timedelta(hours=8)


@contextmanager
def committed_project(blocker: Any, name: str) -> Iterator[int]:
    with blocker.unblock():
        project_id = Project.objects.create(name=name).pk
    try:
        yield project_id
    finally:
        with blocker.unblock():
            Finding.objects.filter(project_id=project_id).delete()
            for model in (RollupHour, RollupDay, DirtyHour, DayChange, DayBuild):
                model.objects.filter(project_id=project_id).delete()
            with connection.cursor() as cur:
                cur.execute("DELETE FROM telemetry_span WHERE project_id = %s", [project_id])
            Project.objects.filter(pk=project_id).delete()


def load_windows(
    project_id: int, *, seed: int, recent_days: float, after: timedelta = timedelta(0), incidents: Sequence[str] = ()
) -> None:
    """The recent days up to NOW + `after`, and the same stretch around NOW one to four weeks
    earlier (the current window's hours plus `after`)."""
    recent_start = NOW - timedelta(days=recent_days)
    load_history(project_id, days=recent_days + after / timedelta(days=1), end=NOW + after, seed=seed,
                 incidents=incidents, requests_per_day=RATE)  # fmt: skip
    # Short runs carry, hour by hour, what the recent run carries (simulated.matching_rate).
    rate = matching_rate(RATE, (NOW - 7 * HOUR, NOW + after), (recent_start, NOW + after))
    for weeks in range(1, 5):
        load_history(project_id, days=(7 * HOUR + after) / timedelta(days=1), end=NOW + after - weeks * WEEK,
                     seed=seed + 100 * weeks, requests_per_day=rate)  # fmt: skip


@pytest.fixture(scope="module")
def incidents(django_db_setup: None, django_db_blocker: Any) -> Iterator[int]:
    """A p99 regression of gpt-4o-mini from NOW-10h to NOW and a cost spike of acme from
    NOW-5h to NOW, with traffic on to NOW+8h (and the same hours of earlier weeks)."""
    with committed_project(django_db_blocker, "incidents") as project_id:
        with django_db_blocker.unblock():
            load_windows(project_id, seed=7, recent_days=2, after=LATER - NOW, incidents=(
                f"p99-regression:gpt-4o-mini@{P99_START:%Y-%m-%dT%H:%M}..{NOW:%Y-%m-%dT%H:%M}",
                f"cost-spike:acme@{NOW - 5 * HOUR:%Y-%m-%dT%H:%M}..{NOW:%Y-%m-%dT%H:%M}",
            ))  # fmt: skip
        yield project_id


def _open(project_id: int) -> dict[str, Finding]:
    return {
        finding.signature: finding
        for finding in Finding.objects.filter(project_id=project_id, kind="regression", status="open")
    }


@pytest.mark.django_db
def test_p99_regression_is_found_on_its_model_with_its_start_and_resolves_after(incidents: int) -> None:
    regressions.detect(incidents, NOW)
    found = _open(incidents)
    slice_ = '{"model":"gpt-4o-mini","provider":"openai"}'
    p99 = found[f"regression:latency_p99:{slice_}"]
    # ~40 gpt-4o-mini calls an hour, 5% of them slowed: the exceedance series is thin, and
    # the scan against the baseline's share still places the onset.
    # The start falls in the night (~10 calls an hour of this model, a tenth of them slowed):
    # hours with no slowed call by chance can put the scan's onset up to three hours late
    # (docs/metrics.md, "Regressions": the start's accuracy).
    assert p99.started_at is not None and abs(p99.started_at - P99_START) <= 3 * HOUR, p99.started_at
    assert p99.evidence["change_method"] == "scan-binomial"
    evidence = p99.evidence
    assert evidence["test"]["name"] == "binomial-quantile" and evidence["test"]["q_value"] <= 0.01
    assert evidence["effect"]["value"] >= 1.25
    assert evidence["current"]["value"] > evidence["baseline"]["value"]
    assert evidence["change_point"] == (p99.started_at.isoformat() if p99.started_at else None)
    assert evidence["link"] == "/models/openai/gpt-4o-mini/?range=7d"
    assert len(evidence["series"]) == 72 and evidence["baseline"]["weeks"] == 4
    # No other model's latency moved.
    other_models = [f for f in found.values() if f.metric.startswith("latency") and "model" in f.slice]
    assert {f.slice["model"] for f in other_models} == {"gpt-4o-mini"}

    # Eight hours after the incident ended, the slice is judged again and the episode is over.
    regressions.detect(incidents, LATER)
    p99.refresh_from_db()
    assert p99.status == "resolved" and p99.resolved_at == LATER
    assert not [f for f in _open(incidents).values() if f.slice.get("model") == "gpt-4o-mini"]


@pytest.mark.django_db
def test_cost_spike_is_a_spend_regression_of_the_tenant_not_a_cost_per_task_one(incidents: int) -> None:
    regressions.detect(incidents, NOW)
    found = _open(incidents)
    spend = found['regression:spend:{"tenant":"acme"}']
    assert spend.evidence["effect"]["value"] >= 1.5
    assert spend.evidence["unit"] == "usd" and spend.evidence["test"]["name"] == "paired-log-t"
    assert spend.started_at is not None and abs(spend.started_at - (NOW - 5 * HOUR)) <= 2 * HOUR
    # Five times the traffic at the usual price per task: cost per task is unchanged, and no
    # other tenant's spend moved.
    assert 'regression:cost_per_successful_task:{"tenant":"acme"}' not in found
    assert {f.slice.get("tenant") for f in found.values() if f.metric == "spend" and "tenant" in f.slice} == {"acme"}


@pytest.mark.django_db
def test_an_accepted_regression_stays_accepted_while_its_baseline_is_younger_than_a_week(incidents: int) -> None:
    regressions.detect(incidents, NOW)
    signature = 'regression:spend:{"tenant":"acme"}'
    finding = _open(incidents)[signature]
    Finding.objects.filter(pk=finding.pk).update(status="accepted", accepted_at=NOW)
    regressions.detect(incidents, NOW + HOUR)
    assert signature not in _open(incidents)


@pytest.fixture(scope="module", params=[11, 12, 13])
def stable(request: pytest.FixtureRequest, django_db_setup: None, django_db_blocker: Any) -> Iterator[int]:
    with committed_project(django_db_blocker, f"stable-{request.param}") as project_id:
        with django_db_blocker.unblock():
            # A run reads the current 6 hours and the same hours of four earlier weeks; the
            # change-point series matters only for candidates, which a stable run must not have.
            load_windows(project_id, seed=request.param, recent_days=7 / 24)
        yield project_id


@pytest.mark.django_db
def test_stable_traffic_gives_no_regression_at_default_settings(stable: int) -> None:
    run = regressions.evaluate(stable, NOW)
    # The test has teeth: most slices and metrics were judged (cost metrics only where a
    # slice has enough priced calls: not the mostly self-hosted ones).
    assert run.tested >= 35
    assert len(run.judged) == run.tested
    assert regressions.detect(stable, NOW) == []
    assert not Finding.objects.filter(project_id=stable).exists()


# Error rate: hand-built traffic (one LLM call per trace), 40 calls an hour.
CALLS_PER_HOUR = 40


def _store_hour(project_id: int, hour: datetime, errors: int) -> None:
    failing = {**LLM_ATTRIBUTES, "error.type": "RateLimitError"}
    spans = make_traces(CALLS_PER_HOUR - errors, start_ns=int(hour.timestamp() * 1e9) + 10**9)
    if errors:
        spans += make_traces(errors, start_ns=int(hour.timestamp() * 1e9) + 30 * 60 * 10**9, llm_attributes=failing)
    raw, rejected = decode_traces_protobuf(encode_spans(spans).SerializeToString())
    assert not rejected
    ingest_spans(project_id, raw, [])


@pytest.mark.django_db
def test_error_burst_is_an_error_rate_regression_from_its_first_hour(project: Project) -> None:
    burst = NOW - 4 * HOUR
    hours = [NOW - (number + 1) * HOUR for number in range(24)]
    for weeks in range(1, 5):
        hours += [NOW - weeks * WEEK - (number + 1) * HOUR for number in range(6)]
    for hour in hours:
        _store_hour(project.pk, hour, 12 if hour >= burst else 1)
    rollup_range(min(hours), NOW, [project.pk])

    written = regressions.detect(project.pk, NOW)
    by_signature = {finding.signature: finding for finding in written}
    for slice_ in ('{"feature":"support-chat"}', '{"tenant":"acme"}', '{"model":"gpt-4o-mini","provider":"openai"}'):
        finding = by_signature[f"regression:error_rate:{slice_}"]
        assert finding.severity == "critical"  # 1 in 40 before, 12 in 40 now
        assert finding.started_at == burst
        assert finding.evidence["baseline"]["value"] == pytest.approx(1 / 40)
        assert finding.evidence["current"]["value"] == pytest.approx((2 * 1 + 4 * 12) / 240)
    assert {finding.metric for finding in written} == {"error_rate"}


@pytest.mark.django_db
def test_too_few_calls_are_not_judged_and_keep_an_open_finding_open(project: Project) -> None:
    for hour in [NOW - HOUR, NOW - WEEK - HOUR]:
        _store_hour(project.pk, hour, 1)
    rollup_range(NOW - WEEK - HOUR, NOW, [project.pk])
    finding = Finding.objects.create(
        project=project, kind="regression", metric="error_rate", slice={"feature": "support-chat"},
        signature='regression:error_rate:{"feature":"support-chat"}', severity="warning", title="earlier",
    )  # fmt: skip
    run = regressions.evaluate(project.pk, NOW)
    assert run.tested == 0 and not run.judged
    assert regressions.detect(project.pk, NOW) == []
    finding.refresh_from_db()
    assert finding.status == "open"
