"""Change-point marks on the dashboard's time-series charts: a finding's mark (a dotted line
at its started_at, a label linking to it) appears on the charts of every page whose filters
its slice is compatible with, not on another slice's page, not outside the range, and only
for viewers who may see the finding. One query per page."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.models import Project
from apps.dashboard import charts
from apps.dashboard.params import parse_params
from apps.insights.marks import MAX_MARKS, chart_marks
from apps.insights.models import Finding
from apps.metrics.scope import Scope
from tests.insights.findings_data import make_finding
from tests.otlp_helpers import make_traces, protobuf_body

pytestmark = pytest.mark.django_db


def _ingest(client: Client, key: str, **kwargs: Any) -> None:
    body = protobuf_body(make_traces(**kwargs))
    headers = {"Authorization": f"Bearer {key}"}
    response = client.post("/v1/traces", data=body, content_type="application/x-protobuf", headers=headers)
    assert response.status_code == 200


@pytest.fixture
def traffic(client: Client, ingest_key: str) -> None:
    _ingest(client, ingest_key, count=3, tenant="acme", feature="support-chat")
    _ingest(client, ingest_key, count=2, tenant="globex", feature="batch-summarize")


@pytest.fixture
def slice_findings(project: Project) -> dict[str, Finding]:
    now = timezone.now()
    return {
        "support": make_finding(project, "support-chat p99 doubled", slice_={"feature": "support-chat"},
                                began=now - timedelta(hours=5)),
        "batch": make_finding(project, "batch-summarize errors rose", metric="error_rate",
                              slice_={"feature": "batch-summarize", "tenant": "globex"}, severity="critical",
                              began=now - timedelta(hours=4)),
        "gpt4o": make_finding(project, "gpt-4o answers got longer", kind="drift", metric="output_tokens",
                              slice_={"provider": "openai", "model": "gpt-4o"}, began=now - timedelta(hours=2)),
        "long_ago": make_finding(project, "support-chat ttft drifted", metric="ttft_p95",
                                 slice_={"feature": "support-chat"}, began=now - timedelta(days=10),
                                 last_seen_at=now - timedelta(days=9)),
    }  # fmt: skip


def _chart_sections(html: str) -> dict[str, str]:
    """Each chart panel's HTML by its data-chart name (the overview's findings panel links to
    findings too: only the charts count here)."""
    found = {}
    for match in re.finditer(r'<section class="panel chart" data-chart="([^"]+)">(.*?)</section>', html, re.S):
        found[match.group(1)] = match.group(2)
    return found


def _layout(section: str) -> dict[str, Any]:
    """The Plotly layout a chart panel draws: the third argument of its Plotly.newPlot call."""
    decoder = json.JSONDecoder()
    at = section.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    values = []
    for _ in range(3):
        while section[at] in " \n,":
            at += 1
        value, at = decoder.raw_decode(section, at)
        values.append(value)
    return values[2]


def _marked(section: str) -> set[int]:
    """Finding ids whose mark labels link from one chart."""
    if "Plotly.newPlot(" not in section:
        return set()
    texts = [annotation.get("text", "") for annotation in _layout(section).get("annotations", [])]
    return {int(pk) for text in texts for pk in re.findall(r'<a href="/findings/(\d+)/" target="_self">', text)}


TIME_SERIES = ("cost-by-hour-stacked-by-feature", "requests-errors-and-retries", "latency-percentiles")


def test_marks_appear_on_the_matching_slices_charts_and_not_on_anothers(
    client: Client, owner: Any, traffic: None, slice_findings: dict[str, Finding]
) -> None:
    client.force_login(owner)
    ids = {name: finding.pk for name, finding in slice_findings.items()}
    in_range = {ids["support"], ids["batch"], ids["gpt4o"]}

    overview = _chart_sections(client.get("/?range=24h").content.decode())
    for name in TIME_SERIES:
        assert _marked(overview[name]) == in_range, name  # no filter contradicts any of them
    # The traffic reports no time to first token: an empty chart draws no figure, so no mark either.
    assert "No data in this range" in overview["time-to-first-token-percentiles"]

    support = _chart_sections(client.get("/features/support-chat/?range=24h").content.decode())
    for name in ("cost-by-hour-stacked-by-model", "requests-errors-and-retries", "latency-percentiles",
                 "token-mix", "retry-rate"):  # fmt: skip
        # Its own finding and the model's (it may be support-chat's model); never batch-summarize's.
        assert _marked(support[name]) == {ids["support"], ids["gpt4o"]}, name
    assert _marked(support["latency-distribution"]) == set()  # not a time series

    batch = _chart_sections(client.get("/features/batch-summarize/?range=24h").content.decode())
    assert _marked(batch["latency-percentiles"]) == {ids["batch"], ids["gpt4o"]}

    # The traffic's model is gpt-4o-mini: gpt-4o's drift is another slice.
    mini = _chart_sections(client.get("/models/openai/gpt-4o-mini/?range=24h").content.decode())
    assert _marked(mini["latency-percentiles"]) == {ids["support"], ids["batch"]}

    acme = _chart_sections(client.get("/tenants/acme/?range=24h").content.decode())
    assert _marked(acme["latency-percentiles"]) == {ids["support"], ids["gpt4o"]}  # batch's is globex's

    # Ten days back, the old finding's change is in range.
    month = _chart_sections(client.get("/features/support-chat/?range=30d").content.decode())
    assert ids["long_ago"] in _marked(month["latency-percentiles"])


def test_the_mark_is_a_line_at_started_at_with_a_label_linking_to_the_finding(
    client: Client, owner: Any, traffic: None, slice_findings: dict[str, Finding]
) -> None:
    client.force_login(owner)
    finding = slice_findings["support"]
    section = _chart_sections(client.get("/features/support-chat/?range=24h").content.decode())["latency-percentiles"]
    assert finding.started_at is not None
    at = finding.started_at.isoformat()
    layout = _layout(section)
    lines = [shape for shape in layout["shapes"] if shape["x0"] == at]
    assert len(lines) == 1
    assert lines[0]["type"] == "line" and lines[0]["x1"] == at and lines[0]["yref"] == "paper"
    assert (lines[0]["y0"], lines[0]["y1"]) == (0, 1) and lines[0]["line"]["dash"] == "dot"
    labels = [annotation for annotation in layout["annotations"] if annotation["x"] == at]
    assert [label["text"] for label in labels] == [
        f'<a href="/findings/{finding.pk}/" target="_self">support-chat p99 doubled</a>'
    ]


def test_a_limited_viewer_gets_marks_of_their_tenants_findings_only(
    client: Client, outsider: Any, traffic: None, slice_findings: dict[str, Finding]
) -> None:
    client.force_login(outsider)  # globex only
    sections = _chart_sections(client.get("/?range=24h").content.decode())
    assert _marked(sections["latency-percentiles"]) == {slice_findings["batch"].pk}
    assert "support-chat p99 doubled" not in sections["latency-percentiles"]


def test_marks_cost_one_query_and_keep_the_most_severe(project: Project, django_assert_num_queries: Any) -> None:
    now = timezone.now()
    for n in range(MAX_MARKS + 3):
        make_finding(project, f"info {n}", metric=f"m{n}", severity="info", began=now - timedelta(hours=1, minutes=n))
    critical = make_finding(project, "the critical one", metric="c", severity="critical",
                            began=now - timedelta(hours=20))  # fmt: skip
    params = parse_params(_query("range=24h"))
    with django_assert_num_queries(1):
        marks = chart_marks(params, Scope.everything())
    assert len(marks) == MAX_MARKS
    assert marks[0].label == "the critical one" and marks[0].url == f"/findings/{critical.pk}/"
    assert [mark.at for mark in marks] == sorted(mark.at for mark in marks)
    assert chart_marks(params, Scope.nothing()) == []


def _query(text: str) -> Any:
    from django.http import QueryDict

    return QueryDict(text)


@pytest.mark.parametrize(
    ("slice_", "filters", "expected"),
    [
        ({"feature": "a"}, "", True),
        ({"feature": "a"}, "feature=a&feature=b", True),
        ({"feature": "a"}, "feature=b", False),
        ({"provider": "openai", "model": "gpt-4o"}, "feature=a", True),
        ({"provider": "openai", "model": "gpt-4o"}, "model=gpt-4o-mini", False),
        ({"provider": "openai", "model": "gpt-4o"}, "provider=openai&model=gpt-4o", True),
        ({"feature": "a", "tenant": "acme"}, "tenant=globex", False),
        ({"feature": "a", "tenant": "acme"}, "tenant=acme&feature=a", True),
        ({"feature": "a"}, "tenant=acme", True),  # over every tenant: acme's traffic is in it
        ({"feature": ""}, "feature=b", True),  # '' names no feature
        ({"feature": "a", "operation": "chat"}, "feature=a", True),  # not a page filter
    ],
)
def test_compatible_slices(project: Project, slice_: dict[str, str], filters: str, expected: bool) -> None:
    finding = make_finding(project, "the one", slice_=slice_)
    params = parse_params(_query(f"range=24h&{filters}"))
    assert [mark.url for mark in chart_marks(params, Scope.everything())] == (
        [f"/findings/{finding.pk}/"] if expected else []
    )


def test_marked_figures_are_valid_plotly_and_labels_are_escaped() -> None:
    now = timezone.now()
    rows = [{"time": now - timedelta(hours=n), "a": n} for n in range(5)]
    marks = [charts.Mark(at=now - timedelta(hours=2), label='<img src=x onerror="alert(1)"> and a long title ' * 2,
                         url="/findings/7/", severity="critical", hover="h")]  # fmt: skip
    html = charts.time_series(rows, {"A": "a"}, unit="ms", marks=marks)
    assert html is not None and "<img" not in html and "&lt;img" in html
    assert charts.stacked_by([{**row, "feature": "f"} for row in rows], "feature", "a", unit="USD", marks=marks)
    assert '"shapes"' not in (charts.time_series(rows, {"A": "a"}, unit="ms", marks=()) or "")


def test_labels_read_away_from_the_nearer_edge_and_clear_of_the_mode_bar() -> None:
    now = timezone.now()
    early, late = charts.Mark(at=now - timedelta(hours=20), label="early"), charts.Mark(at=now, label="late")
    figure = charts.with_marks(charts.figure_dict([], unit="ms"), [early, late], (now - timedelta(hours=24), now))
    sides = {annotation["text"]: annotation["xanchor"] for annotation in figure["layout"]["annotations"]}
    assert sides == {"early": "left", "late": "right"}
    # Plotly's mode bar covers the plot's top edge on hover: every label sits below it.
    assert all(annotation["y"] <= 0.9 for annotation in figure["layout"]["annotations"])
