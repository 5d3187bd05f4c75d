"""Raw pieces shared by every page rendered in the same few seconds, refreshed off the request.

The current hour (and any partial or noted hour) is read from raw spans: rolled up on the
fly, which costs far more than reading rolled-up hours (~150-400 ms for an hour at 10M
spans a month). A page asks ten or more questions of the same range, and a person clicks
through several pages; preset ranges end at a FRESHNESS boundary (params.preset_window), so
they all ask about the same pieces. One generation of SharedReads serves every request of
this process for its boundary: pages rendered with it are "as of" that moment
(params.page_now), the same staleness the rollup sweep allows.

When the next boundary passes, the request that notices starts a background thread that
rolls up the new current-hour piece (every project, every grouping set) and then swaps the
new generation in; meanwhile requests keep getting the previous one, at most STALE_GRACE
old. Without a generation that recent (a quiet process, or the first page after a start),
the request makes a fresh generation and fills its pieces itself.

Sharing across users is safe: a SharedReads keeps pieces per project and grouping set,
with every tenant's rows, and run_query applies each viewer's scope and filters afterwards.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.dashboard.params import FRESHNESS, PAGE_AS_OF, freshness_boundary
from apps.metrics import reads
from apps.metrics.plan import RawPiece, floor_hour
from apps.metrics.query import Filters as QueryFilters
from apps.metrics.query import Query, QueryResult, Scope, SharedReads, filtered_project_ids, run_query

log = logging.getLogger(__name__)

_current: ContextVar[SharedReads | None] = ContextVar("observatory_page_reads", default=None)
View = TypeVar("View", bound=Callable[..., Any])
# How old a generation may be while its successor is being rolled up in the background.
STALE_GRACE = 3 * FRESHNESS


@dataclass
class _LockedReads(SharedReads):
    """SharedReads for several request threads: one fills a piece while the others wait,
    so nobody sees a piece half filled."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def rows(self, piece: RawPiece, grouping: int) -> list[dict[str, Any]]:
        with self.lock:
            return super().rows(piece, grouping)


@dataclass(frozen=True)
class _Generation:
    as_of: datetime  # the FRESHNESS boundary its pages end at
    reads: _LockedReads


_generation: _Generation | None = None
_refreshing = False  # a background refresh is running
_process_lock = threading.Lock()


def _generation_for(now: datetime) -> _Generation:
    global _generation, _refreshing
    boundary = freshness_boundary(now)
    with _process_lock:
        current = _generation
        if current is not None and current.as_of == boundary:
            return current
        if current is not None and boundary - current.as_of <= STALE_GRACE and settings.DASHBOARD_BACKGROUND_REFRESH:
            if not _refreshing:
                _refreshing = True
                threading.Thread(target=_refresh, args=(boundary,), name="page-reads-refresh", daemon=True).start()
            return current
        _generation = _Generation(boundary, _LockedReads())
        return _generation


def _refresh(boundary: datetime) -> None:
    """Roll up the current-hour piece as of `boundary` for every project, then make it the
    generation pages read (unless a newer one got there first)."""
    global _generation, _refreshing
    try:
        fresh = _LockedReads()
        project_ids = filtered_project_ids(QueryFilters())
        start = floor_hour(boundary)
        if project_ids and start < boundary:
            with reads.snapshot():
                fresh.rows(RawPiece(project_ids, start, boundary, "edge"), 0)
        with _process_lock:
            if _generation is None or _generation.as_of < boundary:
                _generation = _Generation(boundary, fresh)
    except Exception:
        # The next request rolls the piece up itself; a refresh never breaks a page.
        log.exception("background refresh of the dashboard's raw pieces as of %s failed", boundary)
    finally:
        with _process_lock:
            _refreshing = False
        connection.close()  # this thread's own connection


def prefill() -> threading.Thread | None:
    """Make the generation of the current boundary and roll its current-hour piece up in the
    background: called when a web worker starts (gunicorn.conf.py, post_worker_init), so its
    first pages find the piece filled, or being filled, instead of reading the open hour from
    raw spans themselves. A request that comes before the fill is done waits for it on the
    generation's lock (it would have read the same piece). None when a generation that
    recent is there already or background reads are off."""
    global _generation
    if not settings.DASHBOARD_BACKGROUND_REFRESH:
        return None
    boundary = freshness_boundary(timezone.now())
    with _process_lock:
        if _generation is not None and _generation.as_of >= boundary:
            return None
        generation = _Generation(boundary, _LockedReads())
        _generation = generation
    thread = threading.Thread(target=_fill, args=(generation,), name="page-reads-refresh", daemon=True)
    thread.start()
    return thread


def _fill(generation: _Generation) -> None:
    try:
        project_ids = filtered_project_ids(QueryFilters())
        start = floor_hour(generation.as_of)
        if project_ids and start < generation.as_of:
            with reads.snapshot():
                generation.reads.rows(RawPiece(project_ids, start, generation.as_of, "edge"), 0)
    except Exception:
        # A page that finds the piece missing reads it itself (SharedReads fills on demand).
        log.exception("filling the dashboard's raw pieces as of %s at start failed", generation.as_of)
    finally:
        connection.close()  # this thread's own connection


def page_reads(view: View) -> View:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        generation = _generation_for(timezone.now())
        token = _current.set(generation.reads)
        as_of = PAGE_AS_OF.set(generation.as_of)
        try:
            # Every figure of the page in one snapshot, each planning question asked once
            # (apps/metrics/snapshot.py); these views only read.
            with reads.session():
                return view(*args, **kwargs)
        finally:
            PAGE_AS_OF.reset(as_of)
            _current.reset(token)

    return wrapper  # type: ignore[return-value]


def of_boundary(now: datetime) -> SharedReads | None:
    """The raw pieces of `now`'s 10-second boundary, shared with the pages, for a reader
    whose window must end at that boundary (the JSON API): None while the generation being
    served is still the previous boundary's (its successor is being read in the background),
    and the reader reads its pieces itself, as without sharing."""
    generation = _generation_for(now)
    return generation.reads if generation.as_of == freshness_boundary(now) else None


def current() -> SharedReads | None:
    return _current.get()


def query(query: Query, scope: Scope, shared: SharedReads | None = None) -> QueryResult:
    return run_query(query, scope, shared=shared or _current.get())


def forget() -> None:
    """Start afresh (tests: each test's database differs from the last one's)."""
    global _generation
    with _process_lock:
        _generation = None


def wait_for_refresh(timeout: float = 10.0) -> None:
    """Block until no background refresh runs (tests and benchmarks)."""
    for thread in threading.enumerate():
        if thread.name == "page-reads-refresh":
            thread.join(timeout)
