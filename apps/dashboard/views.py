"""Dashboard pages. The overview here is the first cut; the full pages read the metrics
query layer (rollups issue) rather than raw spans."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from apps.accounts.models import IngestKey

RANGE_DAYS = 7

# LLM spans in range with the feature of their trace: the span's own, else the first one
# tagged in its trace, else its service name. vLLM server spans (kind 2) are the same calls
# as the client spans that caused them, so they are not counted twice.
OVERVIEW_SQL = """
WITH llm AS (
    SELECT trace_id, start_time, cost_usd, feature, service_name, status_code, input_tokens
    FROM telemetry_span
    WHERE is_llm AND kind <> 2 AND start_time >= %(since)s
),
trace_feature AS (
    SELECT DISTINCT ON (trace_id) trace_id, feature
    FROM telemetry_span
    WHERE start_time >= %(since)s - interval '1 hour' AND feature IS NOT NULL
      AND trace_id IN (SELECT trace_id FROM llm)
    ORDER BY trace_id, start_time
)
SELECT date_trunc('day', llm.start_time) AS day,
       coalesce(llm.feature, trace_feature.feature, llm.service_name, '(none)') AS feature,
       count(*) AS requests,
       count(*) FILTER (WHERE llm.status_code = 2) AS errors,
       sum(llm.cost_usd) AS cost,
       count(*) FILTER (WHERE llm.cost_usd IS NULL) AS unpriced
FROM llm LEFT JOIN trace_feature USING (trace_id)
GROUP BY 1, 2
ORDER BY 1, 2
"""


def _overview_rows(since: Any) -> list[dict[str, Any]]:
    with connection.cursor() as cur:
        cur.execute(OVERVIEW_SQL, {"since": since})
        columns = [c.name for c in cur.description]
        return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def _cost_figure(rows: list[dict[str, Any]]) -> str:
    features = sorted({row["feature"] for row in rows})
    figure = go.Figure()
    for feature in features:
        mine = [row for row in rows if row["feature"] == feature]
        figure.add_bar(name=feature, x=[row["day"] for row in mine], y=[float(row["cost"] or 0) for row in mine])
    figure.update_layout(
        barmode="stack", height=320, margin={"l": 50, "r": 10, "t": 10, "b": 40},
        yaxis_title="USD per day", legend={"orientation": "h", "y": -0.2},
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)", font={"color": "#8a94a3"},
    )  # fmt: skip
    return figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    since = now - timedelta(days=RANGE_DAYS)
    rows = _overview_rows(since)
    requests = sum(row["requests"] for row in rows)
    context = {
        "since": since,
        "now": now,
        "range_days": RANGE_DAYS,
        "requests": requests,
        "errors": sum(row["errors"] for row in rows),
        "cost": sum((row["cost"] or 0) for row in rows),
        "unpriced": sum(row["unpriced"] for row in rows),
        "error_rate": (sum(row["errors"] for row in rows) / requests) if requests else None,
        "cost_figure": _cost_figure(rows) if rows else None,
        "has_keys": IngestKey.objects.active().exists(),
        "otlp_endpoint": request.build_absolute_uri("/").rstrip("/"),
    }
    return render(request, "dashboard/overview.html", context)


_PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@require_GET
@cache_control(max_age=86400, public=True)
def plotly_js(request: HttpRequest) -> FileResponse:
    """plotly.js from the installed plotly package: users run offline, so no CDN."""
    return FileResponse(_PLOTLY_JS.open("rb"), content_type="text/javascript")
