"""Log lines that a client can repeat at will, written once per kind and then counted.

An unauthenticated client, or an exporter stuck re-sending one bad batch, would otherwise
write a WARNING per request: enough to fill a disk and to bury every other line. The first
occurrence of each kind (a reason plus who caused it) is logged as it comes; repeats within
the window are counted, and the count is logged as one summary line once the window has
passed ("41 more like this in the last 60 s"), when the next line of any kind is offered.

Per process and in memory: at most `max_kinds` kinds are remembered, the oldest leaving
first (with its summary). No library does this for the standard logging module (the
filters people publish drop repeats without counting them), and it is one small class.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["ThrottledLog"]

# A remembered first line is kept only to name the kind in its summary.
_SAMPLE_CHARS = 300


@dataclass(slots=True)
class _Kind:
    since: float
    sample: str
    repeats: int = 0


class ThrottledLog:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        window_seconds: float = 60.0,
        max_kinds: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.clock = clock
        self.window_seconds = window_seconds
        self.max_kinds = max_kinds
        # Insertion order is window-start order (an entry is never moved), so the oldest
        # windows are always at the front: closing them is a pop from the front.
        self._kinds: OrderedDict[Hashable, _Kind] = OrderedDict()
        # gunicorn threads share this object.
        self._lock = threading.Lock()

    def warning(self, kind: Hashable, message: str, *args: object) -> bool:
        """Log `message % args` at WARNING unless a line of this kind was logged within the
        window; returns whether it was logged."""
        return self.log(logging.WARNING, kind, message, *args)

    def log(self, level: int, kind: Hashable, message: str, *args: object) -> bool:
        now = self.clock()
        summaries: list[_Kind] = []
        with self._lock:
            self._close_windows(now, summaries)
            seen = self._kinds.get(kind)
            if seen is not None:
                seen.repeats += 1
                first = False
            else:
                text = message % args if args else message
                self._kinds[kind] = _Kind(since=now, sample=text[:_SAMPLE_CHARS])
                while len(self._kinds) > self.max_kinds:
                    summaries.append(self._kinds.popitem(last=False)[1])
                first = True
        # Logged outside the lock: a handler may be slow.
        for closed in summaries:
            self._summarise(closed, now)
        if first:
            self.logger.log(level, message, *args)
        return first

    def flush(self) -> None:
        """Close every window now (their summaries are logged) and forget every kind."""
        now = self.clock()
        with self._lock:
            closed = list(self._kinds.values())
            self._kinds.clear()
        for kind in closed:
            self._summarise(kind, now)

    def forget(self) -> None:
        with self._lock:
            self._kinds.clear()

    def _close_windows(self, now: float, summaries: list[_Kind]) -> None:
        while self._kinds:
            oldest = next(iter(self._kinds.values()))
            if now - oldest.since < self.window_seconds:
                return
            summaries.append(self._kinds.popitem(last=False)[1])

    def _summarise(self, kind: _Kind, now: float) -> None:
        if kind.repeats:
            seconds = min(now - kind.since, self.window_seconds)
            self.logger.warning(
                "%d more like this in the last %.0f s: %s", kind.repeats, max(seconds, 1.0), kind.sample
            )
