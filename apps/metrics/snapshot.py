"""The transaction a query reads in, and sessions of several queries read as one.

Each query reads in one snapshot: outside a caller's transaction run_query opens a
REPEATABLE READ, READ ONLY one, so the noted hours it plans around, the rollup rows and the
raw spans it reads are all as of one moment, even while the runner replaces hours.

Several queries asked together (a page, an email, an API batch) can read as one: inside
`session()` they share one such snapshot, and what each would otherwise ask the database
again (the projects, a range's noted hours, its whole days' builds) is asked once
(`remembered`). A page of a dozen queries then opens one transaction instead of a dozen and
makes some forty fewer round trips, and every figure on it is as of the same moment.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import connection, transaction

# For the query's statements only (SET LOCAL, like the rollup runner): the raw pieces run the
# rollup's large query, whose JIT compilation costs more than it runs, and its sorts and
# hashes want more than the default 4MB.
WORK_MEM = "64MB"
T = TypeVar("T")


@dataclass
class ReadSession:
    """What the queries of one session() have asked the database, by question."""

    answers: dict[Hashable, Any] = field(default_factory=dict)


_session: ContextVar[ReadSession | None] = ContextVar("observatory_read_session", default=None)


@contextmanager
def session() -> Iterator[ReadSession]:
    """Read every query inside in one snapshot (REPEATABLE READ, READ ONLY, as snapshot()),
    asking each planning question once (remembered()). Nested sessions are the outer one.
    Only for reads: nothing inside may write, and an error inside ends the session."""
    current = _session.get()
    if current is not None:
        yield current
        return
    # Inside a caller's transaction (tests, a task's own): a savepoint, so that an error
    # raised inside (a view's 404) leaves that transaction usable.
    with transaction.atomic() if connection.in_atomic_block else nullcontext(), snapshot():
        opened = ReadSession()
        token = _session.set(opened)
        try:
            yield opened
        finally:
            _session.reset(token)


def remembered(question: Hashable, ask: Callable[[], T]) -> T:
    """ask()'s answer, asked once per session for `question` (outside a session, every time).
    Answers are shared: callers must not change them."""
    current = _session.get()
    if current is None:
        return ask()
    if question not in current.answers:
        current.answers[question] = ask()
    return current.answers[question]


@contextmanager
def snapshot() -> Iterator[None]:
    """The transaction a query reads in, with the statement settings below."""
    if _session.get() is not None and connection.in_atomic_block:
        yield  # the session's snapshot, settings made
        return
    if connection.in_atomic_block:
        # The caller's transaction and its snapshot rules; no savepoint to pay for.
        with transaction.atomic(savepoint=False), connection.cursor() as cur:
            cur.execute("SELECT set_config('jit', 'off', true), set_config('work_mem', %s, true)", [WORK_MEM])
            yield
        return
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur.execute("SELECT set_config('jit', 'off', true), set_config('work_mem', %s, true)", [WORK_MEM])
        yield
