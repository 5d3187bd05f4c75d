"""Traces explorer pages: the searchable list and one trace's waterfall."""

from __future__ import annotations

import csv
from typing import Any

import plotly.graph_objects as go
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from apps.accounts.access import scope_for
from apps.dashboard.charts import PALETTE
from apps.dashboard.params import BadParameter, filter_bar_context, parse_params
from apps.dashboard.traces import SORTS, STATUSES, TraceSearch, load_trace, search_traces, span_hex


def _search_from(request: HttpRequest) -> tuple[TraceSearch, Any]:
    params = parse_params(request.GET)
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
    try:
        page = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        raise BadParameter("page must be a whole number") from None
    search = TraceSearch(
        start=params.start,
        end=params.end,
        tenants=params.filters.get("tenant", ()),
        features=params.filters.get("feature", ()),
        providers=params.filters.get("provider", ()),
        models=params.filters.get("model", ()),
        status=status,
        min_duration_ms=min_ms,
        sort=sort,
        page=min(page, 10_000),
    )
    return search, params


@login_required
def traces(request: HttpRequest) -> HttpResponse:
    try:
        search, params = _search_from(request)
    except BadParameter as exc:
        return render(request, "dashboard/traces.html", {"error": str(exc)}, status=400)
    rows, has_next = search_traces(search, scope_for(request.user))
    if request.GET.get("format") == "csv":
        return _csv(rows)
    base_qs = params.querystring()
    extra = {"status": search.status, "min_ms": request.GET.get("min_ms") or None}
    context = {
        **filter_bar_context(params),
        "rows": rows,
        "search": search,
        "has_next": has_next,
        "base_qs": base_qs,
        "statuses": STATUSES,
        "sort_qs": {name: params.querystring(sort=name, **extra) for name in SORTS},
        "next_qs": params.querystring(page=str(search.page + 1), sort=search.sort, **extra),
        "prev_qs": params.querystring(page=str(search.page - 1), sort=search.sort, **extra),
        "csv_qs": params.querystring(format="csv", sort=search.sort, page=str(search.page), **extra),
    }
    return render(request, "dashboard/traces.html", context)


def _csv(rows: list[dict[str, Any]]) -> HttpResponse:
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="observatory-traces.csv"'
    writer = csv.writer(response)
    writer.writerow(["trace_id", "start_time", "duration_ms", "name", "service", "tenant", "feature", "calls",
                     "cost_usd", "cost_unknown_calls", "models", "error"])  # fmt: skip
    for row in rows:
        writer.writerow([row["trace_hex"], row["start_time"].isoformat(), f"{row['duration_ms']:.3f}", row["name"],
                         row["service_name"], row["tenant"], row["feature"], row["n_calls"], row["cost_usd"],
                         row["cost_unknown"], " ".join(row["models"]), row["is_error"]])  # fmt: skip
    return response


@login_required
def trace_detail(request: HttpRequest, trace_hex: str) -> HttpResponse:
    spans = load_trace(trace_hex, scope_for(request.user))
    if spans is None:
        raise Http404("No such trace, or not yours to see.")
    ordered = _tree_order(spans)
    calls = [s for s in spans if s["is_llm"]]
    context = {
        "trace_hex": trace_hex,
        "spans": ordered,
        "root": ordered[0],
        "waterfall": _waterfall(ordered),
        "total_cost": sum((s["cost_usd"] or 0) for s in calls if s["cost_usd"] is not None),
        "n_calls": len(calls),
        "tenant": next((s["tenant"] for s in ordered if s["tenant"]), None),
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
        parts.append("cost " + (f"${span['cost_usd']:.6f}" if span["cost_usd"] is not None else "unknown"))
    if span["error_type"]:
        parts.append(f"error: {span['error_type']}")
    return "<br>".join(parts)
