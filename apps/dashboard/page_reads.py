"""Raw pieces shared by every page rendered in the same few seconds.

The current hour (and any partial or noted hour) is read from raw spans: rolled up on the
fly, which costs far more than reading rolled-up hours. A page asks ten or more questions
of the same range, and a person clicks through several pages; preset ranges end at a
FRESHNESS boundary (params.preset_window), so they all ask about the same pieces. One
SharedReads serves every request of this process for FRESHNESS seconds, then a fresh one
starts: figures are at most that old, the same staleness the rollup sweep allows.

Sharing across users is safe: a SharedReads keeps pieces per project and grouping set,
with every tenant's rows, and run_query applies each viewer's scope and filters afterwards.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from apps.dashboard.params import FRESHNESS
from apps.metrics.plan import RawPiece
from apps.metrics.query import Query, QueryResult, Scope, SharedReads, run_query

_current: ContextVar[SharedReads | None] = ContextVar("observatory_page_reads", default=None)
View = TypeVar("View", bound=Callable[..., Any])


@dataclass
class _LockedReads(SharedReads):
    """SharedReads for several request threads: one fills a piece while the others wait,
    so nobody sees a piece half filled."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def rows(self, piece: RawPiece, grouping: int) -> list[dict[str, Any]]:
        with self.lock:
            return super().rows(piece, grouping)


_process_reads: tuple[float, _LockedReads] | None = None
_process_lock = threading.Lock()


def _reads_for_now() -> SharedReads:
    global _process_reads
    with _process_lock:
        now = time.monotonic()
        if _process_reads is None or now - _process_reads[0] > FRESHNESS.total_seconds():
            _process_reads = (now, _LockedReads())
        return _process_reads[1]


def page_reads(view: View) -> View:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _current.set(_reads_for_now())
        try:
            return view(*args, **kwargs)
        finally:
            _current.reset(token)

    return wrapper  # type: ignore[return-value]


def current() -> SharedReads | None:
    return _current.get()


def query(query: Query, scope: Scope, shared: SharedReads | None = None) -> QueryResult:
    return run_query(query, scope, shared=shared or _current.get())


def forget() -> None:
    """Start afresh (tests: each test's database differs from the last one's)."""
    global _process_reads
    with _process_lock:
        _process_reads = None
