"""The drift detector on simulated history: the silent model change is found on the right
slice with the right first moment, resolves when the shift is gone, stays quiet once accepted
as the new normal; a stable month at default settings gives no drift finding.

Histories are loaded once per module (committed, removed at teardown): loading is the cost
here (~2 s per simulated day), detection is a couple of seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection

from apps.accounts.models import Project
from apps.insights import drift
from apps.insights.episodes import Candidate
from apps.insights.models import Finding
from tests.insights.simulated import NOW, load_history

FEATURE_SLICE = {"feature": "support-chat", "provider": "openai", "model": "gpt-4o-mini"}


def _drop(project_id: int) -> None:
    with connection.cursor() as cur:
        for table in ("telemetry_span", "rollups_rolluphour", "rollups_rollupday", "rollups_dirtyhour",
                      "rollups_daychange", "rollups_daybuild", "insights_finding"):  # fmt: skip
            cur.execute(f"DELETE FROM {table} WHERE project_id = %s", [project_id])
    Project.objects.filter(pk=project_id).delete()


@pytest.fixture(scope="module")
def history(django_db_setup: None, django_db_blocker: Any) -> Iterator[dict[str, int]]:
    """Two projects: `ended`, a silent model change of support-chat that lasted one day and
    ended two days ago; `lasting`, one that began five days ago and goes on (loaded up to a
    day ago: no test reads later)."""
    with django_db_blocker.unblock():
        ended = Project.objects.create(name="drift-ended")
        lasting = Project.objects.create(name="drift-lasting")
        try:
            load_history(ended.pk, days=10.2, incidents=["silent-model-change:support-chat@-3d..-2d"])
            # Read up to NOW - 1 day at the latest (8 days before each detection moment).
            load_history(lasting.pk, days=11.2, end=NOW - timedelta(days=1),
                         incidents=["silent-model-change:support-chat@-4d"])  # fmt: skip
            yield {"ended": ended.pk, "lasting": lasting.pk}
        finally:
            _drop(ended.pk)
            _drop(lasting.pk)


def open_findings(project_id: int, **slice_: str) -> dict[str, Finding]:
    found = Finding.objects.filter(project_id=project_id, kind="drift", status="open")
    return {f.metric: f for f in found if all(f.slice.get(k) == v for k, v in slice_.items())}


@pytest.mark.django_db
def test_silent_model_change_is_found_on_its_slice_with_its_first_moment(history: dict[str, int]) -> None:
    project_id = history["lasting"]
    began = NOW - timedelta(days=5)
    written = drift.detect(project_id, began + timedelta(hours=20))
    assert written
    found = open_findings(project_id, **FEATURE_SLICE)
    assert {"new_fingerprint", "new_response_model", "output_tokens", "finish_reason_mix"} <= set(found)
    fingerprint = found["new_fingerprint"]
    assert fingerprint.started_at is not None
    # The first span of the new snapshot: the incident's start, to the minute.
    assert began <= fingerprint.started_at < began + timedelta(minutes=15)
    assert fingerprint.evidence["first_seen_at"] == fingerprint.started_at.isoformat()
    assert "new system_fingerprint fp_" in fingerprint.title and "of calls" in fingerprint.title
    assert fingerprint.severity == Finding.Severity.CRITICAL  # it answers most of the slice's calls
    tokens = found["output_tokens"]
    evidence = tokens.evidence
    assert evidence["test"]["name"] == "ks" and evidence["test"]["q_value"] <= 0.01
    assert evidence["effect"]["name"] == "wasserstein_log" and evidence["effect"]["value"] >= 0.15
    assert evidence["current"]["value"] > evidence["baseline"]["value"]
    assert [x for x, _ in evidence["baseline"]["histogram"]] == [x for x, _ in evidence["current"]["histogram"]]
    assert evidence["link"] == "/features/support-chat/?provider=openai&model=gpt-4o-mini&range=7d"
    assert tokens.started_at == fingerprint.started_at  # the new snapshot is the change point
    # The hourly median over baseline + current (7 days + 20 h of hours with calls), for charts.
    series = evidence["series"]
    assert 150 <= len(series) <= 8 * 24 and series == sorted(series)
    assert series[0][0] >= evidence["baseline"]["start"] and series[-1][0] < evidence["current"]["end"]
    assert all(value is None or value > 0 for _, value in series)
    mix_series = found["finish_reason_mix"].evidence["series"]
    assert all(value is None or 0 <= value <= 1 for _, value in mix_series)
    mix = found["finish_reason_mix"].evidence
    assert mix["test"]["name"] == "chi2" and mix["current"]["mix"]["stop"] < mix["baseline"]["mix"]["stop"]
    # Other features' slices did not move.
    others = Finding.objects.filter(project_id=project_id, status="open").exclude(slice__feature="support-chat")
    assert not [f.title for f in others if "feature" in f.slice]


@pytest.mark.django_db
@pytest.mark.parametrize("metric", ["output_tokens", "finish_reason_mix"])
def test_a_drift_without_a_new_value_is_dated_by_its_hourly_series(history: dict[str, int], metric: str) -> None:
    # The same shift as if the provider had kept its fingerprint: the scan of the slice's
    # hourly series against its baseline must find the start on its own.
    project_id = history["lasting"]
    began = NOW - timedelta(days=5)
    drift.detect(project_id, began + timedelta(hours=20))
    finding = open_findings(project_id, **FEATURE_SLICE)[metric]
    windows = _windows(began + timedelta(hours=20))
    sides = drift.read_slices(project_id, windows)
    key = next(key for key in sides if drift.slice_of(key) == FEATURE_SLICE)
    baseline = sides[key][0]
    candidate = Candidate(finding.kind, metric, finding.slice, finding.severity, finding.title, 0.0,
                          dict(finding.evidence, change_point=None, change_method=None))  # fmt: skip
    drift.add_series(candidate, drift.read_hours(project_id, key, windows.baseline_start, windows.recent_end), baseline)
    # ~10 calls an hour in this slice: every call's length moves (placed within two hours),
    # but 'length' endings go from 2% to ~10%, under one extra call an hour (within six).
    tolerance = timedelta(hours=2 if metric == "output_tokens" else 6)
    assert candidate.started_at is not None and abs(candidate.started_at - began) <= tolerance
    assert candidate.evidence["change_point"] == candidate.started_at.isoformat()
    assert candidate.evidence["change_method"] == ("scan-normal" if metric == "output_tokens" else "scan-binomial")


def _windows(end: datetime) -> drift.Windows:
    return drift.Windows(end - timedelta(days=8), end - timedelta(days=1), end - timedelta(days=1), end)


@pytest.mark.django_db
def test_findings_resolve_once_the_shift_is_gone(history: dict[str, int]) -> None:
    project_id = history["ended"]
    drift.detect(project_id, NOW - timedelta(days=2))
    during = open_findings(project_id, **FEATURE_SLICE)
    assert {"new_fingerprint", "output_tokens", "finish_reason_mix"} <= set(during)
    drift.detect(project_id, NOW)
    assert open_findings(project_id, **FEATURE_SLICE) == {}
    resolved = Finding.objects.filter(pk__in=[f.pk for f in during.values()])
    assert {f.status for f in resolved} == {Finding.Status.RESOLVED}
    assert all(f.resolved_at == NOW for f in resolved)


@pytest.mark.django_db
def test_accepted_as_new_normal_does_not_reopen(history: dict[str, int]) -> None:
    project_id = history["lasting"]
    began = NOW - timedelta(days=5)
    found_at = began + timedelta(hours=20)
    drift.detect(project_id, found_at)
    later = NOW - timedelta(days=1)
    # Unaccepted, the output-length drift is still open a few days on: most of the baseline
    # is from before the change.
    drift.detect(project_id, later)
    assert "output_tokens" in open_findings(project_id, **FEATURE_SLICE)
    accepted_at = found_at + timedelta(hours=1)
    Finding.objects.filter(project_id=project_id, status="open", slice__feature="support-chat").update(
        status=Finding.Status.ACCEPTED, accepted_at=accepted_at
    )
    drift.detect(project_id, later)
    assert open_findings(project_id, **FEATURE_SLICE) == {}


def _no_drift(project: Project, seed: int, end: datetime) -> None:
    load_history(project.pk, days=8.2, end=end, seed=seed)
    written = drift.detect(project.pk, end)
    assert [f.title for f in written] == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("seed", "end"),
    # Monday noon, Thursday noon, Saturday noon: the recent day against weeks with and
    # without a weekend in various places.
    [(1, NOW), (2, NOW + timedelta(days=3)), (3, NOW + timedelta(days=5))],
)
def test_a_stable_month_gives_no_drift_finding(project: Project, seed: int, end: datetime) -> None:
    _no_drift(project, seed, end)
