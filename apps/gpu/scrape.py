"""Scraping Prometheus endpoints (vLLM /metrics, DCGM exporter) into the metric points table.

Beat triggers a sweep; the database decides what is due. A sweep claims each due target by
moving its next_scrape_at forward with a conditional UPDATE that must touch exactly one row,
so two workers never scrape one target at once, and a worker killed mid-scrape leaves the
target due again one interval later (the claim is a lease, not a flag).
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from apps.gpu.models import ScrapeTarget
from apps.gpu.store import insert_points
from collectors.prometheus import parse_exposition

log = logging.getLogger("observatory.gpu.scrape")


class ScrapeError(Exception):
    """The endpoint could not be read or its text not parsed: the target's own problem."""


@dataclass
class ScrapeOutcome:
    target_id: int
    ok: bool
    points: int = 0
    inserted: int = 0
    error: str = ""


def claim_due_targets(now: datetime, limit: int) -> list[ScrapeTarget]:
    due = list(
        ScrapeTarget.objects.filter(enabled=True, next_scrape_at__lte=now)
        .order_by("next_scrape_at")
        .values_list("pk", "next_scrape_at", "interval_seconds")[:limit]
    )
    claimed = []
    for pk, next_scrape_at, interval in due:
        lease_until = now + timedelta(seconds=max(interval, settings.SCRAPE_TIMEOUT_SECONDS * 2))
        # Only the worker whose UPDATE still sees the value it read wins the target.
        if ScrapeTarget.objects.filter(pk=pk, next_scrape_at=next_scrape_at).update(next_scrape_at=lease_until) == 1:
            claimed.append(ScrapeTarget.objects.get(pk=pk))
    return claimed


def fetch_exposition(url: str) -> str:
    request = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4", "User-Agent": "observatory"})
    limit = settings.SCRAPE_MAX_BYTES
    try:
        with urllib.request.urlopen(request, timeout=settings.SCRAPE_TIMEOUT_SECONDS) as response:
            body = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise ScrapeError(f"HTTP {exc.code} {exc.reason} from {url}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ScrapeError(f"cannot reach {url}: {reason}") from None
    if len(body) > limit:
        raise ScrapeError(f"{url} answered more than {limit} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScrapeError(f"{url} answered text that is not UTF-8: {exc}") from None


def instance_of(target: ScrapeTarget) -> str:
    return target.instance or urllib.parse.urlsplit(target.url).netloc


def scrape_target(target: ScrapeTarget, *, now: datetime | None = None) -> ScrapeOutcome:
    """Scrape one target and store its samples; a failure is recorded on the target (and
    backs it off), never raised. Database errors do propagate: the sweep is retried."""
    now = now or timezone.now()
    try:
        text = fetch_exposition(target.url)
        try:
            result = parse_exposition(text, target.kind, scraped_at_ns=time.time_ns(), instance=instance_of(target))
        except ValueError as exc:
            raise ScrapeError(f"{target.url} did not answer Prometheus exposition text: {exc}") from None
    except ScrapeError as exc:
        target.record_failure(now, str(exc))
        log.warning("scrape failed (%d in a row) %s: %s", target.consecutive_failures, target.url, exc)
        return ScrapeOutcome(target.pk, ok=False, error=str(exc))
    for problem in result.problems[:5]:
        log.warning("scrape %s: sample skipped: %s", target.url, problem)
    inserted = insert_points(target.project_id, result.points)
    target.record_success(now, len(result.points))
    return ScrapeOutcome(target.pk, ok=True, points=len(result.points), inserted=inserted)


def scrape_due(now: datetime | None = None) -> list[ScrapeOutcome]:
    now = now or timezone.now()
    return [scrape_target(target, now=now) for target in claim_due_targets(now, settings.SCRAPE_TARGETS_PER_SWEEP)]
