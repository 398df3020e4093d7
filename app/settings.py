"""Filling in configuration the embedded default can generate, and refusing what production lacks."""
from __future__ import annotations

from pathlib import Path

from flask import Flask
from pydantic_core import from_json, to_json

from app import instance_secrets

#: Secrets production must be given; never generated or derived there.
REQUIRED_IN_PRODUCTION = ("SQLALCHEMY_DATABASE_URI", "SECRET_KEY", "TOKEN_PEPPER", "AUDIT_HMAC_KEY")


class ConfigurationError(RuntimeError):
    """The app cannot start safely with this configuration."""


def complete(app: Flask) -> None:
    instance = Path(app.instance_path)
    production = app.config["ENV_NAME"] == "production"
    if production:
        missing = [name for name in REQUIRED_IN_PRODUCTION if not app.config.get(name)]
        if not (app.config.get("KEYRING") or app.config.get("KEYRING_FILE")):
            missing.append("KEYRING (ACCORD_KEYRING or ACCORD_KEYRING_FILE)")
        if not app.config.get("AUDIT_SIGNING_KEY_FILE"):
            missing.append("AUDIT_SIGNING_KEY_FILE")
        if missing:
            raise ConfigurationError(
                "Accord will not start in production without: " + ", ".join(missing)
                + ". Set them in the environment (see README, Configuration)."
            )
    else:
        if not app.config.get("SQLALCHEMY_DATABASE_URI"):
            instance.mkdir(parents=True, exist_ok=True)
            app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{instance / 'accord.sqlite3'}"
        missing = [n for n in instance_secrets.GENERATED_SECRETS if not app.config.get(n)]
        if missing:
            generated = instance_secrets.load_or_create(instance / "secrets.json")
            for name in missing:
                app.config[name] = generated[name]
        app.config.setdefault("KEYRING_FILE", "")
        if not app.config.get("KEYRING") and not app.config.get("KEYRING_FILE"):
            app.config["KEYRING_FILE"] = str(instance / "keyring.json")
        if not app.config.get("AUDIT_SIGNING_KEY_FILE"):
            app.config["AUDIT_SIGNING_KEY_FILE"] = str(instance / "audit-signing-key.pem")
    if not app.config.get("POLICIES_DIR"):
        app.config["POLICIES_DIR"] = str(Path(app.root_path).parent / "policies")
    # Every request body is limited to the form size; only the transfer uploads raise the limit,
    # per request, to MAX_PAYLOAD_BYTES, and they read the body as a stream (app.transfers.streaming).
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_FORM_BYTES"]
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("postgres://"):
        uri = "postgresql://" + uri[len("postgres://"):]
    if uri.startswith("postgresql://"):
        uri = "postgresql+psycopg://" + uri[len("postgresql://"):]
    app.config["SQLALCHEMY_DATABASE_URI"] = uri
    if uri.startswith("postgresql+psycopg://"):
        options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        connect_args = dict(options.get("connect_args") or {})
        # Prepare each statement on its first execution, not its sixth: psycopg forgets every
        # prepared statement of a connection when a transaction on it rolls back (every dry-run
        # check and every read ends so), and at its default threshold most of the hot statements
        # were parsed and planned anew each time.
        connect_args.setdefault("prepare_threshold", 0)
        options["connect_args"] = connect_args
        # JSON columns (an exchange's request and decision, ~6 KB a submission) encoded and read by
        # pydantic-core instead of the standard library: the decision took the standard encoder
        # 34 us, pydantic-core 12. The same JSON text but for spaces (PostgreSQL's json type keeps
        # the text as sent); audit details keep their canonical encoder (app.audit.models).
        options.setdefault("json_serializer", to_json)
        options.setdefault("json_deserializer", from_json)
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options
