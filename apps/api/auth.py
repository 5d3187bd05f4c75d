"""Who is calling the API: a read key (Authorization: Bearer) or a logged-in session.

An API client gets a 401 JSON answer, never a redirect to the login page. A request that
presents a key is judged by that key alone, so a wrong key is an error even in a browser
that also holds a session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_cache_control, patch_vary_headers

from apps.accounts.models import ReadKey
from apps.api.params import BadRequest

ApiView = Callable[..., HttpResponse]
log = logging.getLogger(__name__)


class Unauthorized(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def error_response(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def api_user(request: HttpRequest) -> Any:
    """The user the request acts as; Unauthorized when there is none."""
    header = request.META.get("HTTP_AUTHORIZATION", "").strip()
    if header:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized("unsupported Authorization scheme: send 'Authorization: Bearer <read key>'")
        key = ReadKey.authenticate(credentials.strip())
        if key is None:
            raise Unauthorized("read key not recognised (wrong, revoked, or its user is inactive)")
        return key.user
    if request.user.is_authenticated:
        return request.user
    raise Unauthorized("authentication required: log in, or send 'Authorization: Bearer <read key>'")


def api_endpoint(*, authenticated: bool = True) -> Callable[[ApiView], ApiView]:
    """Read-only JSON endpoint: GET/HEAD only, caller resolved (passed as `user`), and bad
    input (BadRequest) answered 400 with its message."""

    def decorate(view: ApiView) -> ApiView:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            response = _respond(view, request, authenticated, args, kwargs)
            # Answers depend on who asks; shared caches must neither keep nor share them.
            patch_vary_headers(response, ("Authorization", "Cookie"))
            patch_cache_control(response, private=True, no_store=True)
            return response

        return wrapper

    return decorate


def _respond(
    view: ApiView, request: HttpRequest, authenticated: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response = error_response(405, f"method {request.method} not allowed; this API is read-only (GET)")
        response["Allow"] = "GET, HEAD"
        return response
    if authenticated:
        try:
            kwargs["user"] = api_user(request)
        except Unauthorized as exc:
            response = error_response(401, exc.message)
            response["WWW-Authenticate"] = 'Bearer realm="observatory-api"'
            return response
    try:
        return view(request, *args, **kwargs)
    except BadRequest as exc:
        log.info("400 on %r: %s", request.path, exc.message)
        return error_response(400, exc.message)
