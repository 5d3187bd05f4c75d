"""The findings pages: list (open first, filters), detail (statistics, baseline vs current,
evidence charts), the actions acknowledge / accept as new normal, permissions, tenant
isolation, bad parameters (4xx, never 500), the overview panel's links and the admin."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from apps.accounts.models import Project
from apps.insights.episodes import baseline_floor
from apps.insights.models import Finding
from tests.insights.findings_data import evidence, make_finding
from tests.otlp_helpers import make_traces, protobuf_body

pytestmark = pytest.mark.django_db


def _titles(html: str) -> list[str]:
    """Finding titles in the list's order."""
    return re.findall(r'<a href="/findings/\d+/">([^<]+)</a>', html)


@pytest.fixture
def findings(project: Project) -> dict[str, Finding]:
    now = timezone.now()
    return {
        "old_resolved": make_finding(project, "support-chat p99 was slow", status="resolved",
                                     last_seen_at=now - timedelta(minutes=1)),
        "drift": make_finding(project, "gpt-4o answers got longer", kind="drift", metric="output_tokens",
                              slice_={"provider": "openai", "model": "gpt-4o"}, severity="critical",
                              last_seen_at=now - timedelta(minutes=30)),
        "globex": make_finding(project, "globex cost per task rose", metric="cost_per_successful_task",
                               slice_={"tenant": "globex", "feature": "globex-chat"},
                               last_seen_at=now - timedelta(minutes=10)),
        "acme": make_finding(project, "acme p99 regression", slice_={"tenant": "acme", "feature": "support-chat"},
                             severity="info", last_seen_at=now - timedelta(minutes=20)),
    }  # fmt: skip


def test_pages_need_login(client: Client, findings: dict[str, Finding]) -> None:
    for path in ("/findings/", f"/findings/{findings['acme'].pk}/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    response = client.post(f"/findings/{findings['acme'].pk}/", {"action": "accept"})
    assert response.status_code == 302
    assert Finding.objects.get(pk=findings["acme"].pk).status == "open"


def test_list_shows_open_first_then_most_recently_seen(
    client: Client, owner: Any, findings: dict[str, Finding]
) -> None:
    client.force_login(owner)
    html = client.get("/findings/").content.decode()
    # The resolved one was seen last, but open ones come first, each group newest first.
    assert _titles(html) == [
        "globex cost per task rose",
        "acme p99 regression",
        "gpt-4o answers got longer",
        "support-chat p99 was slow",
    ]
    assert "(3 open)" in html
    assert "model: gpt-4o" in html and "tenant: globex" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("kind=drift", ["gpt-4o answers got longer"]),
        ("status=resolved", ["support-chat p99 was slow"]),
        ("severity=critical", ["gpt-4o answers got longer"]),
        ("metric=cost_per_successful_task", ["globex cost per task rose"]),
        ("tenant=acme", ["acme p99 regression"]),
        ("feature=support-chat", ["acme p99 regression", "support-chat p99 was slow"]),
        ("model=gpt-4o", ["gpt-4o answers got longer"]),
        ("provider=openai&kind=regression", []),
        ("feature=support-chat&status=open", ["acme p99 regression"]),
    ],
)
def test_list_filters(
    client: Client, owner: Any, findings: dict[str, Finding], query: str, expected: list[str]
) -> None:
    client.force_login(owner)
    response = client.get(f"/findings/?{query}")
    assert response.status_code == 200
    html = response.content.decode()
    assert _titles(html) == expected
    if not expected:
        assert "No finding matches these filters" in html


def test_empty_list_says_how_findings_come(client: Client, owner: Any) -> None:
    client.force_login(owner)
    html = client.get("/findings/").content.decode()
    assert "No finding yet" in html and "about a week of history" in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("kind=outage", "kind='outage' is not one of drift, regression"),
        ("status=closed", "status='closed' is not one of open, resolved, accepted"),
        ("severity=high", "severity='high' is not one of info, warning, critical"),
        ("feature=a%00b", "NUL"),
        ("model=" + "m" * 300, "longer than 256"),
    ],
)
def test_bad_list_parameters_are_a_400_that_says_why(
    client: Client, owner: Any, findings: dict[str, Finding], query: str, message: str
) -> None:
    client.force_login(owner)
    response = client.get(f"/findings/?{query}")
    assert response.status_code == 400
    assert message in unescape(response.content.decode())


def test_bad_ids_and_actions_are_4xx(client: Client, owner: Any, findings: dict[str, Finding]) -> None:
    client.force_login(owner)
    assert client.get("/findings/abc/").status_code == 404
    assert client.get("/findings/0/").status_code == 404
    assert client.get("/findings/99999999999999999999999/").status_code == 404  # past bigint: not a DataError
    pk = findings["drift"].pk
    response = client.post(f"/findings/{pk}/", {"action": "delete"})
    assert response.status_code == 400 and "Unknown action" in response.content.decode()
    assert client.post(f"/findings/{pk}/", {"action": "x\x00"}).status_code == 400
    assert client.put(f"/findings/{pk}/").status_code == 405
    assert client.post("/findings/", {"action": "accept"}).status_code == 405


def test_a_tenant_limited_user_sees_only_their_tenants_findings(
    client: Client, outsider: Any, teammate: Any, findings: dict[str, Finding]
) -> None:
    outsider.user_permissions.add(Permission.objects.get(codename="change_finding"))
    outsider = get_user_model().objects.get(pk=outsider.pk)
    client.force_login(outsider)  # sees globex only
    html = client.get("/findings/").content.decode()
    assert _titles(html) == ["globex cost per task rose"]
    # Not acme's, and not the cross-tenant ones (their evidence mixes every tenant's traffic).
    assert "acme" not in html and "gpt-4o answers" not in html and "support-chat p99 was slow" not in html
    assert _titles(client.get("/findings/?tenant=acme").content.decode()) == []
    assert "acme" not in client.get("/findings/").content.decode()  # not even the metric list names acme's
    for name in ("acme", "drift", "old_resolved"):
        pk = findings[name].pk
        assert client.get(f"/findings/{pk}/").status_code == 404
        # Acting on it is "not found" as well (not "forbidden": the id is not confirmed).
        assert client.post(f"/findings/{pk}/", {"action": "accept"}).status_code == 404
        assert Finding.objects.get(pk=pk).status == findings[name].status
    assert client.get(f"/findings/{findings['globex'].pk}/").status_code == 200
    assert client.post(f"/findings/{findings['globex'].pk}/", {"action": "accept"}).status_code == 302
    # A teammate who sees every tenant sees all four.
    client.force_login(teammate)
    assert len(_titles(client.get("/findings/").content.decode())) == 4


def test_detail_shows_statistics_baseline_vs_current_and_charts(
    client: Client, owner: Any, findings: dict[str, Finding]
) -> None:
    client.force_login(owner)
    finding = findings["acme"]
    html = client.get(f"/findings/{finding.pk}/").content.decode()
    assert "acme p99 regression" in html
    assert "binomial test of the quantile" in html
    assert "2.5e-09" in html and "7.5e-08" in html  # p and q
    assert "41.5" in html and "ratio current / baseline" in html and "2.4" in html and "floor 1.2" in html
    assert "10500" in html and "1480" in html  # samples per window
    assert "1.21e+03 ms" in html or "1,210 ms" in html
    assert "2,904 ms" in html and "+140.0%" in html
    assert "tenant: acme" in html and "feature: support-chat" in html
    assert 'href="/features/support-chat/?range=7d"' in html  # evidence.link
    assert "change point by cusum" in html
    charts = re.findall(r'<section class="panel chart" data-chart="([^"]+)"', html)
    assert charts == [
        "p99-latency-baseline-vs-current-distribution",
        "p99-latency-baseline-vs-current-mix",
        "p99-latency-hourly",
    ]
    assert html.count("Plotly.newPlot") == 3
    assert "content_filter" in html  # a category only the current mix has
    assert "change point" in html and '"dash":"dot"' in html.replace(" ", "")  # the series' mark


def test_detail_survives_odd_evidence(client: Client, owner: Any, project: Project) -> None:
    client.force_login(owner)
    odd: list[dict[str, Any]] = [
        {},
        {"test": "ks", "effect": [1], "baseline": "x", "current": {"n": "many", "histogram": [[1], "a", [None, 2]]},
         "series": [["not a time", 1], [None, None], ["2026-12-01T10:00:00", "x"]], "unit": 5, "label": None},
        {"unit": "share", "baseline": {"value": 0.93, "mix": {"stop": "most"}}, "current": {"value": "NaN", "n": -3.5},
         "series": "hourly", "change_point": "yesterday", "link": "javascript:alert(1)"},
        {"link": "//evil.example/steal", "current": {"histogram": [[0, 0.5], [10, 0.5]]}, "unit": "ms"},
        {"link": "/\t/evil.example/steal"},
        {"link": "/\\evil.example/steal"},
    ]  # fmt: skip
    for index, raw in enumerate(odd):
        finding = make_finding(project, f"odd {index}", metric=f"m{index}", evidence_json=raw)
        response = client.get(f"/findings/{finding.pk}/")
        assert response.status_code == 200, raw
        html = response.content.decode()
        assert "javascript:" not in html and "evil.example" not in html
        assert 'id="slice-link"' in html and 'href="/?feature=support-chat"' in html


def test_accept_as_new_normal_sets_the_baseline_floor(client: Client, owner: Any, findings: dict[str, Finding]) -> None:
    client.force_login(owner)
    finding = findings["drift"]
    html = client.get(f"/findings/{finding.pk}/").content.decode()
    assert 'value="accept"' in html and 'value="acknowledge"' in html
    before = timezone.now()
    response = client.post(f"/findings/{finding.pk}/", {"action": "accept"})
    assert response.status_code == 302 and response["Location"] == f"/findings/{finding.pk}/"
    finding.refresh_from_db()
    assert finding.status == "accepted" and finding.accepted_at is not None and finding.accepted_at >= before
    assert finding.acknowledged_at is not None and finding.acknowledged_by == owner
    # The detectors' baselines start at the acceptance.
    assert baseline_floor(finding.project_id, [finding.signature]) == {finding.signature: finding.accepted_at}
    # A second accept changes nothing.
    accepted_at = finding.accepted_at
    assert client.post(f"/findings/{finding.pk}/", {"action": "accept"}).status_code == 302
    finding.refresh_from_db()
    assert finding.accepted_at == accepted_at
    html = client.get(f"/findings/{finding.pk}/").content.decode()
    assert "Accepted as new normal since" in html and 'value="accept"' not in html


def test_a_resolved_finding_cannot_be_accepted(client: Client, owner: Any, findings: dict[str, Finding]) -> None:
    client.force_login(owner)
    finding = findings["old_resolved"]
    response = client.post(f"/findings/{finding.pk}/", {"action": "accept"})
    assert response.status_code == 409
    assert "only an open finding can be accepted" in response.content.decode()
    finding.refresh_from_db()
    assert finding.status == "resolved" and finding.accepted_at is None


def test_acknowledge_records_who_and_when_once(client: Client, owner: Any, findings: dict[str, Finding]) -> None:
    admin = get_user_model().objects.create_user("second", is_staff=True)
    finding = findings["acme"]
    client.force_login(owner)
    assert client.post(f"/findings/{finding.pk}/", {"action": "acknowledge"}).status_code == 302
    finding.refresh_from_db()
    first = finding.acknowledged_at
    assert first is not None and finding.acknowledged_by == owner and finding.status == "open"
    client.force_login(admin)
    client.post(f"/findings/{finding.pk}/", {"action": "acknowledge"})
    finding.refresh_from_db()
    assert finding.acknowledged_at == first and finding.acknowledged_by == owner
    assert "by owner" in client.get(f"/findings/{finding.pk}/").content.decode()


def test_acting_needs_the_permission(client: Client, teammate: Any, findings: dict[str, Finding]) -> None:
    client.force_login(teammate)  # sees every tenant, may not change findings
    finding = findings["acme"]
    html = client.get(f"/findings/{finding.pk}/").content.decode()
    assert 'value="accept"' not in html
    for action in ("accept", "acknowledge"):
        assert client.post(f"/findings/{finding.pk}/", {"action": action}).status_code == 403
    finding.refresh_from_db()
    assert finding.status == "open" and finding.acknowledged_at is None
    teammate.user_permissions.add(Permission.objects.get(codename="change_finding"))
    client.force_login(get_user_model().objects.get(pk=teammate.pk))
    assert client.post(f"/findings/{finding.pk}/", {"action": "accept"}).status_code == 302
    assert Finding.objects.get(pk=finding.pk).status == "accepted"


def test_actions_need_the_csrf_token(owner: Any, findings: dict[str, Finding]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    finding = findings["acme"]
    assert client.post(f"/findings/{finding.pk}/", {"action": "accept"}).status_code == 403
    assert Finding.objects.get(pk=finding.pk).status == "open"
    page = client.get(f"/findings/{finding.pk}/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token is not None
    response = client.post(f"/findings/{finding.pk}/", {"action": "accept", "csrfmiddlewaretoken": token.group(1)})
    assert response.status_code == 302
    assert Finding.objects.get(pk=finding.pk).status == "accepted"


def test_overview_panel_links_each_finding_to_its_page(
    client: Client, owner: Any, ingest_key: str, findings: dict[str, Finding]
) -> None:
    body = protobuf_body(make_traces(2, tenant="acme"))
    client.post("/v1/traces", data=body, content_type="application/x-protobuf",
                headers={"Authorization": f"Bearer {ingest_key}"})  # fmt: skip
    client.force_login(owner)
    html = client.get("/?range=24h").content.decode()
    panel = html[html.index('id="alerts-panel"') :]
    panel = panel[: panel.index("</section>")]
    assert f'<a href="/findings/{findings["acme"].pk}/">acme p99 regression</a>' in panel
    assert 'href="/?feature=support-chat&amp;tenant=acme">its slice</a>' in panel
    assert 'href="/findings/">all findings</a>' in panel
    assert '<a href="/findings/"' in html[: html.index("<main>")]  # the navigation


def test_admin_lists_findings_with_read_only_evidence(client: Client, findings: dict[str, Finding]) -> None:
    boss = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(boss)
    assert "acme p99 regression" in client.get("/admin/insights/finding/").content.decode()
    html = client.get(f"/admin/insights/finding/{findings['acme'].pk}/change/").content.decode()
    assert "binomial-quantile" in html and 'name="evidence"' not in html


def test_evidence_helper_follows_the_contract() -> None:
    raw = evidence(timezone.now())
    assert set(raw) >= {"unit", "label", "test", "effect", "baseline", "current", "change_point", "series", "link"}
