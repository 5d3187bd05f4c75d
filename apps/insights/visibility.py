"""Who sees which findings, and which findings concern a dashboard view.

The rule (docs/findings.md): a tenant-limited person sees only findings whose `tenant` is one
of their tenants. A finding with tenant '' is about traffic that is not one tenant's (a
provider's model change seen across every tenant, a feature's p99 over all its tenants): its
evidence mixes tenants' traffic, so only people who see every tenant see it, on the findings
pages, in the overview panel and as marks on charts alike. The strict rule costs a limited
user the cross-tenant findings; the lenient one would leak other tenants' figures through
the evidence (counts, distributions, the hourly series).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db.models import Q, QuerySet

from apps.insights.models import Finding
from apps.metrics.scope import Scope

# The slice dimensions a finding may name that are also dashboard filters.
SLICE_DIMENSIONS = ("tenant", "feature", "provider", "model", "service")


def visible_findings(scope: Scope) -> QuerySet[Finding]:
    findings = Finding.objects.all()
    if scope.limited:
        # visible_tenants() never grants '' (the unattributed tenant, here: not one tenant's).
        findings = findings.filter(tenant__in=list(scope.visible_tenants() or ()))
    return findings


def slice_of(finding: Finding) -> dict[str, str]:
    """The finding's slice with its tenant, only the dimensions that name a value."""
    found = {dim: str(value) for dim, value in (finding.slice or {}).items() if value not in (None, "")}
    if finding.tenant:
        found["tenant"] = finding.tenant
    return found


def compatible_q(filters: Mapping[str, Sequence[str]]) -> Q:
    """Findings whose slice no filter of a view contradicts: for every dimension both name,
    the finding's value is one the view filters on. A finding about gpt-4o matches the
    overview (no filters), gpt-4o's model page and support-chat's feature page (it may be the
    feature's model); a finding about support-chat does not match another feature's page. A
    dimension the finding does not name (or names as '') is all traffic: no contradiction."""
    q = Q()
    for dim in SLICE_DIMENSIONS:
        wanted = list(filters.get(dim) or ())
        if not wanted:
            continue
        if dim == "tenant":
            q &= Q(tenant__in=wanted) | Q(tenant="")
        else:
            q &= Q(**{f"slice__{dim}__in": wanted}) | ~Q(slice__has_key=dim) | Q(**{f"slice__{dim}": ""})
    return q


def slice_q(dim: str, value: str) -> Q:
    """Findings whose slice names `dim` = `value` (the tenant has a column of its own)."""
    if dim == "tenant":
        return Q(tenant=value)
    return Q(**{f"slice__{dim}": value})


def describe_slice(finding: Finding) -> list[dict[str, Any]]:
    """The slice for people, in the dashboard's dimension order; '' = all traffic."""
    found = slice_of(finding)
    order = [dim for dim in SLICE_DIMENSIONS if dim in found] + sorted(set(found) - set(SLICE_DIMENSIONS))
    return [{"dimension": dim, "value": found[dim]} for dim in order]
