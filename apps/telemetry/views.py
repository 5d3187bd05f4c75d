from __future__ import annotations

from django.http import HttpRequest, HttpResponse


def receive_traces(request: HttpRequest) -> HttpResponse:
    return HttpResponse(status=501)
