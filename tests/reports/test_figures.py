"""The review's figures are the API's: same week, same scope, same numbers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.accounts.access import scope_for
from apps.accounts.models import Project
from apps.reports.figures import TOTAL_METRICS, add_money, week_figures
from apps.reports.weeks import ReviewWeek
from tests.reports.conftest import WEEK, self_hosted_traffic

pytestmark = pytest.mark.django_db


def api_rows(
    user: Any, week: ReviewWeek, metrics: tuple[str, ...], group_by: str = "", **filters: str
) -> list[dict[str, Any]]:
    client = Client()
    client.force_login(user)
    params = {"metrics": ",".join(metrics), "start": week.start.isoformat(), "end": week.end.isoformat(), **filters}
    if group_by:
        params["group_by"] = group_by
    response = client.get("/api/v1/metrics", params)
    assert response.status_code == 200, response.content
    return response.json()["rows"]


def same(ours: Any, theirs: Any) -> bool:
    if ours is None or theirs is None:
        return ours is None and theirs is None
    if isinstance(ours, Decimal):
        return ours == Decimal(theirs)
    if isinstance(ours, float):
        return ours == pytest.approx(theirs, rel=1e-9)
    return bool(ours == theirs)


@pytest.mark.parametrize("who", ["owner", "outsider"])
def test_totals_and_breakdowns_equal_the_api_for_the_same_week_and_scope(
    request: pytest.FixtureRequest, traffic: None, at_now: Any, who: str
) -> None:
    user = request.getfixturevalue(who)
    figures = week_figures(scope_for(user), WEEK)
    for week, ours in ((WEEK, figures.totals), (WEEK.previous, figures.previous)):
        (theirs,) = api_rows(user, week, TOTAL_METRICS)
        for metric in TOTAL_METRICS:
            assert same(ours[metric], theirs[metric]), (who, week.label, metric, ours[metric], theirs[metric])
    assert figures.totals["requests"] > 0

    by_tenant = {row["tenant"]: row for row in api_rows(user, WEEK, ("cost_usd", "requests"), "tenant")}
    assert {line.key[0] for line in figures.tenants if line.requests} == set(by_tenant)
    for line in figures.tenants:
        if line.requests:
            assert same(line.cost, by_tenant[line.key[0]]["cost_usd"])
            assert line.requests == by_tenant[line.key[0]]["requests"]
    by_feature = {row["feature"]: row for row in api_rows(user, WEEK, ("cost_usd", "requests"), "feature")}
    for line in figures.features:
        if line.requests:
            assert same(line.cost, by_feature[line.key[0]]["cost_usd"]), line
    by_model = {(row["provider"], row["model"]): row for row in api_rows(user, WEEK, ("cost_usd",), "provider,model")}
    for line in figures.models:
        if line.requests:
            assert same(line.cost, by_model[line.key]["cost_usd"]), line


def test_the_hand_made_week_reads_as_built(owner: Any, outsider: Any, traffic: None, at_now: Any) -> None:
    everything = week_figures(scope_for(owner), WEEK)
    # acme: 4 x 0.10 + 10 x 0.30; globex: 7 x 0.05 (one failed call priced too), one unpriced.
    assert everything.totals["cost_usd"] == Decimal("3.40") + Decimal("0.35")
    assert everything.previous["cost_usd"] == Decimal("1.00") + Decimal("0.25")
    assert everything.totals["cost_unknown_requests"] == 1
    globex = week_figures(scope_for(outsider), WEEK)
    assert globex.totals["cost_usd"] == Decimal("0.35")
    assert [line.key for line in globex.tenants] == [("globex",)]
    assert {line.key[0] for line in globex.features} == {"search"}
    # The move: support-chat to claude-sonnet-4-5, first seen on Tuesday.
    top = everything.pairs[0]
    assert top.key == ("support-chat", "anthropic", "claude-sonnet-4-5") and top.is_new
    assert everything.first_seen[top.key].strftime("%a") == "Tue"
    assert sum(day.cost or 0 for day in everything.days) == everything.totals["cost_usd"]


@pytest.mark.parametrize("who", ["owner", "outsider"])
def test_self_hosted_and_api_cost_equal_the_api_for_the_same_week_and_scope(
    request: pytest.FixtureRequest, project: Project, traffic: None, at_now: Any, who: str
) -> None:
    self_hosted_traffic(project)
    user = request.getfixturevalue(who)
    figures = week_figures(scope_for(user), WEEK)
    split = figures.split
    for week, hosted, api, hosted_requests, api_requests in (
        (WEEK, split.self_hosted, split.api, split.self_hosted_requests, split.api_requests),
        (WEEK.previous, split.previous_self_hosted, split.previous_api, split.previous_self_hosted_requests,
         split.previous_api_requests),
    ):  # fmt: skip
        (vllm,) = api_rows(user, week, ("cost_usd", "requests"), provider="vllm")
        assert same(hosted, vllm["cost_usd"]) and hosted_requests == vllm["requests"], (who, week.label)
        by_provider = api_rows(user, week, ("cost_usd", "requests"), "provider")
        others = [row for row in by_provider if row["provider"] != "vllm" and row["requests"]]
        assert same(api, add_money(Decimal(row["cost_usd"]) for row in others if row["cost_usd"] is not None))
        assert api_requests == sum(row["requests"] for row in others)
        # Self-hosted and API make up the total the review shows, exactly.
        (total,) = api_rows(user, week, ("cost_usd",))
        assert same(add_money([hosted, api]), total["cost_usd"])
    # By hand: 8 calls a week per tenant at $0.03 this week, 4 at $0.02 the week before.
    tenants = 2 if who == "owner" else 1
    assert split.self_hosted == Decimal("0.24") * tenants and split.previous_self_hosted == Decimal("0.08") * tenants
    if who == "owner":
        # Idle GPU cost is no tenant's: read for people who see every tenant, over the week only.
        assert split.idle == Decimal("0.75") and split.previous_idle == Decimal("0.50")
    else:
        assert split.idle is None and split.previous_idle is None
