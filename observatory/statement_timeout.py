"""A time limit on the database work of one page or API request, and a clear answer past it.

The web process serves pages, the JSON API and the OTLP receiver (/v1/traces, /v1/metrics)
alike. A page whose query holds the database for minutes (a deep trace search, a huge
range) must not starve ingest, so every request outside /v1/ runs its statements under
WEB_STATEMENT_TIMEOUT_MS (0 = none): PostgreSQL cancels a statement past it, and this
middleware answers the cancellation with 503 and what to do about it (HTML for pages, the
API's {"error": ...} for /api/), never a bare 500. Ingest never gets the limit: its requests
skip it, and the limit is reset when a request ends, so a persistent connection that served
a page carries nothing into the next request. (docker-compose also runs the receiver as its
own `collector` service; docs/traces.md.)

A session-level SET, not connection OPTIONS: Celery workers, management commands and the
receiver share the `default` alias and must keep the server's default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg.errors
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

log = logging.getLogger(__name__)

# Paths whose requests never run under the limit: the OTLP receiver, and the health check
# (which must answer for itself when the database is down).
EXEMPT_PREFIXES = ("/v1/", "/healthz")


def is_query_timeout(exc: BaseException) -> bool:
    """Whether an exception is PostgreSQL cancelling a statement (statement_timeout)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, psycopg.errors.QueryCanceled):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def timeout_message() -> str:
    seconds = settings.WEB_STATEMENT_TIMEOUT_MS / 1000
    return (
        f"This query took too long (over {seconds:g} s) and was stopped so that it does not hold the "
        "database. Narrow the time range or add filters, then try again."
    )


def _set_timeout(milliseconds: int | None) -> None:
    with connection.cursor() as cur:
        if milliseconds is None:
            cur.execute("RESET statement_timeout")
        else:
            cur.execute("SELECT set_config('statement_timeout', %s, false)", [f"{milliseconds}ms"])


class StatementTimeoutMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.WEB_STATEMENT_TIMEOUT_MS
        if not limit or request.path.startswith(EXEMPT_PREFIXES):
            return self.get_response(request)
        try:
            _set_timeout(limit)
        except DatabaseError:
            # The database is unreachable: the view answers that in its own way (its first
            # query fails the same), with nothing set to undo.
            return self.get_response(request)
        try:
            return self.get_response(request)
        finally:
            try:
                _set_timeout(None)
            except DatabaseError:
                # A broken connection: the next request gets a fresh one, with no limit set.
                connection.close()

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_query_timeout(exception):
            return None
        log.warning("query cancelled after %s ms: %s %s", settings.WEB_STATEMENT_TIMEOUT_MS, request.method,
                    request.get_full_path())  # fmt: skip
        message = timeout_message()
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse({"error": message}, status=503)
        else:
            response = render(request, "query_timeout.html", {"error": message}, status=503)
        response["Retry-After"] = "30"
        return response
