"""Findings pages: the list (filters, open first) and one finding's detail (its statistics,
baseline vs current, the evidence charts) with the actions acknowledge and accept as the new
normal. Thin: who sees what is visibility.py, the evidence is read by evidence.py.

Who sees what: visibility.visible_findings (a tenant-limited person: only findings of their
own tenants). Another tenant's finding is "not found" (404, like the alert pages), never
"forbidden", so its id cannot be probed for. Acting needs `insights.change_finding` (staff
have it).
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import Case, IntegerField, Q, Value, When
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from apps.accounts.access import scope_for
from apps.dashboard.params import BadParameter, check_text
from apps.insights import evidence as evidence_reader
from apps.insights.models import Finding
from apps.insights.visibility import describe_slice, slice_q, visible_findings

log = logging.getLogger(__name__)

LIST_ROWS = 200
# (parameter, the choices it must be one of, or None for free text)
CHOICE_FILTERS = {"kind": Finding.Kind, "status": Finding.Status, "severity": Finding.Severity}
TEXT_FILTERS = ("metric", "tenant", "feature", "provider", "model", "service")
MAX_TEXT = 256
ACTIONS = ("acknowledge", "accept")


def can_act(user: Any) -> bool:
    return bool(user.is_staff or user.has_perm("insights.change_finding"))


def _filters(request: HttpRequest) -> dict[str, str]:
    """The list's filters from the URL; BadParameter names what is wrong."""
    chosen: dict[str, str] = {}
    for name, choices in CHOICE_FILTERS.items():
        value = request.GET.get(name, "")
        if value and value not in choices.values:
            raise BadParameter(f"{name}={value!r} is not one of {', '.join(choices.values)}")
        if value:
            chosen[name] = value
    for name in TEXT_FILTERS:
        value = request.GET.get(name, "").strip()
        check_text(name, value)
        if len(value) > MAX_TEXT:
            raise BadParameter(f"{name} is longer than {MAX_TEXT} characters")
        if value:
            chosen[name] = value
    return chosen


@login_required
@require_GET
def finding_list(request: HttpRequest) -> HttpResponse:
    scope = scope_for(request.user)
    visible = visible_findings(scope)
    context: dict[str, Any] = {
        "kinds": Finding.Kind.choices,
        "statuses": Finding.Status.choices,
        "severities": Finding.Severity.choices,
        "metrics": list(visible.order_by("metric").values_list("metric", flat=True).distinct()[:200]),
    }
    try:
        chosen = _filters(request)
    except BadParameter as exc:
        log.info("400 on %r: %s", request.path, exc.message)
        context.update(chosen={}, text_filters=_text_fields({}), error=exc.message)
        return render(request, "insights/list.html", context, status=400)
    findings = visible
    for name in ("kind", "status", "severity", "metric"):
        if name in chosen:
            findings = findings.filter(**{name: chosen[name]})
    for dim in ("tenant", "feature", "provider", "model", "service"):
        if dim in chosen:
            findings = findings.filter(slice_q(dim, chosen[dim]))
    # Open first (what needs a look), then the most recently seen.
    is_open = Case(When(status=Finding.Status.OPEN, then=Value(0)), default=Value(1), output_field=IntegerField())
    rows = list(findings.annotate(closed=is_open).order_by("closed", "-last_seen_at", "-pk")[: LIST_ROWS + 1])
    for finding in rows:
        finding.slice_parts = describe_slice(finding)  # type: ignore[attr-defined]
    context.update(
        findings=rows[:LIST_ROWS],
        more=len(rows) > LIST_ROWS,
        chosen=chosen,
        text_filters=_text_fields(chosen),
        any_visible=bool(rows) or visible.exists(),
        open_count=findings.filter(status=Finding.Status.OPEN).count(),
    )
    return render(request, "insights/list.html", context)


def _text_fields(chosen: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": chosen.get(name, "")} for name in TEXT_FILTERS if name != "metric"]


def _not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "insights/not_found.html", status=404)


@login_required
@require_http_methods(["GET", "POST"])
def finding_detail(request: HttpRequest, pk: int) -> HttpResponse:
    scope = scope_for(request.user)
    finding = visible_findings(scope).select_related("acknowledged_by").filter(pk=pk).first()
    if finding is None:
        return _not_found(request)
    if request.method == "POST":
        return _act(request, finding)
    return _detail(request, finding)


def _detail(request: HttpRequest, finding: Finding, *, error: str = "", status: int = 200) -> HttpResponse:
    evidence = evidence_reader.read(finding)
    context = {
        "finding": finding,
        "slice_parts": describe_slice(finding),
        "evidence": evidence,
        "figures": evidence.figures(),
        "charts": evidence_reader.evidence_charts(finding, evidence),
        "can_act": can_act(request.user),
        "error": error,
    }
    return render(request, "insights/detail.html", context, status=status)


def _act(request: HttpRequest, finding: Finding) -> HttpResponse:
    if not can_act(request.user):
        return HttpResponseForbidden("You need the permission to change findings.")
    action = request.POST.get("action", "")
    if action not in ACTIONS:
        log.info("400 on %r: action %r is not one of %s", request.path, action[:40], ", ".join(ACTIONS))
        return _detail(request, finding, error=f"Unknown action: choose one of {', '.join(ACTIONS)}.", status=400)
    now = timezone.now()
    # Conditional UPDATEs: a detector run may resolve the finding at the same moment, and a
    # second click (or a second person) must not move acknowledged_at or accepted_at.
    unacknowledged = Q(pk=finding.pk, acknowledged_at__isnull=True)
    if action == "acknowledge":
        Finding.objects.filter(unacknowledged).update(acknowledged_at=now, acknowledged_by=request.user)
        return redirect("finding-detail", finding.pk)
    accepted = Finding.objects.filter(pk=finding.pk, status=Finding.Status.OPEN).update(
        status=Finding.Status.ACCEPTED, accepted_at=now
    )
    if not accepted:
        finding.refresh_from_db()
        if finding.status == Finding.Status.ACCEPTED:
            return redirect("finding-detail", finding.pk)  # accepted already: nothing to do
        message = f"This finding is {finding.get_status_display().lower()}: only an open finding can be accepted."
        log.info("409 on %r: %s", request.path, message)
        return _detail(request, finding, error=message, status=409)
    # Accepting is also a look at it.
    Finding.objects.filter(unacknowledged).update(acknowledged_at=now, acknowledged_by=request.user)
    log.info("finding %s accepted as the new normal by %s", finding.pk, request.user)
    return redirect("finding-detail", finding.pk)
