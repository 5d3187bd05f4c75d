"""The week's findings (drift, regressions) and alert episodes, as one reader may see them.

Both are read from their own tables (apps.insights Finding, apps.alerts Notification and
Delivery), not from the metrics query layer: they are events, not figures. Like every figure
they depend on the reader's Scope and the week only, so readers of one scope share them.

Scope, strictly: a tenant-limited reader sees a finding or an alert only when its tenant is
one of theirs. A finding or alert with tenant '' ("not one tenant's": a provider's model
change seen across tenants, an alert on the whole slice) is never theirs, because its
evidence may mix other tenants' traffic; the overview panel (apps.alerts.panel) applies the
same rule.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Exists, OuterRef, Q
from django.urls import reverse

from apps.metrics.query import Scope
from apps.reports.weeks import ReviewWeek

SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
LEVEL_RANK = {"critical": 0, "warning": 1, "ok": 2}
# A regression (something got worse) before a drift (something changed) of the same severity.
KIND_RANK = {"regression": 0, "drift": 1}


@dataclass
class FindingLine:
    pk: int
    kind: str
    severity: str
    status: str  # open, resolved, accepted: as the week ended
    title: str
    slice_text: str
    started_at: datetime | None
    first_seen_at: datetime
    ended_at: datetime | None  # resolved or accepted, if that happened before the week ended
    new_this_week: bool
    link: str  # a dashboard path (compose makes it absolute)

    @property
    def rank(self) -> tuple[int, int, int, float]:
        still_open = 0 if self.ended_at is None else 1
        return (SEVERITY_RANK.get(self.severity, 3), KIND_RANK.get(self.kind, 2), still_open,
                -self.first_seen_at.timestamp())  # fmt: skip


@dataclass
class AlertLine:
    rule_name: str
    group_label: str
    tenant: str
    level: str  # the highest level the episode reached by the week's end
    title: str
    fired_at: datetime
    resolved_at: datetime | None  # None: still firing when the week ended
    notifications: int  # notifications of the episode created in the week
    silenced: int  # of those, held back by a silence
    deliveries_sent: int
    deliveries_failed: int
    link: str

    @property
    def rank(self) -> tuple[int, int, float]:
        return (LEVEL_RANK.get(self.level, 3), 0 if self.resolved_at is None else 1, -self.fired_at.timestamp())


@dataclass
class WeekEvents:
    findings: list[FindingLine] = field(default_factory=list)
    alerts: list[AlertLine] = field(default_factory=list)
    findings_link: str = ""


def week_events(scope: Scope, week: ReviewWeek) -> WeekEvents:
    return WeekEvents(week_findings(scope, week), week_alerts(scope, week), findings_list_link())


def _allowed(scope: Scope) -> list[str] | None:
    """The tenants a limited reader may see ('' never among them); None = no limit."""
    if not scope.limited:
        return None
    return list(scope.visible_tenants() or ())


def week_findings(scope: Scope, week: ReviewWeek) -> list[FindingLine]:
    """Findings open at some moment of the week: first seen before it ended, and not resolved
    or accepted before it began. Most severe first."""
    from apps.insights.models import Finding

    ended = Q(resolved_at__lt=week.start) | Q(accepted_at__lt=week.start)
    found = Finding.objects.filter(first_seen_at__lt=week.end).exclude(ended)
    allowed = _allowed(scope)
    if allowed is not None:
        found = found.filter(tenant__in=allowed)
    lines = []
    for finding in found.only(
        "id", "kind", "severity", "status", "title", "slice", "tenant", "started_at", "first_seen_at",
        "resolved_at", "accepted_at",
    ):  # fmt: skip
        ends = [moment for moment in (finding.resolved_at, finding.accepted_at) if moment is not None]
        ended_at = min(ends) if ends and min(ends) < week.end else None
        status = finding.status if ended_at is not None else Finding.Status.OPEN
        lines.append(
            FindingLine(
                pk=finding.pk,
                kind=finding.kind,
                severity=finding.severity,
                status=status,
                title=finding.title,
                slice_text=_slice_text(finding.as_filters()),
                started_at=finding.started_at,
                first_seen_at=finding.first_seen_at,
                ended_at=ended_at,
                new_this_week=finding.first_seen_at >= week.start,
                link=finding_link(finding.pk),
            )
        )
    lines.sort(key=lambda line: line.rank)
    return lines


def _slice_text(filters: dict[str, Any]) -> str:
    return ", ".join(f"{dim} {value}" for dim, value in sorted(filters.items())) or "all traffic"


def finding_link(pk: int) -> str:
    return reverse("finding-detail", args=[pk])


def findings_list_link() -> str:
    return reverse("findings")


def week_alerts(scope: Scope, week: ReviewWeek) -> list[AlertLine]:
    """Alert episodes that were firing at some moment of the week: fired before it ended and
    not resolved before it began. Critical first, then those still firing, then the newest."""
    from apps.alerts.models import AlertRule, Delivery, Notification

    resolved_before = Notification.objects.filter(
        state=OuterRef("state"), episode=OuterRef("episode"), event=Notification.Event.RESOLVED,
        created_at__lt=week.start,
    )  # fmt: skip
    fired = (
        Notification.objects.filter(event=Notification.Event.FIRED, created_at__lt=week.end)
        .exclude(Exists(resolved_before))
        .select_related("rule", "state")
    )
    allowed = _allowed(scope)
    if allowed is not None:
        fired = fired.filter(tenant__in=allowed)
    visible: dict[int, bool] = {}
    episodes = []
    for notification in fired:
        rule: AlertRule = notification.rule
        if rule.pk not in visible:
            visible[rule.pk] = rule.visible_to(scope)
        if visible[rule.pk]:
            episodes.append(notification)
    if not episodes:
        return []
    # Everything each episode did up to the week's end: escalations, repeats, its resolution.
    keys = {(n.state_id, n.episode) for n in episodes}
    later = Notification.objects.filter(state__in={state for state, _ in keys}, created_at__lt=week.end).only(
        "id", "state_id", "episode", "event", "level", "silenced", "created_at"
    )
    of_episode: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for notification in later:
        if (notification.state_id, notification.episode) in keys:
            of_episode[(notification.state_id, notification.episode)].append(notification)
    in_week = [n.pk for group in of_episode.values() for n in group if n.created_at >= week.start]
    deliveries: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for notification_id, result in Delivery.objects.filter(notification_id__in=in_week, is_test=False).values_list(
        "notification_id", "result"
    ):
        deliveries[notification_id][result] += 1
    lines = []
    for first in episodes:
        group = of_episode[(first.state_id, first.episode)]
        this_week = [n for n in group if n.created_at >= week.start]
        resolved = [n.created_at for n in group if n.event == Notification.Event.RESOLVED]
        levels = [n.level for n in group]
        lines.append(
            AlertLine(
                rule_name=first.rule.name,
                group_label=first.state.group_label,
                tenant=first.tenant,
                level=min(levels, key=lambda level: LEVEL_RANK.get(level, 3)),
                title=first.title,
                fired_at=first.created_at,
                resolved_at=min(resolved) if resolved else None,
                notifications=len(this_week),
                silenced=sum(1 for n in this_week if n.silenced),
                deliveries_sent=sum(deliveries[n.pk][Delivery.Result.SENT] for n in this_week),
                deliveries_failed=sum(deliveries[n.pk][Delivery.Result.FAILED] for n in this_week),
                link=reverse("alert-rule", args=[first.rule_id]),
            )
        )
    lines.sort(key=lambda line: line.rank)
    return lines
