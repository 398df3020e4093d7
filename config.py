"""Accord configuration: one class per environment, every value from the environment.

Secrets are separate values and never derived from one another (DESIGN §5): the session key,
the API token pepper, the key-encryption keyring, the audit HMAC key and the audit signing key.
In development and tests they default to files in the instance folder created on first use;
production refuses to start without them (see ``app.config_checks``).
"""
from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:  # pragma: no cover - a start-up configuration error
        raise RuntimeError(f"{name} must be a whole number, not {value!r}") from exc


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


class Config:
    """Defaults shared by every environment."""

    ENV_NAME = "base"
    TESTING = False
    DEBUG = False

    #: SQLAlchemy URL; empty means SQLite in the instance folder (the embedded default).
    SQLALCHEMY_DATABASE_URI = os.environ.get("ACCORD_DATABASE_URL", "")
    SQLALCHEMY_ENGINE_OPTIONS: dict = {}
    #: PostgreSQL: a pooled connection idle this long is checked before reuse (``app.database``).
    DATABASE_PING_AFTER_SECONDS = _env_int("ACCORD_DATABASE_PING_AFTER_SECONDS", 10)
    SQLALCHEMY_RECORD_QUERIES = False

    SECRET_KEY = os.environ.get("ACCORD_SECRET_KEY", "")
    TOKEN_PEPPER = os.environ.get("ACCORD_TOKEN_PEPPER", "")
    AUDIT_HMAC_KEY = os.environ.get("ACCORD_AUDIT_HMAC_KEY", "")
    #: Path of the Ed25519 key that signs audit checkpoints; default in the instance folder.
    AUDIT_SIGNING_KEY_FILE = os.environ.get("ACCORD_AUDIT_SIGNING_KEY_FILE", "")
    #: Keyring JSON (``{"current": id, "keys": {id: base64}}``) or the path of a key file.
    KEYRING = os.environ.get("ACCORD_KEYRING", "")
    KEYRING_FILE = os.environ.get("ACCORD_KEYRING_FILE", "")

    #: Folder holding taxonomy.yaml, kmisa.yaml and protocols/.
    POLICIES_DIR = os.environ.get("ACCORD_POLICIES_DIR", "")

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _env_bool("ACCORD_SECURE_COOKIES", False)
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    WTF_CSRF_ENABLED = True
    WTF_CSRF_TIME_LIMIT = None

    #: Failed sign-ins before an account locks, and for how long.
    LOGIN_MAX_FAILURES = _env_int("ACCORD_LOGIN_MAX_FAILURES", 5)
    LOGIN_LOCKOUT_MINUTES = _env_int("ACCORD_LOGIN_LOCKOUT_MINUTES", 15)

    #: Largest transfer payload accepted, in bytes (1 GiB by default).
    MAX_PAYLOAD_BYTES = _env_int("ACCORD_MAX_PAYLOAD_BYTES", 1024 * 1024 * 1024)
    #: Largest non-upload request body.
    MAX_FORM_BYTES = _env_int("ACCORD_MAX_FORM_BYTES", 1024 * 1024)

    #: API requests allowed per token, and per client address for requests without a valid token,
    #: as "N/second|minute|hour|day"; "off" turns a limit off. Counted per process unless
    #: RATELIMIT_STORAGE_URI names a shared store such as redis://host:6379.
    API_RATE_LIMIT = os.environ.get("ACCORD_API_RATE_LIMIT", "600/minute")
    API_ANONYMOUS_RATE_LIMIT = os.environ.get("ACCORD_API_ANONYMOUS_RATE_LIMIT", "60/minute")
    RATELIMIT_STORAGE_URI = os.environ.get("ACCORD_RATELIMIT_STORAGE_URI", "memory://")

    #: Run the scheduler inside the web process (the embedded default only).
    SCHEDULER_IN_PROCESS = _env_bool("ACCORD_SCHEDULER_IN_PROCESS", False)

    MAIL_SERVER = os.environ.get("ACCORD_SMTP_HOST", "")
    MAIL_PORT = _env_int("ACCORD_SMTP_PORT", 25)
    MAIL_USE_TLS = _env_bool("ACCORD_SMTP_STARTTLS", False)
    MAIL_USERNAME = os.environ.get("ACCORD_SMTP_USERNAME", "")
    MAIL_PASSWORD = os.environ.get("ACCORD_SMTP_PASSWORD", "")
    MAIL_FROM = os.environ.get("ACCORD_MAIL_FROM", "accord@localhost")

    #: ``json`` for one JSON object per log line (production), ``text`` otherwise.
    LOG_FORMAT = os.environ.get("ACCORD_LOG_FORMAT", "text")
    LOG_LEVEL = os.environ.get("ACCORD_LOG_LEVEL", "INFO")
    #: Log one line per request (method, path, status, duration, request id; never bodies).
    LOG_ACCESS = _env_bool("ACCORD_LOG_ACCESS", False)

    #: Shown in the header and in e-mails.
    SERVICE_NAME = os.environ.get("ACCORD_SERVICE_NAME", "Accord")
    #: The local time zone for display; everything is stored in UTC.
    DISPLAY_TIMEZONE = "Europe/London"


class DevelopmentConfig(Config):
    """The embedded default that ``make run`` uses: SQLite and generated secrets in the instance folder."""

    ENV_NAME = "development"
    SCHEDULER_IN_PROCESS = _env_bool("ACCORD_SCHEDULER_IN_PROCESS", True)


class TestConfig(Config):
    ENV_NAME = "test"
    TESTING = True
    WTF_CSRF_ENABLED = False
    SECRET_KEY = "test-session-key-not-secret"
    TOKEN_PEPPER = "test-token-pepper-not-secret"
    AUDIT_HMAC_KEY = "test-audit-key-not-secret"
    LOGIN_MAX_FAILURES = 5


class ProductionConfig(Config):
    """Production: PostgreSQL, secrets from the environment, secure cookies; nothing generated."""

    ENV_NAME = "production"
    LOG_FORMAT = os.environ.get("ACCORD_LOG_FORMAT", "json")
    LOG_ACCESS = _env_bool("ACCORD_LOG_ACCESS", True)
    SESSION_COOKIE_SECURE = _env_bool("ACCORD_SECURE_COOKIES", True)
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    PREFERRED_URL_SCHEME = "https"


CONFIGS = {
    "development": DevelopmentConfig,
    "test": TestConfig,
    "production": ProductionConfig,
}


def config_for(name: str | None = None) -> type[Config]:
    """The configuration class named by ``name`` or by ``ACCORD_ENV`` (development by default)."""
    name = name or os.environ.get("ACCORD_ENV", "development")
    try:
        return CONFIGS[name]
    except KeyError:  # pragma: no cover - a start-up configuration error
        raise RuntimeError(f"ACCORD_ENV must be one of {', '.join(CONFIGS)}, not {name!r}") from None
