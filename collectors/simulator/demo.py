"""The demo's incident schedule: what `run.py demo` plays into its simulated history.

Placed so the detectors see each against a clean baseline (weeks of ordinary traffic before
it, the same hours a week earlier untouched) and the demo's alert rules fire out of the box
(observatory/demo.py seeds them). Times are absolute, fixed when the history is loaded, so the
live traffic that follows continues the incidents still under way.

- silent-model-change:support-chat, from 20 hours ago, ongoing: a drift finding (a new responded
  model and fingerprint, longer answers, other finish reasons). Inside drift's recent window
  (24 h): an older start puts the new fingerprint in the 7-day baseline, where it is not new.
- p99-regression:search-rerank, from 8 hours ago, ongoing: a regression finding marked on the
  chart, and the search-rerank p99 latency alert.
- cost-spike:globex/code-review, 6 to 2 hours ago: the spike on the cost chart, and globex's
  daily budget alert (the spike's day). Inside the regression detector's current window (6 h):
  a spike a day old is seen by no detector.
- cache-hit-drop:acme, 10 to 2 hours ago: the prompt-cache hit-rate alert; input cost up.
- error-burst:anthropic, 4 to 3 hours ago: Anthropic's error rate and error types jump.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# (name:target, start before now, end before now or None = ongoing)
SCHEDULE: tuple[tuple[str, timedelta, timedelta | None], ...] = (
    ("silent-model-change:support-chat", timedelta(hours=20), None),
    ("p99-regression:search-rerank", timedelta(hours=8), None),
    ("cost-spike:globex/code-review", timedelta(hours=6), timedelta(hours=2)),
    ("cache-hit-drop:acme", timedelta(hours=10), timedelta(hours=2)),
    ("error-burst:anthropic", timedelta(hours=4), timedelta(hours=3)),
)


def demo_incidents(now: datetime) -> list[str]:
    """The schedule as incident specs with absolute UTC times, relative to `now`."""
    specs = []
    for subject, start, end in SCHEDULE:
        spec = f"{subject}@{_iso(now - start)}"
        if end is not None:
            spec += f"..{_iso(now - end)}"
        specs.append(spec)
    return specs


def ongoing(specs: list[str]) -> list[str]:
    """The specs without an end: live traffic carries them on."""
    return [spec for spec in specs if ".." not in spec.rpartition("@")[2]]


def _iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat()
