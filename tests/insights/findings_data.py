"""Finding rows for page tests, written directly with evidence that follows the contract in
apps/insights/episodes.py (the detectors that write them are built alongside)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from apps.insights.episodes import signature
from apps.insights.models import Finding


def evidence(
    began: datetime, *, unit: str = "ms", label: str = "p99 latency", link: str | None = None
) -> dict[str, Any]:
    baseline_start, baseline_end = began - timedelta(days=7), began
    hours = [began - timedelta(hours=6) + timedelta(hours=n) for n in range(12)]
    return {
        "unit": unit,
        "label": label,
        "test": {"name": "binomial-quantile", "statistic": 41.5, "p_value": 2.5e-9, "q_value": 7.5e-8},
        "effect": {"name": "ratio", "value": 2.4, "floor": 1.2},
        "baseline": {"start": baseline_start.isoformat(), "end": baseline_end.isoformat(), "n": 10500,
                     "value": 1210.0, "histogram": [[800, 0.5], [1200, 0.4], [2400, 0.1]],
                     "mix": {"stop": 0.93, "length": 0.07}},
        "current": {"start": began.isoformat(), "end": (began + timedelta(hours=6)).isoformat(), "n": 1480,
                    "value": 2904.0, "histogram": [[800, 0.2], [1200, 0.3], [2400, 0.5]],
                    "mix": {"stop": 0.71, "length": 0.27, "content_filter": 0.02}},
        "first_seen_at": None,
        "change_point": began.isoformat(),
        "change_method": "cusum",
        "series": [[hour.isoformat(), 1200.0 if hour < began else 2900.0] for hour in hours],
        "link": link or "/features/support-chat/?range=7d",
    }  # fmt: skip


def make_finding(
    project: Any,
    title: str,
    *,
    kind: str = "regression",
    metric: str = "latency_p99",
    slice_: dict[str, str] | None = None,
    severity: str = "warning",
    status: str = "open",
    began: datetime | None = None,
    last_seen_at: datetime | None = None,
    evidence_json: dict[str, Any] | None = None,
) -> Finding:
    slice_ = {"feature": "support-chat"} if slice_ is None else slice_
    now = timezone.now()
    began = began or now - timedelta(hours=3)
    return Finding.objects.create(
        project=project,
        kind=kind,
        metric=metric,
        slice=slice_,
        tenant=slice_.get("tenant", ""),
        signature=signature(kind, metric, slice_),
        severity=severity,
        status=status,
        title=title,
        evidence=evidence(began) if evidence_json is None else evidence_json,
        started_at=began,
        first_seen_at=began + timedelta(minutes=20),
        last_seen_at=last_seen_at or now - timedelta(minutes=5),
        resolved_at=now if status == "resolved" else None,
    )
