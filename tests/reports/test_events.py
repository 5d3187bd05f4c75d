"""The week's findings and alert episodes: which ones, in what order, for whom, linked where."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import resolve

from apps.accounts.access import scope_for
from apps.accounts.models import Project
from apps.alerts.models import AlertRule
from apps.reports.events import finding_link, week_alerts, week_findings
from apps.reports.figures import week_figures
from apps.reports.narrative import what_changed
from tests.reports.conftest import WEEK, WeekEventRows, _finding

pytestmark = pytest.mark.django_db


def test_findings_open_during_the_week_most_severe_first(owner: Any, week_events: WeekEventRows) -> None:
    lines = week_findings(scope_for(owner), WEEK)
    assert [line.title for line in lines] == [
        week_events.acme_regression.title,  # critical
        week_events.shared_drift.title,  # warning, still open
        week_events.globex_drift.title,  # warning, resolved on Wednesday
    ]
    regression, shared, resolved = lines
    assert regression.new_this_week and regression.ended_at is None and regression.status == "open"
    assert not resolved.new_this_week and resolved.status == "resolved"
    assert resolved.ended_at == week_events.globex_drift.resolved_at
    assert regression.slice_text == "feature support-chat, model claude-sonnet-4-5, tenant acme"
    assert shared.slice_text == "model gpt-4o-mini"


def test_a_resolution_after_the_week_reads_as_still_open_that_week(owner: Any, project: Project) -> None:
    late = _finding(project, "Resolved the next week", tenant="acme", severity="info", first_seen=WEEK.start,
                    status="resolved", ended=WEEK.end + timedelta(days=1))  # fmt: skip
    (line,) = week_findings(scope_for(owner), WEEK)
    assert line.title == late.title and line.ended_at is None and line.status == "open"


def test_a_tenant_limited_reader_sees_only_findings_and_alerts_of_their_tenants(
    outsider: Any, week_events: WeekEventRows
) -> None:
    scope = scope_for(outsider)
    # Not acme's, and not the finding of no one tenant ('' is never in a list of tenants).
    assert [line.title for line in week_findings(scope, WEEK)] == [week_events.globex_drift.title]
    (alert,) = week_alerts(scope, WEEK)
    assert alert.tenant == "globex" and alert.group_label == "tenant globex"


def test_alert_episodes_of_the_week(owner: Any, week_events: WeekEventRows) -> None:
    alerts = week_alerts(scope_for(owner), WEEK)
    # Critical first (acme's escalated episode, resolved; the whole-slice one, still firing:
    # still firing first), then globex's warning. Its episode over before the week is not here.
    assert [(line.rule_name, line.group_label, line.level) for line in alerts] == [
        ("Error rate everywhere", "whole slice", "critical"),
        ("p99 per tenant", "tenant acme", "critical"),
        ("p99 per tenant", "tenant globex", "warning"),
    ]
    whole, acme, globex = alerts
    assert whole.resolved_at is None and whole.notifications == 1 and whole.deliveries_sent == 1
    assert acme.resolved_at == WEEK.start + timedelta(days=1, hours=12)
    assert acme.notifications == 3 and acme.deliveries_sent == 1 and acme.deliveries_failed == 1
    # Fired the week before, still firing: in the week, with the one repeat sent in it.
    assert globex.fired_at < WEEK.start and globex.resolved_at is None and globex.notifications == 1
    assert acme.link == f"/alerts/rules/{AlertRule.objects.get(name='p99 per tenant').pk}/"


def test_a_finding_links_to_its_page(week_events: WeekEventRows) -> None:
    finding = week_events.acme_regression
    assert finding_link(finding.pk) == f"/findings/{finding.pk}/"
    assert resolve(finding_link(finding.pk)).url_name == "finding-detail"


def test_what_changed_names_the_most_severe_finding(
    owner: Any, outsider: Any, traffic: None, week_events: WeekEventRows, at_now: Any
) -> None:
    said = what_changed(week_figures(scope_for(owner), WEEK))
    assert said[1] == (
        "The most severe regression of the week (critical, first seen Tue): p99 latency of support-chat on "
        "claude-sonnet-4-5 rose 80% (acme) (2 other findings below)."
    )
    said = what_changed(week_figures(scope_for(outsider), WEEK))
    assert said[1] == (
        "The most severe drift finding of the week (warning, open since Fri 13 Nov, resolved Wed): "
        "Output length of search on gpt-4o-mini shifted (globex)."
    )


def test_a_week_without_findings_says_nothing_of_them(owner: Any, traffic: None, at_now: Any) -> None:
    said = what_changed(week_figures(scope_for(owner), WEEK))
    assert not any("finding" in sentence or "regression" in sentence for sentence in said)
