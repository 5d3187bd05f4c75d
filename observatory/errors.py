"""Django's 400 handler, for requests refused before any view runs.

A Host header outside ALLOWED_HOSTS (DisallowedHost) or another SuspiciousOperation is
answered by `handler400`, not by the view. Django's default is an HTML page; a client of the
JSON API or of the OTLP receiver parses its answer, so those paths get their own error
format: `{"error": ...}` under /api/, an OTLP Status (protobuf or JSON, as the request was
sent) on the receiver. Django has already logged the refusal (logger django.security.*).
"""

from __future__ import annotations

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views import defaults


def _reason(exception: Exception) -> str:
    if isinstance(exception, DisallowedHost):
        return "the Host header names no host this server answers for (ALLOWED_HOSTS)"
    return "the request was refused as suspicious (a malformed header, a bad session or CSRF data)"


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    path = request.path_info
    if path.startswith("/api/"):
        from apps.api.auth import error_response

        return error_response(400, _reason(exception))
    if path == reverse("otlp-traces"):
        from apps.telemetry.views import refusal

        return refusal(request, 400, _reason(exception))
    return defaults.bad_request(request, exception)
