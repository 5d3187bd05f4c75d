"""From detector candidates to findings: false-discovery control, then one row per episode.

Every detector (drift.py, regressions.py) returns `Candidate`s for one project at one moment,
each with its raw p-value. `record()` takes one detector family's candidates together:

1. Benjamini-Hochberg over the family (every slice and metric tested in this run, including
   those that came out unremarkable: `tested` counts them), so many slices tested at once do
   not raise the false-alarm rate; candidates whose adjusted q-value is above FDR_LEVEL, or
   whose effect is under its floor (the detector's `significant_effect`), are dropped.
2. Upsert: a signature (kind + metric + slice) with an open finding is refreshed (last seen,
   evidence, severity, title); one without opens a new finding. The partial unique index
   `finding_one_open_episode` makes two runs at once open one episode only.
3. Resolve: an open finding of this family that is not among the kept candidates, in a slice
   the detector could judge (enough samples: `judged` signatures), is resolved. A slice
   without enough data this run keeps its finding open (no news is not good news).

Accepting a finding as the new normal ends its episode (status accepted); detectors ask
`baseline_floor()` for the signature and start their baseline no earlier than that moment,
so the accepted shift is the baseline from then on and does not reopen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Max
from scipy.stats import false_discovery_control

from apps.insights.models import Finding

# The false discovery rate across one detector run's family of tests.
FDR_LEVEL = 0.01


@dataclass
class Candidate:
    """One slice/metric a detector found shifted (before false-discovery control).

    `evidence` follows the contract in docs/metrics.md ("Findings: evidence"):
    test {name, statistic, p_value}, effect {name, value, floor}, baseline / current
    {start, end, n, value, histogram | mix}, unit, first_seen_at, change_point, series, link.
    `record()` adds test.q_value.
    """

    kind: str  # Finding.Kind
    metric: str
    slice: dict[str, str]  # provider / model / feature / tenant / service; absent = all
    severity: str  # Finding.Severity
    title: str
    p_value: float
    evidence: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None

    @property
    def tenant(self) -> str:
        return self.slice.get("tenant", "")

    @property
    def signature(self) -> str:
        return signature(self.kind, self.metric, self.slice)


def signature(kind: str, metric: str, slice_: dict[str, str]) -> str:
    return f"{kind}:{metric}:" + json.dumps(dict(sorted(slice_.items())), separators=(",", ":"), ensure_ascii=False)


def benjamini_hochberg(p_values: Sequence[float], tested: int | None = None) -> list[float]:
    """BH-adjusted q-values for `p_values`, in their order, as if `tested` tests were run
    (the others count as p = 1: they only enlarge the family). scipy's
    false_discovery_control on the padded family."""
    if not p_values:
        return []
    padding = max(0, (tested or 0) - len(p_values))
    family = np.concatenate([np.clip(np.nan_to_num(np.asarray(p_values, np.float64), nan=1.0), 0.0, 1.0),
                             np.ones(padding)])  # fmt: skip
    return [float(q) for q in false_discovery_control(family, method="bh")[: len(p_values)]]


def baseline_floor(project_id: int, signatures: Iterable[str]) -> dict[str, datetime]:
    """For each signature a user accepted as the new normal: the latest acceptance moment."""
    rows = (
        Finding.objects.filter(project_id=project_id, signature__in=list(signatures), status=Finding.Status.ACCEPTED)
        .values("signature")
        .annotate(at=Max("accepted_at"))
    )
    return {row["signature"]: row["at"] for row in rows if row["at"] is not None}


def record(
    project_id: int,
    kind: str,
    metrics: Iterable[str],
    candidates: Sequence[Candidate],
    *,
    tested: int,
    judged: Iterable[str],
    now: datetime,
) -> list[Finding]:
    """Apply false-discovery control to one detector family's run and write the episodes.

    `metrics`: the metrics this family covers (only their open findings may be resolved here).
    `tested`: how many (slice, metric) tests the run made. `judged`: the signatures that had
    enough data to be judged this run. Returns the open findings written or refreshed."""
    q_values = benjamini_hochberg([c.p_value for c in candidates], tested)
    kept = [(c, q) for c, q in zip(candidates, q_values, strict=True) if q <= FDR_LEVEL]
    written: list[Finding] = []
    kept_signatures = set()
    for candidate, q in kept:
        evidence = dict(candidate.evidence)
        evidence["test"] = {**evidence.get("test", {}), "p_value": candidate.p_value, "q_value": q}
        kept_signatures.add(candidate.signature)
        written.append(_upsert(project_id, candidate, evidence, now))
    judged_set = set(judged)
    stale = Finding.objects.filter(
        project_id=project_id, kind=kind, metric__in=list(metrics), status=Finding.Status.OPEN
    ).exclude(signature__in=kept_signatures)
    stale.filter(signature__in=judged_set).update(status=Finding.Status.RESOLVED, resolved_at=now)
    return written


def _upsert(project_id: int, candidate: Candidate, evidence: dict[str, Any], now: datetime) -> Finding:
    fields = {
        "severity": candidate.severity,
        "title": candidate.title[:300],
        "evidence": evidence,
        "last_seen_at": now,
    }
    for _attempt in range(2):
        existing = Finding.objects.filter(
            project_id=project_id, signature=candidate.signature, status=Finding.Status.OPEN
        ).first()
        if existing is not None:
            for name, value in fields.items():
                setattr(existing, name, value)
            if existing.started_at is None and candidate.started_at is not None:
                existing.started_at = candidate.started_at
            existing.save(update_fields=[*fields, "started_at"])
            return existing
        try:
            with transaction.atomic():
                return Finding.objects.create(
                    project_id=project_id,
                    kind=candidate.kind,
                    metric=candidate.metric,
                    slice=candidate.slice,
                    tenant=candidate.tenant,
                    signature=candidate.signature,
                    started_at=candidate.started_at,
                    first_seen_at=now,
                    **fields,
                )
        except IntegrityError:
            continue  # another run opened it a moment ago: refresh that one
    raise RuntimeError(f"could not record finding {candidate.signature}")
