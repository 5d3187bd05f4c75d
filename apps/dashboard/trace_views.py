"""Traces explorer pages: the searchable list and one trace's waterfall."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from apps.accounts.access import scope_for
from apps.dashboard.charts import PALETTE
from apps.dashboard.params import BadParameter, ViewParams, filter_bar_context, parse_params
from apps.dashboard.traces import (
    SORTS,
    SPANS_PER_TRACE,
    STATUSES,
    Cursor,
    TracePage,
    TraceSearch,
    check_range,
    check_request,
    load_trace,
    search_traces,
    span_hex,
)
from observatory.csv_export import csv_response

CSV_HEADER = ("trace_id", "start_time", "duration_ms", "name", "service", "tenant", "feature", "calls", "cost_usd",
              "cost_unknown_calls", "models", "error")  # fmt: skip


def _search_from(request: HttpRequest) -> tuple[TraceSearch, ViewParams]:
    check_request(request.GET)
    params = parse_params(request.GET)
    check_range(params.start, params.end, timezone.now())
    status = request.GET.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadParameter(f"status={status!r} is not one of {', '.join(STATUSES)}")
    raw_min = request.GET.get("min_ms", "").strip()
    try:
        min_ms = float(raw_min) if raw_min else None
    except ValueError:
        raise BadParameter(f"min_ms={raw_min!r} is not a number of milliseconds") from None
    if min_ms is not None and not 0 <= min_ms < 10**9:
        raise BadParameter("min_ms must be between 0 and 1e9")
    sort = request.GET.get("sort", "time")
    if sort not in SORTS:
        raise BadParameter(f"sort={sort!r} is not one of {', '.join(SORTS)}")
    if request.GET.get("page", "1") != "1":
        # Pages by number cost more the deeper they go (issue 9): the list is paged by cursor.
        raise BadParameter("page= is not supported: use the list's next and previous links (cursor=...)")
    cursor = None
    raw_cursor = request.GET.get("cursor")
    direction = request.GET.get("dir", "next")
    if direction not in ("next", "prev"):
        raise BadParameter(f"dir={direction!r} is not one of next, prev")
    if raw_cursor:
        cursor = Cursor.decode(raw_cursor, sort, backwards=direction == "prev")
    search = TraceSearch(
        start=params.start,
        end=params.end,
        tenants=params.filters.get("tenant", ()),
        features=params.filters.get("feature", ()),
        providers=params.filters.get("provider", ()),
        models=params.filters.get("model", ()),
        services=params.filters.get("service", ()),
        status=status,
        min_duration_ms=min_ms,
        sort=sort,
        cursor=cursor,
    )
    return search, params


def _cursor_qs(params: ViewParams, search: TraceSearch, extra: dict[str, Any], cursor: Cursor | None) -> str | None:
    if cursor is None:
        return None
    direction = "prev" if cursor.backwards else "next"
    return params.querystring(sort=search.sort, cursor=cursor.encode(), dir=direction, **extra)


@login_required
def traces(request: HttpRequest) -> HttpResponse:
    try:
        search, params = _search_from(request)
    except BadParameter as exc:
        return render(request, "dashboard/traces.html", {"error": str(exc)}, status=400)
    page = search_traces(search, scope_for(request.user))
    if request.GET.get("format") == "csv":
        return _csv(page)
    extra = {"status": search.status, "min_ms": request.GET.get("min_ms") or None}
    context = {
        **filter_bar_context(params),
        "rows": page.rows,
        "searched_to": page.searched_to,
        "search": search,
        "statuses": STATUSES,
        "spans_per_trace": SPANS_PER_TRACE,
        "sort_qs": {name: params.querystring(sort=name, **extra) for name in SORTS},
        "next_qs": _cursor_qs(params, search, extra, page.next_cursor),
        "prev_qs": _cursor_qs(params, search, extra, page.prev_cursor),
        "first_qs": params.querystring(sort=search.sort, **extra) if search.cursor else None,
        "csv_qs": params.querystring(
            format="csv", sort=search.sort, cursor=request.GET.get("cursor") or None,
            dir=request.GET.get("dir") or None, **extra,
        ),
    }  # fmt: skip
    return render(request, "dashboard/traces.html", context)


def _csv(page: TracePage) -> HttpResponse:
    rows = (
        (row["trace_hex"], row["start_time"].isoformat(), f"{row['duration_ms']:.3f}", row["name"],
         row["service_name"], row["tenant"], row["feature"], row["n_calls"], row["cost_usd"], row["cost_unknown"],
         " ".join(row["models"]), row["is_error"])
        for row in page.rows
    )  # fmt: skip
    return csv_response(CSV_HEADER, rows, "observatory-traces")


@login_required
def trace_detail(request: HttpRequest, trace_hex: str) -> HttpResponse:
    if "\x00" in trace_hex:
        raise Http404("No such trace, or not yours to see.")
    view = load_trace(trace_hex, scope_for(request.user))
    if view is None or not view.spans:
        raise Http404("No such trace, or not yours to see.")
    ordered = _tree_order(view.spans)
    by_id = {s["span_id"]: s for s in ordered}
    for span in ordered:
        same = span.get("same_call_as")
        span["same_call_as_hex"] = span_hex(same) if same is not None else ""
        span["same_call_as_name"] = by_id[same]["name"] if same in by_id else ""
    calls = [s for s in ordered if s["is_call"]]
    context = {
        "trace_hex": trace_hex,
        "spans": ordered,
        "root": ordered[0],
        "waterfall": _waterfall(ordered),
        "total_cost": sum(s["call_cost_usd"] for s in calls if s["call_cost_usd"] is not None),
        "cost_unknown": sum(1 for s in calls if s["call_cost_usd"] is None),
        "n_calls": len(calls),
        "n_llm_spans": sum(1 for s in ordered if s["is_llm"]),
        "hidden": view.hidden,
        "truncated": view.truncated,
        "spans_per_trace": SPANS_PER_TRACE,
        "tenant": next((s["attributed_tenant"] for s in ordered if s["attributed_tenant"]), None),
        "feature": next((s["feature"] for s in ordered if s["feature"]), None),
    }
    return render(request, "dashboard/trace_detail.html", context)


def _tree_order(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Depth-first, children by start time; orphans (parent not received) after the roots."""
    by_id = {s["span_id"]: s for s in spans}
    children: dict[int | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span["parent_span_id"] if span["parent_span_id"] in by_id else None
        children.setdefault(parent, []).append(span)
    ordered: list[dict[str, Any]] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        span["depth"] = depth
        span["span_hex"] = span_hex(span["span_id"])
        ordered.append(span)
        for child in sorted(children.get(span["span_id"], []), key=lambda s: s["start_time"]):
            walk(child, depth + 1)

    for root in sorted(children.get(None, []), key=lambda s: s["start_time"]):
        walk(root, 0)
    return ordered


def _waterfall(spans: list[dict[str, Any]]) -> str:
    """Gantt-style bars from the trace's start; vLLM server spans split into queue, prefill, decode."""
    origin = min(s["start_time"] for s in spans)
    labels = [f"{'  ' * s['depth']}{s['name']} · {s['service_name'] or ''}" for s in spans]
    offsets = [(s["start_time"] - origin).total_seconds() * 1000 for s in spans]
    figure = go.Figure()
    colours = [PALETTE[0] if s["is_llm"] else PALETTE[7] for s in spans]
    hover = [_hover(s) for s in spans]
    figure.add_bar(y=labels, x=[s["duration_ms"] for s in spans], base=offsets, orientation="h", name="span",
                   marker_color=colours, hovertext=hover, hoverinfo="text")  # fmt: skip
    phases = (
        ("queue", "queue_ms", PALETTE[1]),
        ("prefill", "prefill_ms", PALETTE[2]),
        ("decode", "decode_ms", PALETTE[3]),
    )
    phase_rows: dict[str, tuple[list[str], list[float], list[float]]] = {name: ([], [], []) for name, _, _ in phases}
    for label, offset, span in zip(labels, offsets, spans, strict=True):
        cursor = offset
        for name, key, _ in phases:
            if span.get(key):
                ys, xs, bases = phase_rows[name]
                ys.append(label)
                xs.append(span[key])
                bases.append(cursor)
                cursor += span[key]
    for name, _, colour in phases:
        ys, xs, bases = phase_rows[name]
        if ys:
            figure.add_bar(y=ys, x=xs, base=bases, orientation="h", name=name, marker_color=colour, width=0.35)
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(
        barmode="overlay", height=max(200, 30 * len(spans) + 80), margin={"l": 10, "r": 10, "t": 10, "b": 40},
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)", font={"color": "#8a94a3", "size": 12},
        xaxis={"title": {"text": "ms since the trace started"}, "gridcolor": "rgba(128,128,128,0.18)"},
        legend={"orientation": "h", "y": -0.15},
    )  # fmt: skip
    return str(figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}))


def _hover(span: dict[str, Any]) -> str:
    parts = [f"<b>{span['name']}</b>", f"{span['duration_ms']:.1f} ms"]
    if span["is_llm"]:
        model = span["response_model"] or span["request_model"] or "?"
        parts.append(f"{span['provider'] or '?'} {model}")
        if span["input_tokens"] is not None:
            cached = span["cache_read_tokens"] or 0
            parts.append(f"tokens in {span['input_tokens']} (cached {cached}) out {span['output_tokens']}")
        if span.get("same_call_as_hex"):
            parts.append(f"same call as {span['same_call_as_name']} {span['same_call_as_hex']}: counted there")
        else:
            cost = span.get("call_cost_usd")
            parts.append("cost " + (f"${cost:.6f}" if cost is not None else "unknown"))
    if span["error_type"]:
        parts.append(f"error: {span['error_type']}")
    return "<br>".join(parts)
