"""What every instrumentation test does around the calls: the application's own root span
(carrying the tenant and feature no instrumentation knows), flushing the real exporter, and
reading the calls back through the one metrics query layer."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from wrapt import BaseObjectProxy

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


@contextmanager
def methods_restored(package: str) -> Iterator[None]:
    """Put the methods of `package`'s classes back as they were on the way in.

    Instrumentors patch the client library's classes globally, and an uninstrument that
    misses one leaves a wrapper exporting to a shut-down provider inside the next test's
    calls (OpenLLMetry's openai 0.62.4 unwraps nothing under opentelemetry-instrumentation
    0.66b1: it passes `"module", "Class.method"` where `unwrap` wants `"module.Class", "method"`).
    The client library imports its modules lazily, so an instrumentor may patch a module
    that was not there on the way in: there, every wrapt wrapper is peeled off.
    """
    saved = {(cls, name): value for cls in _classes_of(package) for name, value in list(vars(cls).items())}
    try:
        yield
    finally:
        for cls in _classes_of(package):
            for name, value in list(vars(cls).items()):
                if (cls, name) in saved:
                    original = saved[(cls, name)]
                else:
                    original = value
                    while isinstance(original, BaseObjectProxy):
                        original = original.__wrapped__
                if original is not value:
                    setattr(cls, name, original)


def _classes_of(package: str) -> list[type]:
    return [
        cls
        for module_name, module in list(sys.modules.items())
        if module_name == package or module_name.startswith(f"{package}.")
        for cls in list(vars(module).values())
        if isinstance(cls, type) and cls.__module__.startswith(package)
    ]


def calls_by_tenant_and_feature(spans: Sequence[Span], metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """The stored spans' hours rolled up, then read as everyone sees them: the query layer's
    rows grouped by tenant and feature (so attribution through the trace is part of it)."""
    start = floor_hour(min(span.start_time for span in spans))
    end = floor_hour(max(span.start_time for span in spans)) + timedelta(hours=1)
    rollup_range(start, end)
    result = run_query(Query(metrics, start, end, group_by=("tenant", "feature")), Scope.everything())
    return [row for row in result.rows if row.get("requests")]
