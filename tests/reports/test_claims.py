"""Exactly once: two connections claiming one (user, week) at the same moment, and two
workers handed one review to send."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from apps.reports.models import WeeklyReview
from tests.reports.conftest import WEEK

pytestmark = pytest.mark.django_db(transaction=True)


def at_once(work: Callable[[], Any], threads: int = 2) -> list[Any]:
    """Run `work` on `threads` threads (each on its own database connection), released together."""
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[slot] = work()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=run, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not errors, errors
    return results


def test_two_connections_claiming_one_user_week_claim_it_once(owner: Any) -> None:
    for _ in range(5):
        WeeklyReview.objects.all().delete()
        claims = at_once(lambda: WeeklyReview.claim(owner.pk, WEEK), threads=4)
        won = [claim for claim in claims if claim is not None]
        assert len(won) == 1, claims
        assert WeeklyReview.objects.filter(user=owner, week=WEEK.label).count() == 1
    # A different week is a different claim.
    assert WeeklyReview.claim(owner.pk, WEEK.previous) is not None


def test_two_workers_taking_one_review_to_send_take_it_once(owner: Any) -> None:
    review_id = WeeklyReview.claim(owner.pk, WEEK)
    assert review_id is not None
    # Not built yet: nobody may send it.
    assert not WeeklyReview.take_for_sending(review_id)
    WeeklyReview.objects.filter(pk=review_id).update(status=WeeklyReview.Status.READY)
    taken = at_once(lambda: WeeklyReview.take_for_sending(review_id), threads=4)
    assert sorted(taken) == [False, False, False, True]
    review = WeeklyReview.objects.get(pk=review_id)
    assert review.status == WeeklyReview.Status.SENDING and review.attempts == 1


def test_a_lease_left_by_a_killed_sender_runs_out(owner: Any) -> None:
    import time_machine

    from apps.reports.models import SEND_LEASE

    review_id = WeeklyReview.claim(owner.pk, WEEK)
    assert review_id is not None
    WeeklyReview.objects.filter(pk=review_id).update(status=WeeklyReview.Status.READY)
    assert WeeklyReview.take_for_sending(review_id)
    assert not WeeklyReview.take_for_sending(review_id)
    lease_until = WeeklyReview.objects.get(pk=review_id).lease_until
    with time_machine.travel(lease_until + SEND_LEASE / 10, tick=False):
        assert WeeklyReview.take_for_sending(review_id)
    assert WeeklyReview.objects.get(pk=review_id).attempts == 2


def test_a_review_stranded_by_a_dead_worker_is_built_and_sent_by_a_later_sweep(owner: Any) -> None:
    from datetime import timedelta

    from apps.reports import delivery
    from apps.reports.models import STRANDED_AFTER

    claimed = WeeklyReview.claim(owner.pk, WEEK)  # a worker claimed it, then died before building
    assert claimed is not None
    now = WEEK.end + timedelta(hours=9)
    WeeklyReview.objects.filter(pk=claimed).update(claimed_at=now)  # the database's clock, travelled
    early = delivery.sweep(now - STRANDED_AFTER + timedelta(minutes=1))  # too soon to call it dead
    assert claimed not in early.ready
    result = delivery.sweep(now + STRANDED_AFTER + timedelta(minutes=1))
    assert claimed in result.ready
    assert WeeklyReview.objects.get(pk=claimed).status == WeeklyReview.Status.READY
    # Built but its send message lost: a later sweep queues it again; sending it stays once.
    later = delivery.sweep(now + 3 * STRANDED_AFTER)
    assert later.ready == [claimed]
