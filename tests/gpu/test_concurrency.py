"""Two batches of one cumulative series at once (an exporter's retry racing its original): the
second waits for the first, so each interval is counted once."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from apps.accounts.models import Project
from apps.gpu.store import insert_points
from collectors.metric_records import SUM, TEMPORALITY_CUMULATIVE, MetricPoint, series_hash
from tests.gpu.helpers import MINUTE_NS, now_ns, points_of

pytestmark = pytest.mark.django_db(transaction=True)


def _reading(time_ns: int, start_ns: int, value: float) -> MetricPoint:
    point = MetricPoint(
        name="vllm:prompt_tokens", kind=SUM, unit="{token}", resource={}, attributes={}, time_ns=time_ns,
        start_ns=start_ns, temporality=TEMPORALITY_CUMULATIVE, monotonic=True, value=value,
    )  # fmt: skip
    point.series_id = series_hash(point.name, {}, {})
    return point


def test_concurrent_batches_of_one_series_count_each_interval_once() -> None:
    project_id = Project.objects.create(name="race").pk
    start, t0 = now_ns() - 5 * MINUTE_NS, now_ns()
    insert_points(project_id, [_reading(t0, start, 100.0)])

    first_holds_its_lock = threading.Event()
    second_done = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                insert_points(project_id, [_reading(t0 + MINUTE_NS, start, 130.0)])
                first_holds_its_lock.set()
                # The second batch must wait for this commit, not read 100 as its baseline.
                assert not second_done.wait(timeout=1.0)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def second() -> None:
        try:
            first_holds_its_lock.wait(timeout=10)
            insert_points(project_id, [_reading(t0 + 2 * MINUTE_NS, start, 170.0)])
            second_done.set()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert second_done.is_set()
    assert [p.increase for p in points_of("vllm:prompt_tokens")] == [100.0, 30.0, 40.0]
