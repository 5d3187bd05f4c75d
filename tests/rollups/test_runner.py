"""The noted-hour protocol (DirtyHour) and the range rebuild: late data, re-pricing, running
twice, two workers at once, and a note that commits after the notes were read."""

from __future__ import annotations

import io
import threading
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection, connections, transaction

from apps.accounts.models import Project
from apps.pricing.models import Price
from apps.pricing.pricebook import PriceBook
from apps.pricing.services import price_spans, reprice_range
from apps.rollups import runner, tasks
from apps.rollups.models import DirtyHour, RollupHour, mask
from apps.rollups.runner import recompute_hours, recompute_pending, rollup_pending, rollup_range
from apps.telemetry.partitions import ensure_partitions_for
from apps.telemetry.store import insert_spans
from tests.rollups.helpers import Trace, at, one, rows, total

HOUR = at("2026-03-02T10:00:00")
FIELDS = [field.name for field in RollupHour._meta.get_fields() if field.name not in {"id", "project"}]


def call_traces(start, count: int, *, tenant: str | None = "acme", spacing=timedelta(minutes=1)) -> list[Any]:
    """`count` traces of a root (tenant, feature) and one call, `spacing` apart."""
    spans = []
    for n in range(count):
        t = Trace(start + n * spacing)
        root = t.root(tenant=tenant, feature="chat")
        t.llm(parent=root, duration_ms=100 + n)
        spans += t.spans
    return spans


def snapshot(project_id: int) -> list[tuple[Any, ...]]:
    """Every rollup row of the project, ids left out, in a stable order."""
    values = RollupHour.objects.filter(project_id=project_id).values_list(*FIELDS)
    return sorted(values, key=repr)


@pytest.mark.django_db
def test_pending_hours_are_recomputed_and_their_notes_consumed(project: Project) -> None:
    insert_spans(project.pk, call_traces(HOUR, 3))
    insert_spans(project.pk, call_traces(HOUR + timedelta(hours=2), 2))
    insert_spans(project.pk, call_traces(HOUR + timedelta(minutes=30), 1))  # a second note for hour 10
    assert DirtyHour.objects.count() == 3

    assert rollup_pending() == 2
    assert DirtyHour.objects.count() == 0
    first, second = rows(project.pk, 0)
    assert (first.bucket, first.requests) == (HOUR, 4)
    assert (second.bucket, second.requests) == (HOUR + timedelta(hours=2), 2)
    assert rollup_pending() == 0

    # The same rows as a rebuild of the whole range.
    by_notes = snapshot(project.pk)
    rollup_range(HOUR, HOUR + timedelta(hours=3))
    assert snapshot(project.pk) == by_notes


@pytest.mark.django_db
def test_late_spans_for_an_hour_already_rolled_up(project: Project) -> None:
    insert_spans(project.pk, call_traces(HOUR, 2))
    rollup_pending()
    assert total(project.pk).requests == 2
    insert_spans(project.pk, call_traces(HOUR + timedelta(minutes=50), 1))  # a late batch
    assert list(DirtyHour.objects.values_list("hour", flat=True)) == [HOUR]
    assert rollup_pending() == 1
    assert total(project.pk).requests == 3


@pytest.mark.django_db
def test_a_root_arriving_later_in_the_same_hour_attributes_the_call(project: Project) -> None:
    t = Trace(HOUR + timedelta(minutes=5))
    root = t.root(tenant="acme", feature="chat")
    t.llm(parent=root)
    client, server_root = t.spans[1], t.spans[0]
    insert_spans(project.pk, [client])  # the client span's batch is exported first
    rollup_pending()
    assert (one(project.pk).tenant, one(project.pk).feature) == ("", "support-api")
    insert_spans(project.pk, [server_root])  # the root ends (and is exported) later
    rollup_pending()
    row = one(project.pk, requests=1)
    assert (row.tenant, row.feature) == ("acme", "chat")
    assert [r.tenant for r in rows(project.pk, mask("tenant"))] == ["acme"]


@pytest.mark.django_db
def test_running_twice_changes_nothing(project: Project) -> None:
    insert_spans(project.pk, call_traces(HOUR, 5, spacing=timedelta(minutes=20)))
    rollup_range(HOUR, HOUR + timedelta(hours=2))
    once = snapshot(project.pk)
    ids = set(RollupHour.objects.values_list("id", flat=True))
    rollup_range(HOUR, HOUR + timedelta(hours=2))
    assert snapshot(project.pk) == once
    assert recompute_hours(project.pk, [HOUR, HOUR + timedelta(minutes=30), HOUR + timedelta(hours=1)]) == 2
    assert snapshot(project.pk) == once
    assert not ids & set(RollupHour.objects.values_list("id", flat=True))  # replaced, not added to


@pytest.mark.django_db
def test_rollup_range_rebuilds_partial_hours_whole(project: Project) -> None:
    insert_spans(project.pk, call_traces(HOUR, 4, spacing=timedelta(minutes=15)))
    written = rollup_range(HOUR + timedelta(minutes=40), HOUR + timedelta(minutes=41))
    assert written == len(RollupHour.objects.all()) > 0
    assert total(project.pk).requests == 4  # the whole hour 10:00-11:00
    assert DirtyHour.objects.count() == 0  # and its notes are consumed
    with pytest.raises(ValueError, match="aware"):
        rollup_range(HOUR.replace(tzinfo=None), HOUR.replace(tzinfo=None))


@pytest.mark.django_db
def test_repricing_notes_the_hours_it_changes(project: Project) -> None:
    book = PriceBook.load()
    spans = call_traces(HOUR, 3) + call_traces(HOUR + timedelta(hours=5), 1)
    price_spans(spans, book)
    insert_spans(project.pk, spans)
    rollup_pending()
    first_hour_cost = rows(project.pk, 0)[0].cost_usd
    assert first_hour_cost > 0

    # An exact model name outranks the catalog's pattern: the spans from 11:00 on change price.
    Price.objects.create(provider="openai", model_pattern="gpt-4o-mini-2024-07-18",
                         effective_from=HOUR + timedelta(hours=1), input_per_mtok=Decimal("100"),
                         output_per_mtok=Decimal("100"))  # fmt: skip
    assert reprice_range(HOUR, HOUR + timedelta(days=1)) == 1  # only the span at 15:00 is after the change
    assert list(DirtyHour.objects.values_list("hour", flat=True)) == [HOUR + timedelta(hours=5)]
    assert rollup_pending() == 1
    later = rows(project.pk, 0)[1]
    # 1000 input + 200 output tokens at 100 USD per million each.
    assert later.cost_usd == Decimal("0.12")
    assert rows(project.pk, 0)[0].cost_usd == first_hour_cost


@pytest.mark.django_db
def test_manage_py_rollup(project: Project) -> None:
    insert_spans(project.pk, call_traces(HOUR, 2))
    out = io.StringIO()
    call_command("rollup", "--since", "2026-03-02T09:30", "--until", "2026-03-02T11:00", stdout=out)
    assert "rows" in out.getvalue()
    assert total(project.pk).requests == 2


@pytest.mark.django_db
def test_the_task_sweeps_until_nothing_is_left(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "SWEEP_BATCH_HOURS", 2)
    for n in range(5):
        insert_spans(project.pk, call_traces(HOUR + timedelta(hours=n), 1))
    assert tasks.rollup_pending_task.apply().get() == 5
    assert DirtyHour.objects.count() == 0
    assert len(rows(project.pk, 0)) == 5


@pytest.mark.django_db
def test_the_task_recomputes_each_hour_once_per_sweep(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest notes the current hour again while a sweep recomputes it: the sweep does not
    go round that hour until its budget is spent; the next sweep takes the new note."""
    insert_spans(project.pk, call_traces(HOUR, 1))
    real_replace = runner._replace_rows

    def replace_while_ingest_goes_on(cur, project_ids, start, end):  # type: ignore[no-untyped-def]
        written = real_replace(cur, project_ids, start, end)
        cur.execute(
            "INSERT INTO rollups_dirtyhour (project_id, hour, noted_at) VALUES (%s, %s, now())", [project.pk, HOUR]
        )
        return written

    monkeypatch.setattr(runner, "_replace_rows", replace_while_ingest_goes_on)
    assert tasks.rollup_pending_task.apply().get() == 1
    assert DirtyHour.objects.count() == 1


@pytest.mark.django_db
def test_the_task_retries_a_lost_connection_only(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = []

    def flaky(limit: int, skip: object = ()) -> list[Any]:
        attempts.append(limit)
        if len(attempts) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return []

    monkeypatch.setattr(runner, "recompute_pending", flaky)
    assert tasks.rollup_pending_task.apply().get() == 0
    assert len(attempts) == 2
    assert tasks.rollup_pending_task.max_retries == 5
    assert tasks.rollup_pending_task.autoretry_for == (OperationalError,)

    def broken(limit: int, skip: object = ()) -> list[Any]:
        raise ValueError("a bug is not retried")

    monkeypatch.setattr(runner, "recompute_pending", broken)
    assert tasks.rollup_pending_task.apply().state == "FAILURE"


def _a_backend_waits_for_an_advisory_lock(timeout: float = 30) -> bool:
    """Whether another connection comes to wait on an advisory lock (polled, not slept on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND datname = current_database()"
            )
            if cur.fetchone()[0]:
                return True
        time.sleep(0.01)
    return False


def _in_thread(target, *args: Any) -> tuple[threading.Thread, list[Any]]:
    """Run `target` in a thread with its own database connection; its result or exception
    lands in the returned list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(target(*args))
        except BaseException as exc:
            outcome.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_never_double_count(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker A holds hour 10 (its recompute paused inside the lock) while worker B sweeps:
    B skips hour 10 and does the others; then A finishes hour 10 and finds the others done."""
    for n in range(3):
        insert_spans(project.pk, call_traces(HOUR + timedelta(hours=n), 2))
    a_holds_hour, b_done = threading.Event(), threading.Event()
    real_replace = runner._replace_rows
    replaced: list[tuple[str, Any]] = []

    def replace(cur, project_ids, start, end):  # type: ignore[no-untyped-def]
        replaced.append((threading.current_thread().name, start))
        if start == HOUR and not a_holds_hour.is_set():
            a_holds_hour.set()
            assert b_done.wait(30)
        return real_replace(cur, project_ids, start, end)

    monkeypatch.setattr(runner, "_replace_rows", replace)
    worker_a, a_result = _in_thread(rollup_pending)
    assert a_holds_hour.wait(30)
    worker_b, b_result = _in_thread(rollup_pending)
    worker_b.join(30)
    b_done.set()
    worker_a.join(30)

    assert b_result == [2]  # hours 11 and 12; hour 10 was held
    assert a_result == [1]  # hour 10; 11 and 12 had no notes left when A got to them
    assert sorted(start for _, start in replaced) == [HOUR, HOUR + timedelta(hours=1), HOUR + timedelta(hours=2)]
    assert DirtyHour.objects.count() == 0
    assert [row.requests for row in rows(project.pk, 0)] == [2, 2, 2]


@pytest.mark.django_db(transaction=True)
def test_two_range_rebuilds_at_once_agree(project: Project) -> None:
    insert_spans(project.pk, call_traces(HOUR, 30, spacing=timedelta(minutes=7)))
    threads = [_in_thread(rollup_range, HOUR, HOUR + timedelta(hours=4)) for _ in range(2)]
    for thread, _ in threads:
        thread.join(60)
    assert [outcome[0] for _, outcome in threads] == [threads[0][1][0]] * 2  # no error, same rows written
    assert sum(row.requests for row in rows(project.pk, 0)) == 30


@pytest.mark.django_db(transaction=True)
def test_a_note_committed_after_the_read_survives(project: Project) -> None:
    """Batch X takes its note id first but commits after a worker read the notes (and after a
    later batch Y committed): the worker's recompute cannot have seen X, so X's note must stay."""
    ensure_partitions_for({HOUR.date()})
    x_inserted, x_may_commit = threading.Event(), threading.Event()

    def batch_x() -> int:
        with transaction.atomic():
            stored = insert_spans(project.pk, call_traces(HOUR + timedelta(minutes=1), 1, tenant="x"))
            x_inserted.set()
            assert x_may_commit.wait(30)
        return stored

    writer, _ = _in_thread(batch_x)
    assert x_inserted.wait(30)
    insert_spans(project.pk, call_traces(HOUR + timedelta(minutes=2), 1, tenant="y"))  # batch Y, committed
    assert rollup_pending() == 1
    assert [row.tenant for row in rows(project.pk, mask("tenant"))] == ["y"]
    x_may_commit.set()
    writer.join(30)

    assert DirtyHour.objects.count() == 1  # X's note, id smaller than Y's, survived
    assert rollup_pending() == 1
    assert [row.tenant for row in rows(project.pk, mask("tenant"))] == ["x", "y"]
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM rollups_dirtyhour")
        assert cur.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_a_late_root_in_another_hour_re_notes_the_hours_of_its_trace(project: Project) -> None:
    """The root starts before the top of the hour and arrives after the call under it, whose
    hour was already rolled up: recomputing the root's hour notes the call's hour again."""
    t = Trace(HOUR - timedelta(seconds=1))
    root = t.root(tenant="acme", feature="chat")
    t.llm(parent=root, at_ms=2000)  # 10:00:01
    call = t.spans[1]
    insert_spans(project.pk, [call])
    assert rollup_pending() == 1
    assert one(project.pk, requests=1).tenant == ""
    insert_spans(project.pk, [root])  # notes 09:00 only
    assert list(DirtyHour.objects.values_list("hour", flat=True)) == [HOUR - timedelta(hours=1)]
    assert rollup_pending() == 1  # 09:00, which notes 10:00
    assert list(DirtyHour.objects.values_list("hour", flat=True)) == [HOUR]
    assert rollup_pending() == 1  # 10:00: nothing new arrived there, so nothing more is noted
    assert DirtyHour.objects.count() == 0
    row = one(project.pk, requests=1)
    assert (row.bucket, row.tenant, row.feature) == (HOUR, "acme", "chat")


@pytest.mark.django_db(transaction=True)
def test_locks_let_projects_share_an_hour_and_a_rebuild_wait(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """While worker A recomputes (project 1, 10:00), worker B still takes (project 2, 10:00),
    and a range rebuild of 10:00 waits for A instead of racing it."""
    other = Project.objects.create(name="other")
    insert_spans(project.pk, call_traces(HOUR, 2))
    insert_spans(other.pk, call_traces(HOUR, 3))
    a_holds_hour, release_a = threading.Event(), threading.Event()
    real_replace = runner._replace_rows

    def replace(cur, project_ids, start, end):  # type: ignore[no-untyped-def]
        if project_ids == [project.pk] and not a_holds_hour.is_set():
            a_holds_hour.set()
            assert release_a.wait(30)
        return real_replace(cur, project_ids, start, end)

    monkeypatch.setattr(runner, "_replace_rows", replace)
    worker_a, a_result = _in_thread(recompute_pending, 1)  # the oldest pair: (project 1, 10:00)
    assert a_holds_hour.wait(30)
    worker_b, b_result = _in_thread(rollup_pending)
    worker_b.join(30)
    assert b_result == [1]  # (project 2, 10:00), beside A
    rebuild, rebuilt = _in_thread(rollup_range, HOUR, HOUR + timedelta(hours=1))
    assert _a_backend_waits_for_an_advisory_lock()  # the rebuild, on A's hour
    assert rebuild.is_alive()
    release_a.set()
    worker_a.join(30)
    rebuild.join(30)
    assert a_result == [[(project.pk, HOUR)]]
    assert not rebuild.is_alive() and isinstance(rebuilt[0], int)
    assert [r.requests for r in rows(project.pk, 0)] == [2]
    assert [r.requests for r in rows(other.pk, 0)] == [3]
