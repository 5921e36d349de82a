"""Chorus settings: every value comes from the environment (CONTRACT §1).

This is the one module that reads os.environ. Defaults suit `make run` (SQLite, the
in-memory channel layer, one process); production sets DATABASE_URL and REDIS_URL.
"""

import os
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


# --- Core -----------------------------------------------------------------------------
DEBUG = env_bool("DJANGO_DEBUG", False)
_DEV_SECRET_KEY = "chorus-development-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _DEV_SECRET_KEY
if SECRET_KEY == _DEV_SECRET_KEY and not DEBUG and "pytest" not in sys.modules:
    warnings.warn(
        "DJANGO_SECRET_KEY is not set and DJANGO_DEBUG is off: using the development key. "
        "Set DJANGO_SECRET_KEY before exposing this server.",
        RuntimeWarning,
        stacklevel=1,
    )
ALLOWED_HOSTS = [
    h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if h.strip()
]

INSTALLED_APPS = [
    "daphne",  # serves `runserver` over ASGI
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",  # API tokens: stored hashed, expiring, one per device (CONTRACT §2)
    "channels",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, served locally: /api/docs/ works offline
    "realtime",
    "sessions_app",
    "completions",
    "webapp",  # the members' pages: /, /sessions/{id}/ (CONTRACT §6)
]

MIDDLEWARE = [
    # First, so that it sees every error response: API paths answer JSON, DEBUG or not.
    "sessions_app.exceptions.ApiErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A database that is down or stalled answers 503 JSON, not a traceback (faults).
    "config.middleware.DatabaseUnavailableMiddleware",
]

# Database sessions that refuse keys Django never issues (config/sessions.py says why).
SESSION_ENGINE = "config.sessions"

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

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
            ],
        },
    },
]

# --- Database: DATABASE_URL; SQLite tuned so concurrent writers wait instead of failing --
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 60),
        # Off by default: a health check is one more round trip at the start of every
        # request and of every stream's database call; a broken connection fails one
        # request and is then replaced (Django closes connections that raised errors).
        conn_health_checks=env_bool("DJANGO_CONN_HEALTH_CHECKS", False),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the writer; IMMEDIATE takes the write lock at BEGIN so
    # two writers queue on the busy timeout rather than deadlocking on lock upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # CHORUS_TEST_DB_NAME lets several test runs share one checkout without sharing a file.
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("CHORUS_TEST_DB_NAME") or str(BASE_DIR / "test_db.sqlite3")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Under ASGI every request runs its sync code in a thread of its own, so persistent
    # connections are never reused (each request paid a new PostgreSQL connection). A
    # pool (Django 5.1+, psycopg_pool) hands connections between threads instead.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("CHORUS_DB_POOL_MIN", 2),
        "max_size": env_int("CHORUS_DB_POOL_MAX", 24),
        "timeout": env_float("CHORUS_DB_POOL_TIMEOUT", 10),
    }
    # Faults: bounded waits on PostgreSQL. Connecting gives up after this long (libpq's
    # connect_timeout), and TCP keepalives and tcp_user_timeout notice a dead peer or a
    # lost network. Server processes also set statement_timeout (config.runtime), so a
    # stalled or locked database ends in a 503 rather than a request that hangs.
    DATABASES["default"]["OPTIONS"].update(
        {
            "connect_timeout": env_int("CHORUS_DB_CONNECT_TIMEOUT_SECONDS", 5),
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
        }
    )
    if env_bool("CHORUS_DB_PREPARED_STATEMENTS", True):
        # Server-side binding lets psycopg prepare a statement after its 5th run on a
        # connection; PostgreSQL then skips parsing and planning. Measured on the stream
        # opening query: 0.38 -> 0.09 ms of PostgreSQL CPU. Django leaves this off for
        # connection poolers: set CHORUS_DB_PREPARED_STATEMENTS=0 behind PgBouncer in
        # transaction mode (older than 1.21, or without max_prepared_statements).
        DATABASES["default"]["OPTIONS"]["server_side_binding"] = True
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 5
# Longest statement a server process may run on PostgreSQL (0: no limit); management
# commands (migrate, prune_events) are not bound by it.
CHORUS_DB_STATEMENT_TIMEOUT_MS = env_int("CHORUS_DB_STATEMENT_TIMEOUT_MS", 10_000)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer: REDIS_URL selects channels-redis; unset means one process only ------
# A comma-separated list shards the layer: channels-redis hashes each group and channel
# to one of the instances, so session groups spread over them (docs/scaling.md).
REDIS_URLS = [url.strip() for url in os.environ.get("REDIS_URL", "").split(",") if url.strip()]
REDIS_URL = REDIS_URLS[0] if REDIS_URLS else ""
# --- Faults: bounded waits on Redis (a frozen Redis must not hang requests or streams) --
# Connecting to Redis, and any one channel-layer call (a broadcast, a stream joining its
# session's group), give up after this long; the event is stored regardless and streams
# read what the channel layer lost from the database.
CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS = env_float("CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS", 2)
REDIS_SOCKET_OPTIONS = {
    "socket_connect_timeout": CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS,
    "socket_timeout": CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS,
    "socket_keepalive": True,
}
if REDIS_URLS:
    # The pub/sub layer: one PUBLISH per event, fanned out in each process. It may drop
    # messages while reconnecting; streams notice the gap by id and read the database.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": url, **REDIS_SOCKET_OPTIONS} for url in REDIS_URLS]},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 100_000, "expiry": 60},
        }
    }

# --- Auth and the API -------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"  # the members' session list (CONTRACT §2)
LOGOUT_REDIRECT_URL = "/accounts/login/"

REST_FRAMEWORK = {
    # Token first, so that an anonymous request gets 401 with WWW-Authenticate (not 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "sessions_app.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "sessions_app.pagination.StrictPageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "sessions_app.negotiation.ApiContentNegotiation",
    "EXCEPTION_HANDLER": "sessions_app.exceptions.api_exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# --- API tokens, login throttles, TLS behind a proxy (CONTRACT §2) ----------------------
# Tokens (django-rest-knox) are stored as SHA-512 digests and expire after this long.
CHORUS_TOKEN_TTL_SECONDS = env_int("CHORUS_TOKEN_TTL_SECONDS", 30 * 24 * 3600)
REST_KNOX = {"TOKEN_TTL": timedelta(seconds=CHORUS_TOKEN_TTL_SECONDS), "AUTH_HEADER_PREFIX": "Token"}
# Each process remembers a verified token this long, so a client's next requests cost no
# query (sessions_app.authentication). Revoking a token or changing a user's rights empties
# it at once everywhere; this bounds only a notice lost with Redis. 0 turns it off.
CHORUS_TOKEN_CACHE_SECONDS = env_float("CHORUS_TOKEN_CACHE_SECONDS", 30.0)
# Obtaining a token and the login form, per client address and per username (DRF rate
# strings); counters live in the default cache (Redis when REDIS_URL is set).
CHORUS_LOGIN_RATE_IP = os.environ.get("CHORUS_LOGIN_RATE_IP", "20/minute")
CHORUS_LOGIN_RATE_USER = os.environ.get("CHORUS_LOGIN_RATE_USER", "10/minute")
# The client address of a request is REMOTE_ADDR. uvicorn behind nginx on the same host
# already puts X-Forwarded-For there (--forwarded-allow-ips, 127.0.0.1 by default); daphne
# does not unless run with --proxy-headers: then set this to the number of proxies, and
# DRF reads the address from X-Forwarded-For instead.
if os.environ.get("CHORUS_NUM_PROXIES"):
    REST_FRAMEWORK["NUM_PROXIES"] = env_int("CHORUS_NUM_PROXIES", 0)
# How often each process re-checks that its open streams may still exist: one batched
# query over all of them. A backstop only: every revocation made through Chorus (logout,
# deactivation, a lost membership or staff status, a password change) rings each process
# at once; this catches what nobody announced (a token expiring, QuerySet.update). Every
# 5 s it was half the CPU of 3,000 idle streams (bench idle-3000: 20 -> 10 ms/s without it).
CHORUS_STREAM_REVALIDATE_SECONDS = env_float("CHORUS_STREAM_REVALIDATE_SECONDS", 15.0)

# Behind a TLS-terminating proxy (nginx) that sets X-Forwarded-Proto: trust it, mark the
# session and CSRF cookies Secure and send HSTS on HTTPS responses. Off by default: with
# plain HTTP (make run, tests) Secure cookies would never come back.
DJANGO_SECURE_PROXY_SSL_HEADER = env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False)
if DJANGO_SECURE_PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
    # Probes talk plain HTTP to the process itself, never through the proxy.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# The public origins (scheme://host[:port]) that forms are posted from, when they differ
# from the Host the proxy passes on, e.g. https://chorus.example.com.
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]
# `check --deploy` warnings silenced on purpose:
SILENCED_SYSTEM_CHECKS = [
    # W005/W021: HSTS for every subdomain, or on the browsers' preload list, commits the
    # whole domain to HTTPS: the domain owner's call (DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS,
    # DJANGO_SECURE_HSTS_PRELOAD), not a default this app can make.
    "security.W005",
    "security.W021",
    # W008: the proxy redirects http to https (README's nginx block); the app also answers
    # plain HTTP probes. DJANGO_SECURE_SSL_REDIRECT=1 makes Django redirect as well.
    "security.W008",
]

# --- API docs: the OpenAPI schema at /api/schema/, Swagger UI at /api/docs/ -------------
SPECTACULAR_SETTINGS = {
    "TITLE": "Chorus API",
    "DESCRIPTION": (
        "Real-time collaboration sessions. Everything that happens in a session is an event, streamed "
        "over Server-Sent Events at GET /sse/sessions/{id}/ (and polled at GET /api/v1/sessions/{id}/events/); "
        "the event envelope and each type's payload are the `Event` and `Event<Type>` schemas below."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # PATCH bodies as the views read them (`title` / `content` required), not all-optional.
    "COMPONENT_SPLIT_PATCH": False,
    "ENUM_NAME_OVERRIDES": {
        "SessionRoleEnum": "sessions_app.models.Role",
        "MessageRoleEnum": "sessions_app.models.MessageRole",
        "AddableRoleEnum": ["editor", "viewer"],
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "sessions_app.schema.add_event_components",
        "sessions_app.schema.add_error_responses",
    ],
}

# --- Realtime: the event stream (CONTRACT §1 and §5) ------------------------------------
CHORUS_KEEPALIVE_SECONDS = env_float("CHORUS_KEEPALIVE_SECONDS", 15)
CHORUS_STREAM_QUEUE_SIZE = env_int("CHORUS_STREAM_QUEUE_SIZE", 1000)
CHORUS_STREAM_MAX_SECONDS = env_float("CHORUS_STREAM_MAX_SECONDS", 3600)
CHORUS_HISTORY_MAX_EVENTS = env_int("CHORUS_HISTORY_MAX_EVENTS", 10_000)
CHORUS_EVENT_TTL_SECONDS = env_int("CHORUS_EVENT_TTL_SECONDS", 604_800)
CHORUS_STREAM_TICKET_SECONDS = 60
# How often each process compares the newest ids in the database with what its hub has
# delivered, to recover a last event whose channel-layer message was lost.
CHORUS_RECONCILE_SECONDS = env_float("CHORUS_RECONCILE_SECONDS", 2.0)
# Threads (and so at most this many database connections) per process for opening
# streams, replay and gap fills (realtime.db says why they are not Channels' one thread).
CHORUS_STREAM_DB_THREADS = env_int("CHORUS_STREAM_DB_THREADS", 4)
# A stream whose opening (authentication, newest id, first replay page) has not read the
# database after this long answers 503 (a stalled database).
CHORUS_STREAM_OPEN_TIMEOUT_SECONDS = env_float("CHORUS_STREAM_OPEN_TIMEOUT_SECONDS", 10)
# Events read per database round trip while replaying history to a reconnecting stream.
CHORUS_REPLAY_PAGE_SIZE = env_int("CHORUS_REPLAY_PAGE_SIZE", 1000)
# The model whose rows own event logs, and the rule that says who may read them: realtime
# depends on neither app directly, so sessions_app plugs itself in here.
CHORUS_EVENT_SOURCE_MODEL = "sessions_app.CollabSession"
CHORUS_STREAM_ACCESS_RULE = "sessions_app.selectors.stream_access"
# Called with each process's hub when it starts: the regeneration worker (cancel commands,
# lease renewal and the reaper) runs in every server process from then on.
CHORUS_HUB_START_HOOKS = [
    "sessions_app.regenerations.runner.hub_started",
    # Scheduled pruning (CHORUS_PRUNE_INTERVAL_SECONDS), one process at a time.
    "realtime.retention.hub_started",
]
# Every server process prunes the event log this often (TTL and per-session cap, one
# process at a time through a PostgreSQL advisory lock); 0 disables it (then run
# `manage.py prune_events` from cron).
CHORUS_PRUNE_INTERVAL_SECONDS = env_float("CHORUS_PRUNE_INTERVAL_SECONDS", 600)

# SIGTERM/SIGINT first drain (realtime.shutdown): these hooks run (async callables), then
# every stream ends; the whole drain takes at most CHORUS_SHUTDOWN_GRACE_SECONDS.
CHORUS_SHUTDOWN_HOOKS = [
    "sessions_app.regenerations.runner.shutdown_hook",
    # Open /v1/ completions end with an in-band "shutting down" and their log rows are
    # written before uvicorn's graceful timeout would cancel them (it sends lifespan
    # shutdown only once every connection has closed).
    "completions.asgi.completions_drain",
]
CHORUS_SHUTDOWN_GRACE_SECONDS = env_float("CHORUS_SHUTDOWN_GRACE_SECONDS", 5)

# The worker registry (realtime.workers): each process records a heartbeat this often
# (0 turns it off); one silent for STALE seconds is shown as gone and no longer counts,
# and its row is deleted after FORGET seconds.
CHORUS_WORKER_HEARTBEAT_SECONDS = env_float("CHORUS_WORKER_HEARTBEAT_SECONDS", 5)
CHORUS_WORKER_STALE_SECONDS = env_float("CHORUS_WORKER_STALE_SECONDS", 20)
CHORUS_WORKER_FORGET_SECONDS = env_float("CHORUS_WORKER_FORGET_SECONDS", 600)

# Young-generation threshold of Python's garbage collector in server processes
# (config.runtime.tune_garbage_collector says why); 0 keeps Python's default.
CHORUS_GC_GEN0_THRESHOLD = env_int("CHORUS_GC_GEN0_THRESHOLD", 50_000)

# --- Content limits ---------------------------------------------------------------------
CHORUS_MAX_MESSAGE_CHARS = env_int("CHORUS_MAX_MESSAGE_CHARS", 32_000)

# --- Regenerations: model providers, token coalescing, leases, throttles (CONTRACT §1) --
CHORUS_LLM_PROVIDER = os.environ.get("CHORUS_LLM_PROVIDER", "local")
CHORUS_LLM_BASE_URL = os.environ.get("CHORUS_LLM_BASE_URL", "")
CHORUS_LLM_API_KEY = os.environ.get("CHORUS_LLM_API_KEY", "")
CHORUS_LLM_MODEL = os.environ.get("CHORUS_LLM_MODEL", "gpt-4o-mini")
# Bounds connecting and each wait for the next bytes of an upstream stream.
CHORUS_LLM_TIMEOUT_SECONDS = env_float("CHORUS_LLM_TIMEOUT_SECONDS", 60)
CHORUS_LLM_SYSTEM_PROMPT = os.environ.get(
    "CHORUS_LLM_SYSTEM_PROMPT", "You are a helpful assistant in a team's shared conversation."
)
# The offline provider: pause before each token, and how many thought steps to show.
CHORUS_LOCAL_TOKEN_DELAY_MS = env_float("CHORUS_LOCAL_TOKEN_DELAY_MS", 30)
CHORUS_LOCAL_THOUGHT_STEPS = env_int("CHORUS_LOCAL_THOUGHT_STEPS", 3)
# Tokens gathered for at most this long go out as one regeneration_progress event.
CHORUS_PROGRESS_FLUSH_MS = env_float("CHORUS_PROGRESS_FLUSH_MS", 50)
# A running regeneration's process renews its lease this often; any process marks it
# failed once the lease is older than CHORUS_REGENERATION_LEASE_SECONDS.
CHORUS_REGENERATION_HEARTBEAT_SECONDS = env_float("CHORUS_REGENERATION_HEARTBEAT_SECONDS", 2)
CHORUS_REGENERATION_LEASE_SECONDS = env_float("CHORUS_REGENERATION_LEASE_SECONDS", 10)
# A run still going after this long is failed (a provider that never ends).
CHORUS_REGENERATION_MAX_SECONDS = env_float("CHORUS_REGENERATION_MAX_SECONDS", 600)
# Threads (and so database connections) per process for the runs' short writes.
CHORUS_REGENERATION_DB_THREADS = env_int("CHORUS_REGENERATION_DB_THREADS", 8)
# Starting regenerations, per user and per session (DRF rate strings: "N/second|minute|hour").
CHORUS_REGENERATION_RATE_USER = os.environ.get("CHORUS_REGENERATION_RATE_USER", "20/minute")
CHORUS_REGENERATION_RATE_SESSION = os.environ.get("CHORUS_REGENERATION_RATE_SESSION", "60/minute")
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {
    "regeneration_user": CHORUS_REGENERATION_RATE_USER,
    "regeneration_session": CHORUS_REGENERATION_RATE_SESSION,
}

# --- Presence, typing, read positions (CONTRACT §7) -------------------------------------
# A typing notice lasts this long unless renewed; clients renew about every third of it.
CHORUS_TYPING_EXPIRES_SECONDS = env_float("CHORUS_TYPING_EXPIRES_SECONDS", 6)
# Per-user limits (DRF rate strings; empty for none).
CHORUS_TYPING_RATE_USER = os.environ.get("CHORUS_TYPING_RATE_USER", "60/minute")
CHORUS_PRESENCE_RATE_USER = os.environ.get("CHORUS_PRESENCE_RATE_USER", "120/minute")
CHORUS_READ_POSITION_RATE_USER = os.environ.get("CHORUS_READ_POSITION_RATE_USER", "120/minute")
# --- The direct stream: /v1/, an OpenAI-compatible endpoint (CONTRACT §8, docs/openai.md) --
# Calls per user (a DRF rate string; empty: no limit), counted in the default cache.
CHORUS_COMPLETIONS_RATE_USER = os.environ.get("CHORUS_COMPLETIONS_RATE_USER", "60/minute")
# Completions one user may have open at once, cluster-wide (counted in the default cache).
CHORUS_COMPLETIONS_MAX_CONCURRENT = env_int("CHORUS_COMPLETIONS_MAX_CONCURRENT", 4)
# Largest request body accepted (413 above it), largest `max_tokens` (400 above it, and
# the default), and the longest a completion may run before it is ended.
CHORUS_COMPLETIONS_MAX_BODY_BYTES = env_int("CHORUS_COMPLETIONS_MAX_BODY_BYTES", 1_048_576)
CHORUS_COMPLETIONS_MAX_TOKENS = env_int("CHORUS_COMPLETIONS_MAX_TOKENS", 4096)
CHORUS_COMPLETIONS_MAX_SECONDS = env_float("CHORUS_COMPLETIONS_MAX_SECONDS", 300)
# With the `openai` provider: models exposed besides CHORUS_LLM_MODEL, as
# "name=upstream-model,..." (a name alone maps to itself).
CHORUS_COMPLETIONS_MODEL_MAP = os.environ.get("CHORUS_COMPLETIONS_MODEL_MAP", "")
# Threads (and so database connections) per process for the endpoint's database calls.
CHORUS_COMPLETIONS_DB_THREADS = env_int("CHORUS_COMPLETIONS_DB_THREADS", 3)

# --- Cache: throttle counters; shared through Redis when there are several processes ---
if REDIS_URL:
    # The first instance only: Django reads a list of locations as a primary and its
    # replicas, not as shards, and throttle counters must all live in one place. Fails
    # open (config.cache): a throttle counter lost while Redis is away beats a 500.
    CACHES = {
        "default": {
            "BACKEND": "config.cache.FailOpenRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": REDIS_SOCKET_OPTIONS,
            # Deployments (and test clusters) that share one Redis keep their counters apart.
            "KEY_PREFIX": os.environ.get("CHORUS_CACHE_KEY_PREFIX", ""),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Consistency and limits (README "Consistency and limits") ---------------------------
# Longest answer a regeneration may write (characters); the run then fails, keeping the text.
CHORUS_REGENERATION_MAX_CHARS = env_int("CHORUS_REGENERATION_MAX_CHARS", 100_000)
# Regenerations running at once per process (0: no limit); the others wait, queued.
CHORUS_REGENERATION_MAX_CONCURRENT = env_int("CHORUS_REGENERATION_MAX_CONCURRENT", 16)
# Open streams per user in one server process (0: no limit); more get 429 before starting.
CHORUS_STREAM_MAX_PER_USER = env_int("CHORUS_STREAM_MAX_PER_USER", 20)
# Message posts per user (a DRF rate string; empty: no limit), counted in the cache.
CHORUS_MESSAGE_RATE_USER = os.environ.get("CHORUS_MESSAGE_RATE_USER", "6000/minute")

# --- Performance (issue 12) -------------------------------------------------------------
# On PostgreSQL a message post (without "reply") and a regeneration's flush are one statement
# each (sessions_app.services, sessions_app.regenerations.services); 0 for the general path.
CHORUS_ONE_STATEMENT_WRITES = env_bool("CHORUS_ONE_STATEMENT_WRITES", True)
# Benchmark only (bench regenerations-200): the local provider streams this many tokens,
# each stamped with the time it left the provider. 0 (the default): its ordinary answers.
CHORUS_LOCAL_BENCH_TOKENS = env_int("CHORUS_LOCAL_BENCH_TOKENS", 0)

# --- Static files and i18n --------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The web app's stylesheet and ES modules (static/chorus/), served as they are: no build step.
STATICFILES_DIRS = [BASE_DIR / "static"]
# Django serves /static/ itself when there is no proxy in front (`make run`, the browser
# tests' server processes); in production the proxy serves STATIC_ROOT (collectstatic).
CHORUS_SERVE_STATIC = env_bool("CHORUS_SERVE_STATIC", DEBUG)
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("CHORUS_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

# --- Operations: the staff console at /ops/ and its audit log (ops app) ------------------
INSTALLED_APPS += ["ops"]
# How often the console's page asks for fresh figures (it pauses while the tab is hidden).
CHORUS_OPS_POLL_SECONDS = env_float("CHORUS_OPS_POLL_SECONDS", 5)
# Where the console's "recent errors" come from: functions (since, limit) -> [ops.selectors.ErrorItem].
CHORUS_OPS_ERROR_SOURCES = [
    "ops.selectors.errors_failed_regenerations",
    "ops.selectors.errors_regeneration_events",
    "ops.selectors.errors_failed_completions",  # the /v1/ generation log, when that app is installed
]
