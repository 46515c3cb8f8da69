"""Django settings, read from environment variables only (docs/configuration.md lists them)."""

from __future__ import annotations

import dj_database_url

from gateway_project.env import (
    BASE_DIR,
    embedded_redis_url,
    env_bool,
    env_float,
    env_header,
    env_int,
    env_list,
    env_str,
    secret_key,
    shutdown_timeout,
    var_dir,
)
from gateway_project.production import key_separation_check, production_check

PRODUCTION = env_bool("GATEWAY_PRODUCTION", False)
DEBUG = env_bool("GATEWAY_DEBUG", False)
SECRET_KEY = secret_key(generate=not PRODUCTION)
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
if PRODUCTION:
    production_check(debug=DEBUG, secret_key=SECRET_KEY, allowed_hosts=ALLOWED_HOSTS)

INSTALLED_APPS = [
    # The admin with the product's site (gateway_project/admin_site.py): header, index, banner.
    "gateway_project.apps.GatewayAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "groups",
    "keys",
    "routing",
    "billing",
    # The composition root: wires the apps together once they are all loaded.
    "gateway_project.apps.GatewayConfig",
]

# A management API call that sends no cookie runs this without the session, CSRF, auth and messages
# middleware (gateway_project/control_handler.py); the admin and cookie-carrying calls run it all.
MIDDLEWARE = [
    # Outermost: a management API call's line covers the whole chain.
    "gateway_project.access_log.management_access_log",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gateway_project.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "gateway_project.asgi.application"

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
            ]
        },
    }
]


def _database() -> dict[str, object]:
    url = env_str("DATABASE_URL", f"sqlite:///{var_dir() / 'gateway.sqlite3'}")
    config: dict[str, object] = dict(dj_database_url.parse(url, conn_max_age=0))
    options = dict(config.get("OPTIONS") or {})  # type: ignore[call-overload]
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Several gateway workers and Celery share one file: WAL plus immediate
        # transactions avoid "database is locked" on concurrent writes.
        options.update(
            {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            }
        )
    elif config["ENGINE"] == "django.db.backends.postgresql" and env_bool("GATEWAY_DB_POOL", True):
        # CONN_MAX_AGE must stay 0 under ASGI; the psycopg pool gives reuse instead.
        # `timeout`: how long a request waits for a connection (PostgreSQL down: an answer in
        # seconds, not psycopg_pool's default 30 s).
        options["pool"] = {
            "min_size": 1,
            "max_size": env_int("GATEWAY_DB_POOL_SIZE", 10),
            "timeout": env_float("GATEWAY_DB_POOL_TIMEOUT", 5.0),
        }
        # The pool checks a connection before lending it, so a PostgreSQL restart costs a
        # reconnect, not errors from connections that died with it; this backend does it without
        # the round trip of CONN_HEALTH_CHECKS when the connection is idle and unread.
        config["ENGINE"] = "gateway_project.postgres"
    config["OPTIONS"] = options
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", embedded_redis_url())
REDIS_EMBEDDED = not env_str("REDIS_URL", "")
# Limit counters may live on a Redis Cluster (`redis+cluster://host:port`); the rest needs one node.
GATEWAY_LIMITS_REDIS_URL = env_str("GATEWAY_LIMITS_REDIS_URL", REDIS_URL)
GATEWAY_REDIS_POOL_SIZE = env_int("GATEWAY_REDIS_POOL_SIZE", 64)


def _celery_url(redis_url: str) -> str:
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url.removeprefix("unix://")
    return redis_url


CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "gw",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            # A black-holed Redis must cost a control-plane request seconds, not a hang.
            "SOCKET_CONNECT_TIMEOUT": env_float("GATEWAY_REDIS_TIMEOUT", 2.0),
            "SOCKET_TIMEOUT": env_float("GATEWAY_REDIS_TIMEOUT", 2.0),
        },
    }
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", _celery_url(REDIS_URL))
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 100
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Logging is Django's LOGGING below in the worker and beat too (gateway_project/celery.py).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
# Times in UTC with the zone and seconds, numbers with separators (gateway_project/formats/).
FORMAT_MODULE_PATH = ["gateway_project.formats"]
USE_THOUSAND_SEPARATOR = True

STATIC_URL = "/static/"
STATIC_ROOT = var_dir() / "static"
GATEWAY_SERVE_STATIC = env_bool("GATEWAY_SERVE_STATIC", True)

SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = env_bool("GATEWAY_SECURE_COOKIES", PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
# Behind a TLS-terminating proxy: the header (and value) it sets on https requests, so Django
# knows they are secure (HSTS is only sent on secure requests).
SECURE_PROXY_SSL_HEADER = env_header("GATEWAY_SECURE_PROXY_SSL_HEADER")
SECURE_HSTS_SECONDS = env_int("GATEWAY_HSTS_SECONDS", 31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("GATEWAY_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("GATEWAY_HSTS_PRELOAD", False)

REST_FRAMEWORK = {
    # Every management view authenticates a workspace management key and checks its scope; the
    # public views (schema, reference page) say so explicitly.
    "DEFAULT_AUTHENTICATION_CLASSES": ["keys.authentication.ManagementKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["keys.authentication.ManagementScope"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "gateway_project.kernel.errors.drf_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "gateway_project.kernel.logs.JsonFormatter"}},
    # Buffered: one write per half second under load, WARNING and above at once.
    "handlers": {
        "console": {
            "class": "gateway_project.kernel.logs.BufferedStreamHandler",
            "formatter": "json",
        }
    },
    "root": {"handlers": ["console"], "level": env_str("GATEWAY_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # A worker's task is one `gateway.task` line; Celery's received/succeeded pair only when
        # something is wrong.
        "celery.app.trace": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
    },
}

# --- Gateway settings. Read at call time through django.conf.settings. ---
GATEWAY_UPSTREAM_ALLOWLIST = env_list("GATEWAY_UPSTREAM_ALLOWLIST", [])
GATEWAY_BASETEN_URL_TEMPLATE = env_str(
    "GATEWAY_BASETEN_URL_TEMPLATE",
    "https://model-{model_id}.api.baseten.co/environments/{environment_name}/sync/v1",
)
GATEWAY_OPENAI_BASE_URL = env_str("GATEWAY_OPENAI_BASE_URL", "https://api.openai.com/v1")
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 10 * 1024 * 1024)
GATEWAY_MAX_METADATA_BYTES = 4096
# What the gateway holds in memory from an upstream: a whole JSON answer, one SSE event.
GATEWAY_MAX_UPSTREAM_BODY_BYTES = env_int("GATEWAY_MAX_UPSTREAM_BODY_BYTES", 64 * 1024 * 1024)
GATEWAY_MAX_UPSTREAM_EVENT_BYTES = env_int("GATEWAY_MAX_UPSTREAM_EVENT_BYTES", 1024 * 1024)
# Bodies of every non-inference path (admin, management API), read at the ASGI edge; 413 above.
GATEWAY_MAX_CONTROL_BODY_BYTES = env_int("GATEWAY_MAX_CONTROL_BODY_BYTES", 2621440)
# Django's own limits follow it: a body within it is never refused later nor spooled to disk.
DATA_UPLOAD_MAX_MEMORY_SIZE = FILE_UPLOAD_MAX_MEMORY_SIZE = GATEWAY_MAX_CONTROL_BODY_BYTES
# Request line plus headers, enforced by gateway_project.worker.GatewayWorker (431 above).
GATEWAY_MAX_REQUEST_HEAD_BYTES = env_int("GATEWAY_MAX_REQUEST_HEAD_BYTES", 64 * 1024)
# Bearer token of /metrics; empty: only direct loopback clients may read it.
GATEWAY_METRICS_TOKEN = env_str("GATEWAY_METRICS_TOKEN", "")
# A Celery worker serves the billing pipeline's metrics on this port (all interfaces, same access
# rule as /metrics); 0, the default, serves none.
GATEWAY_WORKER_METRICS_PORT = env_int("GATEWAY_WORKER_METRICS_PORT", 0)
GATEWAY_DEFAULT_MAX_TOKENS = env_int("GATEWAY_DEFAULT_MAX_TOKENS", 4096)
# The largest completion cap a limited request may ask for (per choice); above it: 400.
GATEWAY_MAX_TOKENS_CEILING = env_int("GATEWAY_MAX_TOKENS_CEILING", 262_144)
# Prompt tokens reserved per image/audio/video/file part of a limited request, beyond its bytes.
GATEWAY_MEDIA_PART_TOKENS = env_int("GATEWAY_MEDIA_PART_TOKENS", 2048)
GATEWAY_LIMITS_FAIL_OPEN = env_bool("GATEWAY_LIMITS_FAIL_OPEN", False)
# Seconds one limits call (pool wait included) may take before Redis counts as unreachable.
GATEWAY_LIMITS_TIMEOUT = env_float("GATEWAY_LIMITS_TIMEOUT", 5.0)
# Seconds the record step's Redis round trip may take before its usage event is inserted directly.
GATEWAY_USAGE_RECORD_TIMEOUT = env_float("GATEWAY_USAGE_RECORD_TIMEOUT", 5.0)
# Both default to SECRET_KEY (what they always were); set them apart before changing SECRET_KEY.
GATEWAY_KEY_PEPPER = env_str("GATEWAY_KEY_PEPPER", SECRET_KEY)
GATEWAY_ENCRYPTION_KEY = env_str("GATEWAY_ENCRYPTION_KEY", SECRET_KEY)
# Earlier encryption keys: still decrypt, until `manage.py secrets_reencrypt` has moved everything.
GATEWAY_ENCRYPTION_KEYS_PREVIOUS = env_list("GATEWAY_ENCRYPTION_KEYS_PREVIOUS", [])
key_separation_check(
    secret_key=SECRET_KEY,
    fallbacks=SECRET_KEY_FALLBACKS,
    pepper=GATEWAY_KEY_PEPPER,
    encryption_key=GATEWAY_ENCRYPTION_KEY,
)
GATEWAY_KEY_CACHE_TTL = env_float("GATEWAY_KEY_CACHE_TTL", 30.0)
GATEWAY_UNKNOWN_KEY_CACHE_TTL = env_float("GATEWAY_UNKNOWN_KEY_CACHE_TTL", 2.0)
GATEWAY_CACHE_VERSION_POLL = env_float("GATEWAY_CACHE_VERSION_POLL", 0.5)
GATEWAY_UPSTREAM_CONNECT_TIMEOUT = env_float("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", 5.0)
# To the first byte of the last target a request may try (an endpoint may set its own); one with a
# target after it waits at most the FALLBACK one (routing/balancing.py, docs/inference.md).
GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT = env_float("GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT", 60.0)
GATEWAY_UPSTREAM_FALLBACK_FIRST_BYTE_TIMEOUT = env_float(
    "GATEWAY_UPSTREAM_FALLBACK_FIRST_BYTE_TIMEOUT", 20.0
)
# Circuit breaker per target (routing/circuit.py): consecutive failures that open it, seconds it
# stays open before one probe, seconds a worker trusts its copy of a closed breaker's state.
GATEWAY_CIRCUIT_FAILURES = env_int("GATEWAY_CIRCUIT_FAILURES", 5)
GATEWAY_CIRCUIT_COOLDOWN = env_float("GATEWAY_CIRCUIT_COOLDOWN", 10.0)
GATEWAY_CIRCUIT_STATE_TTL = env_float("GATEWAY_CIRCUIT_STATE_TTL", 1.0)
# After SIGTERM a node refuses new requests (503) and finishes running ones for at most this long.
GATEWAY_SHUTDOWN_TIMEOUT = shutdown_timeout()
GATEWAY_UPSTREAM_IDLE_TIMEOUT = env_float("GATEWAY_UPSTREAM_IDLE_TIMEOUT", 120.0)
GATEWAY_MAX_TARGETS = 4
GATEWAY_MAX_GROUP_DEPTH = 5
GATEWAY_EVENTS_HOLDBACK_SECONDS = env_int("GATEWAY_EVENTS_HOLDBACK_SECONDS", 60)
# Days of usage events kept on PostgreSQL: older daily partitions whose events are all final are
# dropped whole (billing/services/partitions.py); 0 keeps every event.
GATEWAY_EVENTS_RETENTION_DAYS = env_int("GATEWAY_EVENTS_RETENTION_DAYS", 400)
GATEWAY_WEBHOOK_BATCH_SIZE = 100
GATEWAY_WEBHOOK_FLUSH_SECONDS = env_float("GATEWAY_WEBHOOK_FLUSH_SECONDS", 5.0)
GATEWAY_WEBHOOK_TIMEOUT = env_float("GATEWAY_WEBHOOK_TIMEOUT", 15.0)
GATEWAY_WEBHOOK_SECRET_OVERLAP_HOURS = env_int("GATEWAY_WEBHOOK_SECRET_OVERLAP_HOURS", 24)
# PEM bundle webhook TLS is verified against; empty = the public CAs (certifi).
GATEWAY_WEBHOOK_CA_BUNDLE = env_str("GATEWAY_WEBHOOK_CA_BUNDLE", "")

# Usage events travel through a Redis stream; billing/services/ingest.py moves them into the DB.
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "usage-ingest": {"task": "billing.usage_ingest", "schedule": 1.0},
    # Requests of gateway workers that died mid-request (routing/journal.py).
    "inflight-reap": {"task": "routing.inflight_reap", "schedule": 5.0},
    # Federated keys' last use, noted at most once a minute per key (routing/activity.py).
    "keys-last-used": {"task": "routing.keys_last_used_sync", "schedule": 60.0},
}

# Webhook pipeline (billing/tasks.py): batch events, reclaim leases, enqueue due deliveries.
CELERY_BEAT_SCHEDULE["webhook-deliveries"] = {
    "task": "billing.deliveries_enqueue_due",
    "schedule": 1.0,
}
# Usage event partitions on PostgreSQL: created a week ahead, dropped after retention.
CELERY_BEAT_SCHEDULE["usage-event-partitions"] = {
    "task": "billing.events_partitions",
    "schedule": 3600.0,
}
# The usage dashboard's rollup of new events (billing/services/rollup.py).
CELERY_BEAT_SCHEDULE["usage-rollup"] = {"task": "billing.usage_rollup", "schedule": 60.0}
# Beat and worker liveness for the admin's billing health (billing/liveness.py).
CELERY_BEAT_SCHEDULE["billing-heartbeat"] = {"task": "billing.heartbeat", "schedule": 5.0}
# Federated keys whose revoke staff scheduled (a leaked key's rotation, keys/tasks.py).
CELERY_BEAT_SCHEDULE["keys-scheduled-revokes"] = {
    "task": "keys.scheduled_revokes",
    "schedule": 10.0,
}
# Billing health in the admin: a heartbeat older than this is red; the oldest pending delivery
# warns, then is red, past these ages; the ingest lag is red past its bound (all seconds).
GATEWAY_BILLING_HEARTBEAT_STALE_SECONDS = env_float("GATEWAY_BILLING_HEARTBEAT_STALE_SECONDS", 30.0)
GATEWAY_BILLING_PENDING_WARN_SECONDS = env_float("GATEWAY_BILLING_PENDING_WARN_SECONDS", 300.0)
GATEWAY_BILLING_PENDING_RED_SECONDS = env_float("GATEWAY_BILLING_PENDING_RED_SECONDS", 3600.0)
GATEWAY_BILLING_INGEST_LAG_RED_SECONDS = env_float("GATEWAY_BILLING_INGEST_LAG_RED_SECONDS", 60.0)
# Usage events waiting in the Redis stream past which the backlog is reported (metric and log);
# the gateway keeps recording: nothing is ever trimmed from the stream.
GATEWAY_USAGE_STREAM_HIGH_WATER = env_int("GATEWAY_USAGE_STREAM_HIGH_WATER", 1_000_000)
# How long the admin's "Resend" waits for a live worker's attempt before reporting it as queued.
GATEWAY_ADMIN_RESEND_WAIT_SECONDS = env_float("GATEWAY_ADMIN_RESEND_WAIT_SECONDS", 10.0)

# The management API's OpenAPI 3 schema (/v1/gateway/openapi.json) and its reference page.
SPECTACULAR_SETTINGS = {
    "TITLE": "Inference gateway management API",
    "DESCRIPTION": "Endpoints, groups, federated keys and legacy users.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its reference page are public: they describe the API, they expose no data.
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/v1/gateway",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "LimitTypeEnum": ["TOKEN", "REQUEST"],
        "UsageLimitTypeEnum": ["TOKEN", "REQUEST", "SPEND"],
        "RateLimitUnitEnum": ["SECOND", "MINUTE"],
        "UsageLimitUnitEnum": ["DAY", "MONTH"],
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "gateway_project.apidocs.schema_inputs_closed",
    ],
}
