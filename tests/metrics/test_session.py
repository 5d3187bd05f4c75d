"""Queries read together in one session (apps/metrics/snapshot.py): one snapshot for all of
them, each planning question asked once, and the same numbers as read one by one."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import Project
from apps.metrics import reads
from apps.metrics.query import Query, Scope, run_query
from apps.rollups.day_rows import rebuild_stale_days
from apps.rollups.models import RollupHour, mask
from tests.metrics.test_query import rollup
from tests.metrics.traffic import at

DAY = at("2026-02-02T00:00:00")
NOW = at("2026-02-20T10:30:00")
EVERYTHING = Scope.everything()
METRICS = ("requests", "cost_usd", "e2e_ms_p50", "e2e_ms_p99")
# Partial first and last days around whole ones: kept days and two residual stretches.
START, END = DAY + timedelta(hours=5), DAY + timedelta(days=3, hours=2)
QUERIES = (
    Query(METRICS, START, END),
    Query(METRICS, START, END, granularity="day"),
    Query(METRICS, START, END, group_by=("tenant",)),
    Query(METRICS, START - timedelta(days=2), START),  # another range: its own questions
)


@pytest.fixture
def project(transactional_db: None) -> Any:
    with time_machine.travel(NOW, tick=False) as traveller:
        project = Project.objects.create(name="session")
        for hour in range(-24, 80, 3):
            rollup(project, hour, 0, [100.0 + hour, 200.0, 300.0 * (1 + hour % 7)])
            rollup(project, hour, mask("tenant"), [100.0 + hour], tenant="acme")
            rollup(project, hour, mask("tenant"), [200.0, 300.0 * (1 + hour % 7)], tenant="globex")
        rebuild_stale_days(NOW)
        yield project, traveller


def _statements(captured: CaptureQueriesContext, text: str) -> int:
    return sum(text in query["sql"] for query in captured.captured_queries)


def test_a_session_asks_each_planning_question_once_and_gives_the_same_numbers(project: Any) -> None:
    alone = [run_query(query, EVERYTHING).rows for query in QUERIES]
    with CaptureQueriesContext(connection) as one_by_one:
        for query in QUERIES:
            run_query(query, EVERYTHING)
    with CaptureQueriesContext(connection) as together, reads.session():
        assert [run_query(query, EVERYTHING).rows for query in QUERIES] == alone
        with connection.cursor() as cur:
            cur.execute("SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')")
            assert cur.fetchone() == ("repeatable read", "on")
    assert sum(row["requests"] for row in alone[0]) > 0
    # One transaction, the projects once, noted hours and day builds once per range.
    assert _statements(one_by_one, "SET TRANSACTION") == len(QUERIES)
    assert _statements(together, "SET TRANSACTION") == 1
    assert _statements(one_by_one, "accounts_project") == len(QUERIES)
    assert _statements(together, "accounts_project") == 1
    # Noted hours; kept days' builds; the versions of the days read by the hour (asked before
    # the sums and again before the distributions of a query outside a session).
    for question, asked in (("FROM rollups_dirtyhour", 1), ("AS stale", 1), ("AS notes", 2)):
        assert _statements(one_by_one, question) == asked * len(QUERIES), question
        assert _statements(together, question) == 2, question
    # Outside a session every query opens its own again.
    with CaptureQueriesContext(connection) as after:
        run_query(QUERIES[0], EVERYTHING)
    assert _statements(after, "SET TRANSACTION") == 1


def test_every_query_of_a_session_reads_as_of_its_start(project: Any) -> None:
    """Rollup rows replaced by another connection while the session runs are not seen by the
    session's later queries (one snapshot), and are seen after it."""
    first_hour = RollupHour.objects.filter(bucket=DAY + timedelta(hours=6), grouping=0)

    def replace_elsewhere() -> None:
        first_hour.update(requests=1000)
        connection.close()  # this thread's own connection

    with reads.session():
        before = run_query(QUERIES[0], EVERYTHING).rows[0]["requests"]
        writer = threading.Thread(target=replace_elsewhere)
        writer.start()
        writer.join()
        assert run_query(QUERIES[0], EVERYTHING).rows[0]["requests"] == before
    assert run_query(QUERIES[0], EVERYTHING).rows[0]["requests"] == before - 3 + 1000


def test_an_error_inside_a_session_inside_a_transaction_leaves_that_transaction_usable(project: Any) -> None:
    from django.db import transaction

    with transaction.atomic():
        with pytest.raises(LookupError), reads.session():
            run_query(QUERIES[0], EVERYTHING)
            raise LookupError("a view's 404")
        assert run_query(QUERIES[0], EVERYTHING).rows[0]["requests"] > 0
