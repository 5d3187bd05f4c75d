"""Feature, tenant and model pages: a list of every value in range, and one value's details.

    /features/                 every feature with calls in range, sortable, CSV (?csv=1)
    /features/<name>/          the overview's figures for one feature, by model, token mix, ...
    /tenants/, /tenants/<name>/
    /models/, /models/<provider>/<model>/

Names come from telemetry and may hold slashes or colons (`meta-llama/Llama-3.1-8B-Instruct`,
`ft:invoice-extractor-v3`): the routes take them as paths and links are built by reverse(),
which percent-encodes the rest. A detail page is the same figures as the overview with the
value as a filter, so the page's other filters (and the viewer's scope) narrow it further.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_GET

from apps.accounts.access import scope_for
from apps.dashboard import panels
from apps.dashboard.page_reads import current as current_reads
from apps.dashboard.page_reads import page_reads
from apps.dashboard.params import BadParameter, ViewParams, filter_bar_context, parse_params
from apps.dashboard.views import bad_request, checked_page, empty_state_context, table_csv
from apps.insights.marks import chart_marks
from apps.metrics.query import Scope, SharedReads

DEFAULT_SORT = "-cost_usd"


@dataclass(frozen=True)
class Kind:
    """One kind of page subject: the dimensions that name a value and where its pages live."""

    dimensions: tuple[str, ...]
    singular: str
    plural: str
    list_url: str
    detail_url: str
    # Detail page tables: (csv name, title, the dimensions each row is).
    breakdowns: tuple[tuple[str, str, tuple[str, ...]], ...]
    # The dimension the detail page's cost chart is stacked by.
    cost_by: str


KINDS = {
    "feature": Kind(("feature",), "feature", "features", "features", "feature-detail",
                    (("models", "By model", ("provider", "model")),), "model"),
    "tenant": Kind(("tenant",), "tenant", "tenants", "tenants", "tenant-detail",
                   (("features", "By feature", ("feature",)),), "feature"),
    "model": Kind(("provider", "model"), "model", "models", "models", "model-detail",
                  (("features", "By feature", ("feature",)), ("tenants", "By tenant", ("tenant",))), "feature"),
}  # fmt: skip
# The kind whose detail page each dimension set links to.
DETAIL_OF = {kind.dimensions: name for name, kind in KINDS.items()}


def _sort_param(request: HttpRequest) -> str:
    sort = request.GET.get("sort") or DEFAULT_SORT
    if sort.removeprefix("-") not in panels.SORT_KEYS:
        raise BadParameter(f"sort={sort!r} is not one of {', '.join(panels.SORT_KEYS)} (a leading - sorts descending)")
    return sort


def _without(params: ViewParams, dimensions: tuple[str, ...]) -> ViewParams:
    return replace(params, filters={dim: values for dim, values in params.filters.items() if dim not in dimensions})


def _detail_link(dimensions: tuple[str, ...], values: tuple[str, ...], querystring: str) -> str | None:
    """A row's detail page, or None where there is none (the unattributed tenant, a name no
    URL can carry)."""
    kind = DETAIL_OF.get(dimensions)
    if kind is None or not all(values):
        return None
    try:
        url = reverse(KINDS[kind].detail_url, args=values)
    except NoReverseMatch:
        return None
    return f"{url}?{querystring}" if querystring else url


def _table(
    params: ViewParams,
    scope: Scope,
    dimensions: tuple[str, ...],
    sort: str,
    shared: SharedReads | None = None,
) -> list[dict[str, Any]]:
    """A breakdown, each row linked to its own detail page with this page's range and filters
    (on a detail page, its subject among them: the numbers there are the row's)."""
    rows = panels.sort_rows(panels.breakdown(params, scope, dimensions, shared=shared), sort)
    querystring = _without(params, dimensions).querystring()
    for row in rows:
        row["link"] = _detail_link(dimensions, tuple(row[dim] for dim in dimensions), querystring)
    return rows


def _sort_headers(params: ViewParams, sort: str) -> dict[str, dict[str, str]]:
    """Per sortable column: the link that sorts by it (highest first, or flipped when it is
    the current column) and its arrow."""
    headers = {}
    for key in panels.SORT_KEYS:
        first = key if key == "name" else f"-{key}"
        if sort.removeprefix("-") == key:
            target = key if sort.startswith("-") else f"-{key}"
            arrow = " ▼" if sort.startswith("-") else " ▲"
        else:
            target, arrow = first, ""
        headers[key] = {"qs": params.querystring(sort=target), "arrow": arrow}
    return headers


def _bad_request(request: HttpRequest, template: str, message: str, context: dict[str, Any]) -> HttpResponse:
    return bad_request(request, message, template, context)


def _list_page(request: HttpRequest, kind_name: str) -> HttpResponse:
    kind = KINDS[kind_name]
    page = {"kind": kind}
    try:
        params = parse_params(request.GET)
        sort = _sort_param(request)
    except BadParameter as exc:
        return _bad_request(request, "dashboard/list.html", exc.message, page)
    scope = scope_for(request.user)
    if request.GET.get("csv"):
        rows = panels.sort_rows(panels.breakdown(params, scope, kind.dimensions), sort)
        return table_csv(
            panels.csv_rows(rows, kind.dimensions),
            panels.breakdown_columns(kind.dimensions),
            f"observatory {kind.plural} {params.describe_range()}",
        )
    rows = _table(params, scope, kind.dimensions, sort)
    context: dict[str, Any] = {
        **page,
        **filter_bar_context(params),
        **empty_state_context(request),
        "rows": rows,
        "dimensions": kind.dimensions,
        "sort": sort,
        "headers": _sort_headers(params, sort),
        "csv_qs": params.querystring(csv="1", sort=sort),
    }
    if rows:
        context["chart"] = panels.cost_by(params, scope, kind.dimensions[-1])
    return render(request, "dashboard/list.html", context)


@dataclass(frozen=True)
class Subject:
    kind: Kind
    values: tuple[str, ...]

    @property
    def title(self) -> str:
        return " / ".join(self.values)


def _detail_page(request: HttpRequest, subject: Subject) -> HttpResponse:
    kind = subject.kind
    page: dict[str, Any] = {"kind": kind, "subject": subject}
    scope = scope_for(request.user)
    if kind.dimensions == ("tenant",) and scope.limited and subject.values[0] not in (scope.tenants or ()):
        # Not an empty page: that would tell the viewer the tenant's name is worth trying.
        raise Http404("no such tenant")
    try:
        requested = parse_params(request.GET)
        sort = _sort_param(request)
        table_csv_name = request.GET.get("csv")
        tables = {name: (title, dims) for name, title, dims in kind.breakdowns}
        if table_csv_name and table_csv_name not in tables:
            raise BadParameter(f"csv={table_csv_name!r} is not one of {', '.join(tables)}")
    except BadParameter as exc:
        return _bad_request(request, "dashboard/detail.html", exc.message, page)
    # The page's own value replaces any filter on its dimensions; the filter bar shows the rest.
    base = _without(requested, kind.dimensions)
    params = base
    for dim, value in zip(kind.dimensions, subject.values, strict=True):
        params = params.with_filter(dim, value)

    if table_csv_name:
        title, dims = tables[table_csv_name]
        rows = panels.sort_rows(panels.breakdown(params, scope, dims), sort)
        return table_csv(
            panels.csv_rows(rows, dims),
            panels.breakdown_columns(dims),
            f"observatory {kind.singular} {subject.title} {title} {params.describe_range()}",
        )

    head = panels.headline(params, scope)
    context: dict[str, Any] = {
        **page,
        **filter_bar_context(base),
        **empty_state_context(request),
        "head": head,
        "list_qs": base.querystring(),
    }
    if head.has_data:
        shared = current_reads()
        marks = chart_marks(params, scope)  # where the findings of this page's slice began
        context["charts"] = [
            panels.cost_by(params, scope, kind.cost_by, marks=marks),
            panels.traffic_over_time(params, scope, marks=marks),
            *panels.usage_over_time(params, scope, shared=shared, marks=marks),
            panels.percentiles_over_time(params, scope, "e2e_ms", "Latency percentiles", marks=marks),
            panels.percentiles_over_time(params, scope, "ttft_ms", "Time to first token percentiles", marks=marks),
            panels.latency_distribution(params, scope, shared=shared),
            panels.caching_over_time(params, scope, marks=marks),
        ]
        context["tables"] = [
            {
                "title": title,
                "dimensions": dims,
                "rows": _table(params, scope, dims, sort, shared),
                "csv_qs": base.querystring(csv=name, sort=sort),
            }
            for name, title, dims in kind.breakdowns
        ]
        context["sort"] = sort
        context["headers"] = _sort_headers(base, sort)
    return render(request, "dashboard/detail.html", context)


@login_required
@require_GET
@checked_page
@page_reads
def features(request: HttpRequest) -> HttpResponse:
    return _list_page(request, "feature")


@login_required
@require_GET
@checked_page
@page_reads
def tenants(request: HttpRequest) -> HttpResponse:
    return _list_page(request, "tenant")


@login_required
@require_GET
@checked_page
@page_reads
def models(request: HttpRequest) -> HttpResponse:
    return _list_page(request, "model")


@login_required
@require_GET
@checked_page
@page_reads
def feature_detail(request: HttpRequest, name: str) -> HttpResponse:
    return _detail_page(request, Subject(KINDS["feature"], (name,)))


@login_required
@require_GET
@checked_page
@page_reads
def tenant_detail(request: HttpRequest, name: str) -> HttpResponse:
    return _detail_page(request, Subject(KINDS["tenant"], (name,)))


@login_required
@require_GET
@checked_page
@page_reads
def model_detail(request: HttpRequest, provider: str, model: str) -> HttpResponse:
    return _detail_page(request, Subject(KINDS["model"], (provider, model)))
