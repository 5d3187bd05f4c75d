"""What every instrumentation test does around the calls: the application's own root span
(carrying the tenant and feature no instrumentation knows), flushing the real exporter, and
reading the calls back through the one metrics query layer."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from apps.metrics.query import Query, Scope, run_query
from apps.rollups.runner import floor_hour, rollup_range
from apps.telemetry.models import Span

TENANT = "acme"
FEATURE = "ticket-summary"


def request_root(provider: TracerProvider) -> AbstractContextManager[trace.Span]:
    """The application's span for the request that makes the calls."""
    tracer = provider.get_tracer("support-api")
    attributes = {"tenant.id": TENANT, "app.feature": FEATURE}
    return tracer.start_as_current_span("POST /tickets/summary", kind=SpanKind.SERVER, attributes=attributes)


def flush(provider: TracerProvider) -> None:
    # force_flush returns once the exporter's POSTs have been answered, so the rows are there.
    assert provider.force_flush(30_000)


def calls_by_tenant_and_feature(spans: Sequence[Span], metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """The stored spans' hours rolled up, then read as everyone sees them: the query layer's
    rows grouped by tenant and feature (so attribution through the trace is part of it)."""
    start = floor_hour(min(span.start_time for span in spans))
    end = floor_hour(max(span.start_time for span in spans)) + timedelta(hours=1)
    rollup_range(start, end)
    result = run_query(Query(metrics, start, end, group_by=("tenant", "feature")), Scope.everything())
    return [row for row in result.rows if row.get("requests")]
