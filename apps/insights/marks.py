"""Change-point marks on the dashboard's time-series charts.

Every time-series chart of a slice (overview, feature / tenant / model pages) shows a line at
the moment each finding of that slice began (its `started_at`, the detector's change point),
labelled with the finding's title and linked to it. Which findings: those the viewer may see
(visibility.visible_findings), whose change began inside the page's range, and whose slice
is compatible with the page's filters (visibility.compatible).

Cost: one query per page, on a small table. `last_seen_at >= start` is implied by
`started_at >= start` (a finding is seen after its change began) and lets PostgreSQL use
the `finding_recent` index (project, -last_seen_at) when a page filters projects; without a
project filter it is a scan of a table of hundreds of rows.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING

from django.urls import reverse

from apps.dashboard.charts import Mark
from apps.insights.models import Finding
from apps.insights.visibility import compatible, visible_findings
from apps.metrics.scope import Scope

if TYPE_CHECKING:
    from apps.dashboard.params import ViewParams

# More marks than this on one chart is noise: the most severe, then the latest, are kept.
MAX_MARKS = 8
# Rows read at most (before the slice check, which runs on the JSON in Python).
MAX_ROWS = 200
_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def chart_marks(params: ViewParams, scope: Scope) -> list[Mark]:
    findings = visible_findings(scope).filter(
        started_at__gte=params.start, started_at__lt=params.end, last_seen_at__gte=params.start
    )
    if params.projects:
        findings = findings.filter(project_id__in=params.projects)
    rows = findings.only("pk", "title", "severity", "status", "slice", "tenant", "started_at").order_by("-started_at")[
        :MAX_ROWS
    ]
    matching = [finding for finding in rows if compatible(finding, params.filters)]
    matching.sort(key=lambda finding: _SEVERITY_RANK.get(finding.severity, 3))
    kept = sorted(matching[:MAX_MARKS], key=lambda finding: finding.started_at or params.start)
    return [_mark(finding) for finding in kept]


def _mark(finding: Finding) -> Mark:
    assert finding.started_at is not None
    status = "" if finding.status == Finding.Status.OPEN else f" ({finding.get_status_display().lower()})"
    return Mark(
        at=finding.started_at,
        label=finding.title,
        url=reverse("finding-detail", args=[finding.pk]),
        severity=finding.severity,
        hover=f"{finding.title}{status}: began {finding.started_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
    )
