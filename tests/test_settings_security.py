"""Production settings: `check --deploy` is clean with PRODUCTION=true, production refuses to
start on a debug or weak configuration, development stays on plain HTTP, and every response
carries a Content-Security-Policy whose nonce the page's inline scripts hold.

Settings are loaded in a fresh interpreter for each case: they are read once per process,
from the environment, exactly as gunicorn and Celery read them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, RequestFactory

from observatory.env import DEVELOPMENT_SECRET_KEY, ConfigError, env_proxy_ssl_header

ROOT = Path(__file__).resolve().parent.parent
GOOD_KEY = "kJ3v9Qx7_pL2mZ8rT4wY6nB1cD5fG0hS-aE9uI7oP3lK2jH8gF4dS6aQ1wE3rT5y"
# Parsed, never connected to: neither `check --deploy` nor importing settings opens it.
SOME_DATABASE = "postgres://observatory@127.0.0.1:5432/observatory"
SECURITY_SETTINGS = [
    "DEBUG",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
]


def clean_environment(**variables: str) -> dict[str, str]:
    """A bare environment (no setting of this test run leaks in, such as the browser tests'
    DJANGO_ALLOW_ASYNC_UNSAFE, which check --deploy rightly reports), plus `variables`."""
    kept = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    return {**kept, "DATABASE_URL": SOME_DATABASE, "REDIS_URL": "redis://127.0.0.1:6379/0", **variables}


def run_python(code: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = clean_environment(DJANGO_SETTINGS_MODULE="observatory.settings", **variables)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def load_security_settings(**variables: str) -> dict[str, Any]:
    code = (
        "import json; from observatory import settings as s; "
        f"print(json.dumps({{name: getattr(s, name) for name in {SECURITY_SETTINGS!r}}}))"
    )
    done = run_python(code, **variables)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def production(**variables: str) -> dict[str, str]:
    return {"PRODUCTION": "true", "SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": "observatory.example.com", **variables}


def test_check_deploy_is_clean_in_production() -> None:
    env = clean_environment(**production())
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_check_deploy_names_what_development_lacks() -> None:
    """The counterpart: the same check outside production reports the HTTPS warnings, so the
    clean result above comes from the production defaults, not from a check that never runs."""
    env = clean_environment(SECRET_KEY=GOOD_KEY, ALLOWED_HOSTS="observatory.example.com")
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    for code in ("W004", "W008", "W012", "W016"):
        assert f"security.{code}" in done.stderr + done.stdout


def test_production_turns_every_https_setting_on() -> None:
    assert load_security_settings(**production()) == {
        "DEBUG": False,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
    }


def test_development_stays_on_plain_http() -> None:
    assert load_security_settings() == {
        "DEBUG": False,
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_HSTS_PRELOAD": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
    }


def test_each_production_default_can_be_changed() -> None:
    loaded = load_security_settings(
        **production(
            SECURE_PROXY_SSL_HEADER="X-Forwarded-Scheme",
            SECURE_SSL_REDIRECT="false",
            SECURE_HSTS_SECONDS="3600",
            SECURE_HSTS_INCLUDE_SUBDOMAINS="false",
            SECURE_HSTS_PRELOAD="false",
            SESSION_COOKIE_SECURE="false",
            CSRF_COOKIE_SECURE="false",
        )
    )
    assert loaded["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_SCHEME", "https"]
    assert loaded["SECURE_HSTS_SECONDS"] == 3600
    others = {
        name: value for name, value in loaded.items() if name not in {"SECURE_PROXY_SSL_HEADER", "SECURE_HSTS_SECONDS"}
    }
    assert set(others.values()) == {False}
    assert load_security_settings(**production(SECURE_PROXY_SSL_HEADER="none"))["SECURE_PROXY_SSL_HEADER"] is None


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"DEBUG": "true"}, "DEBUG=true is refused when PRODUCTION=true"),
        ({"SECRET_KEY": ""}, "SECRET_KEY must be set when PRODUCTION=true"),
        ({"SECRET_KEY": DEVELOPMENT_SECRET_KEY}, "SECRET_KEY is a development key"),
        ({"SECRET_KEY": "django-insecure-" + GOOD_KEY}, "SECRET_KEY is a development key"),
        ({"SECRET_KEY": GOOD_KEY[:49]}, "SECRET_KEY is too weak for PRODUCTION=true: 49 characters"),
        ({"SECRET_KEY": "ab" * 30}, "SECRET_KEY is too weak"),  # long, but 2 distinct characters
        ({"SECURE_HSTS_SECONDS": "-1"}, "SECURE_HSTS_SECONDS=-1 is below the minimum 0"),
        ({"SECURE_SSL_REDIRECT": "sometimes"}, "SECURE_SSL_REDIRECT='sometimes' is not a boolean"),
        ({"SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https"}, "is not an HTTP header name"),
    ],
    ids=["debug", "no-key", "dev-key", "django-insecure", "short-key", "repetitive-key", "hsts", "redirect", "header"],
)
def test_production_refuses_to_start(variables: dict[str, str], message: str) -> None:
    done = run_python("import observatory.settings", **production(**variables))
    assert done.returncode != 0
    assert "ConfigError" in done.stderr and message in done.stderr, done.stderr


def test_proxy_header_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OBS_TEST_HEADER", raising=False)
    assert env_proxy_ssl_header("OBS_TEST_HEADER", "") is None
    assert env_proxy_ssl_header("OBS_TEST_HEADER", "X-Forwarded-Proto") == ("HTTP_X_FORWARDED_PROTO", "https")
    monkeypatch.setenv("OBS_TEST_HEADER", " x-forwarded-ssl ")
    assert env_proxy_ssl_header("OBS_TEST_HEADER", "") == ("HTTP_X_FORWARDED_SSL", "https")
    monkeypatch.setenv("OBS_TEST_HEADER", "X Forwarded")
    with pytest.raises(ConfigError, match="OBS_TEST_HEADER='X Forwarded' is not an HTTP header name"):
        env_proxy_ssl_header("OBS_TEST_HEADER", "")


def test_ssl_redirect_spares_the_receiver_and_health_checks(settings: Any, db: None) -> None:
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    login_page = client.get("/accounts/login/")
    assert login_page.status_code == 301 and login_page["Location"] == "https://testserver/accounts/login/"
    # An exporter's POST is answered (here: 401, no key), never redirected.
    receiver = client.post("/v1/traces", b"", content_type="application/x-protobuf")
    assert receiver.status_code == 401
    assert client.get("/healthz").status_code == 200
    # Behind the proxy, the same page is served (the proxy's header says the request was HTTPS).
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert Client().get("/accounts/login/", headers={"X-Forwarded-Proto": "https"}).status_code == 200


# Content-Security-Policy


def policy(header: str) -> dict[str, list[str]]:
    directives = (part.strip().split() for part in header.split(";") if part.strip())
    return {name: sources for name, *sources in directives}


def test_pages_carry_a_policy_whose_nonce_their_inline_script_holds(client: Client, db: None) -> None:
    # db: the statement-timeout middleware sets its limit on the connection of every page request.
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    csp = policy(response["Content-Security-Policy"])
    nonces = [source for source in csp["script-src"] if source.startswith("'nonce-")]
    assert len(nonces) == 1 and "'unsafe-inline'" not in csp["script-src"]
    nonce = nonces[0][len("'nonce-") : -1]
    inline_scripts = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", response.content.decode())
    assert inline_scripts, "base.html's theme script is gone: this test no longer checks a nonce"
    assert all(f'nonce="{nonce}"' in attributes for attributes in inline_scripts), inline_scripts
    assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    # A fresh nonce per response.
    assert nonces[0] not in client.get("/accounts/login/")["Content-Security-Policy"]


def test_api_and_receiver_answers_carry_the_policy_too(client: Client, db: None) -> None:
    assert "default-src 'self'" in client.get("/healthz")["Content-Security-Policy"]
    assert "default-src 'self'" in client.get("/api/v1/openapi.json")["Content-Security-Policy"]


def test_plotly_figures_get_the_nonce_and_their_data_cannot_forge_a_script() -> None:
    from csp.middleware import CSPMiddleware
    from django.http import HttpResponse
    from django.template.loader import render_to_string

    from apps.dashboard.charts import Chart, bars

    hostile = '</script><script>alert("owned")</script><script type="text/javascript">'
    html = bars([hostile, "support-chat"], [2.0, 1.0], unit="USD")
    assert html is not None
    chart = Chart(title="Cost", what="Cost by feature.", unit="USD", range_text="Last 7 days", samples=3, html=html)
    request = RequestFactory().get("/")
    middleware = CSPMiddleware(lambda request: HttpResponse())
    middleware.process_request(request)
    rendered = render_to_string("dashboard/_chart.html", {"chart": chart, "request": request})
    nonce = str(request.csp_nonce)  # type: ignore[attr-defined]  # set by CSPMiddleware
    assert rendered.count("<script") == 1, rendered
    assert f'<script nonce="{nonce}">' in rendered
    assert "Plotly.newPlot" in rendered and "owned" in rendered  # the label is there, as data
    response = middleware.process_response(request, HttpResponse(rendered))
    assert f"'nonce-{nonce}'" in response["Content-Security-Policy"]
