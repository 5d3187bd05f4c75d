"""Series rows: written once per series, whichever worker meets it first; a worker that meets
a stored series finds it instead of writing it again; a re-sent batch takes the ON CONFLICT
path and counts nothing twice."""

from __future__ import annotations

import pytest
from django.db import transaction

from apps.accounts.models import Project
from apps.gpu import store
from apps.gpu.models import MetricPoint as StoredPoint
from apps.gpu.models import MetricSeries
from collectors.metric_records import GAUGE, MetricPoint, series_hash
from tests.gpu.helpers import MINUTE_NS, now_ns

pytestmark = pytest.mark.django_db


def _gauges(time_ns: int, gpus: range) -> list[MetricPoint]:
    points = []
    for gpu in gpus:
        attributes = {"gpu.index": gpu}
        point = MetricPoint(
            name="hw.gpu.utilization", kind=GAUGE, unit="1", resource={}, attributes=attributes, time_ns=time_ns,
            value=0.5,
        )  # fmt: skip
        point.series_id = series_hash(point.name, {}, attributes)
        points.append(point)
    return points


def test_a_worker_meeting_stored_series_finds_them_and_writes_only_the_new_one() -> None:
    project_id = Project.objects.create(name="fleet").pk
    t0 = now_ns()
    assert store.insert_points(project_id, _gauges(t0, range(3))) == 3
    store.forget_known_series()  # another worker, or this one after a restart

    with transaction.atomic():
        assert store.insert_points(project_id, _gauges(t0 + MINUTE_NS, range(4))) == 4
        # Found rows are committed ones: remembered before this batch commits.
        known = {(project_id, p.series_id) for p in _gauges(t0, range(3))}
        assert known <= store._known_series
    assert MetricSeries.objects.filter(project_id=project_id).count() == 4
    assert StoredPoint.objects.filter(project_id=project_id).count() == 7


def test_a_resent_batch_and_a_batch_with_one_stored_point_store_only_what_is_new() -> None:
    project_id = Project.objects.create(name="retries").pk
    t0 = now_ns()
    batch = _gauges(t0, range(5))
    assert store.insert_points(project_id, batch) == 5
    assert store.insert_points(project_id, _gauges(t0, range(5))) == 0  # the COPY fails on the key: ON CONFLICT path
    mixed = _gauges(t0, range(1)) + _gauges(t0 + MINUTE_NS, range(5))
    assert store.insert_points(project_id, mixed) == 5
    assert StoredPoint.objects.filter(project_id=project_id).count() == 10
