"""Typed readers for environment variables that fail loudly on a bad value."""

from __future__ import annotations

import os
import re


class ConfigError(ValueError):
    """A setting with a bad value: raised while settings load, so the process never starts."""


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


# A header name as RFC 9110 allows it (a "token"), e.g. X-Forwarded-Proto.
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def env_proxy_ssl_header(name: str, default: str) -> tuple[str, str] | None:
    """The request header a TLS-terminating proxy sets to "https", as Django's
    SECURE_PROXY_SSL_HEADER wants it: "X-Forwarded-Proto" -> ("HTTP_X_FORWARDED_PROTO", "https").

    "none" (or an empty default) trusts no header. Only set one when every request passes
    through a proxy that overwrites it: a client could otherwise claim HTTPS.
    """
    raw = os.environ.get(name)
    header = (default if raw is None or raw.strip() == "" else raw).strip()
    if header == "" or header.lower() == "none":
        return None
    if not _HEADER_NAME.fullmatch(header):
        raise ConfigError(f"{name}={header!r} is not an HTTP header name (e.g. X-Forwarded-Proto, or none)")
    return "HTTP_" + header.upper().replace("-", "_"), "https"


# The key settings.py falls back to outside production; production refuses it by name.
DEVELOPMENT_SECRET_KEY = "dev-only-insecure-key-not-for-production"


def production_secret_key(name: str) -> str:
    """SECRET_KEY for PRODUCTION=true, refused when it is missing, the development default, or
    weaker than Django's own check (security.W009: at least 50 characters, 5 distinct)."""
    key = os.environ.get(name, "")
    if not key:
        raise ConfigError(f"{name} must be set when PRODUCTION=true")
    if key == DEVELOPMENT_SECRET_KEY or key.startswith("django-insecure-"):
        raise ConfigError(f"{name} is a development key; set a long random one when PRODUCTION=true")
    if len(key) < 50 or len(set(key)) < 5:
        raise ConfigError(
            f"{name} is too weak for PRODUCTION=true: {len(key)} characters; use at least 50 random ones "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))')"
        )
    return key
