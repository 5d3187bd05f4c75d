"""One SharedReads per page render, so a page's many queries roll the open hour up once.

The open hour (and any partial or noted hour) is read from raw spans; a page asks ten or
more questions of the same range, and without sharing each would roll that piece up again.
`@page_reads` gives the view's request its own SharedReads; `query()` runs a query with it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from apps.metrics.query import Query, QueryResult, Scope, SharedReads, run_query

_current: ContextVar[SharedReads | None] = ContextVar("observatory_page_reads", default=None)
View = TypeVar("View", bound=Callable[..., Any])


def page_reads(view: View) -> View:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _current.set(SharedReads())
        try:
            return view(*args, **kwargs)
        finally:
            _current.reset(token)

    return wrapper  # type: ignore[return-value]


def current() -> SharedReads | None:
    return _current.get()


def query(query: Query, scope: Scope, shared: SharedReads | None = None) -> QueryResult:
    return run_query(query, scope, shared=shared or _current.get())
