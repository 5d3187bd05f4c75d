"""Per-ingest-key span rate limit, counted in Redis so every web process shares it.

`limits` (a maintained library, also behind Flask-Limiter and SlowAPI) does the counting:
its sliding-window counter keeps two integers per key and window in Redis and takes a cost
per hit, so a batch of 512 spans is one INCRBY, not 512 entries as a moving-window log
would be. A token bucket is not among its strategies; a window of BURST / RATE seconds
allowing BURST spans gives the same promise: a quiet key may send a burst at once, and over
any window its average stays at the rate.

Off unless INGEST_RATE_LIMIT_SPANS_PER_S is set. When Redis cannot be reached the limit is
not applied (and a line is logged): losing telemetry to protect against a flood that is not
happening would be the worse failure.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from django.conf import settings

from observatory.logthrottle import ThrottledLog

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.strategies import SlidingWindowCounterRateLimiter

log = logging.getLogger("observatory.ingest")
_throttled = ThrottledLog(log)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0


@dataclass(frozen=True)
class SpanRateLimit:
    limiter: SlidingWindowCounterRateLimiter
    item: RateLimitItem

    @property
    def burst(self) -> int:
        return int(self.item.amount)

    def has_room(self, key_ref: str) -> Verdict:
        """Whether the key may send anything at all: checked before its body is read."""
        return self._ask(key_ref, 1, consume=False)

    def take(self, key_ref: str, spans: int) -> Verdict:
        """Count `spans` against the key if they fit; nothing is counted when they do not."""
        return self._ask(key_ref, spans, consume=True)

    def _ask(self, identifier: str, spans: int, *, consume: bool) -> Verdict:
        try:
            if spans <= 0:
                return Verdict(True)
            ok = (
                self.limiter.hit(self.item, identifier, cost=spans)
                if consume
                else self.limiter.test(self.item, identifier, cost=spans)
            )
            if ok:
                return Verdict(True)
            reset_at = self.limiter.get_window_stats(self.item, identifier).reset_time
        except Exception as exc:  # redis-py's errors, or limits' wrapping of them: fail open
            _throttled.warning(("rate-limit-unavailable",), "ingest rate limit not applied: Redis unavailable: %s", exc)
            return Verdict(True)
        return Verdict(False, retry_after=max(1, math.ceil(reset_at - time.time())))


def _storage_uri(redis_url: str) -> str:
    # Celery (kombu) spells a Unix socket redis+socket:///path; limits spells it redis+unix.
    if redis_url.startswith("redis+socket://"):
        return "redis+unix://" + redis_url.removeprefix("redis+socket://")
    if redis_url.startswith("socket://"):
        return "redis+unix://" + redis_url.removeprefix("socket://")
    return redis_url


@cache
def _configured(rate: int, burst: int, redis_url: str) -> SpanRateLimit:
    # Imported here: a deployment without a rate limit never loads limits or its Redis client.
    from limits import RateLimitItemPerSecond
    from limits.storage import storage_from_string
    from limits.strategies import SlidingWindowCounterRateLimiter

    burst = burst or rate * 10
    seconds = max(1, round(burst / rate))
    storage = storage_from_string(_storage_uri(redis_url), socket_timeout=1, socket_connect_timeout=1)
    limiter = SlidingWindowCounterRateLimiter(storage)
    return SpanRateLimit(limiter, RateLimitItemPerSecond(max(burst, rate), seconds))


def span_rate_limit() -> SpanRateLimit | None:
    """The configured limit, or None when ingest is not rate-limited."""
    rate = settings.INGEST_RATE_LIMIT_SPANS_PER_S
    if not rate:
        return None
    return _configured(rate, settings.INGEST_RATE_LIMIT_BURST_SPANS, settings.REDIS_URL)


def forget() -> None:
    _configured.cache_clear()
    _throttled.forget()
