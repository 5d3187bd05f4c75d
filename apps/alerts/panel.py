"""The overview's "Open alerts and recent findings" panel.

Scoped like every figure: a tenant-limited person sees the open alerts of rules visible to
them and about their own tenants, and the findings of their tenants. A finding with tenant
'' (not one tenant's: a provider's model change seen across tenants) is shown only to people
who see every tenant, because its evidence may mix tenants' traffic.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone

from apps.accounts.access import scope_for
from apps.alerts.models import LEVEL_RANK, AlertRule, AlertState

RECENT_FINDINGS = timedelta(days=7)
PANEL_ROWS = 6


def overview_panel(user: Any) -> dict[str, Any]:
    from apps.insights.visibility import visible_findings

    scope = scope_for(user)
    rules = [rule for rule in AlertRule.objects.all() if rule.visible_to(scope)]
    states = AlertState.objects.filter(rule__in=[rule.pk for rule in rules]).exclude(level="ok")
    # The findings pages' rule (apps/insights/visibility.py), so the panel never shows a finding its page would hide.
    findings = visible_findings(scope).filter(last_seen_at__gte=timezone.now() - RECENT_FINDINGS)
    if scope.limited:
        states = states.filter(tenant__in=list(scope.visible_tenants() or ()))
    # Open findings first, then the newest; critical alerts first, then the newest.
    found = sorted(findings.order_by("-last_seen_at")[:50], key=lambda finding: finding.status != "open")[:PANEL_ROWS]
    for finding in found:
        # The finding's own page, and the dashboard filtered to its slice (tenant, feature, model, ...).
        finding.link = reverse("finding-detail", args=[finding.pk])  # type: ignore[attr-defined]
        query = urlencode(sorted(finding.as_filters().items()))
        finding.slice_link = f"{reverse('overview')}?{query}"  # type: ignore[attr-defined]
    open_alerts = sorted(
        states.select_related("rule").order_by("-opened_at")[:50], key=lambda state: -LEVEL_RANK[state.level]
    )[:PANEL_ROWS]
    return {
        "open_alerts": open_alerts,
        "findings": found,
        "rules": bool(rules),
        "can_edit": bool(user.is_staff or user.has_perm("alerts.change_alertrule")),
    }
