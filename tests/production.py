"""The app as production configures it (secrets given, nothing generated), on a test database."""
from __future__ import annotations

from pathlib import Path

from config import TestConfig


def production_app(database_url: str, tmp: Path, **overrides):
    from app import create_app

    return create_app("production", SQLALCHEMY_DATABASE_URI=database_url, SECRET_KEY=TestConfig.SECRET_KEY,
                      TOKEN_PEPPER=TestConfig.TOKEN_PEPPER, AUDIT_HMAC_KEY=TestConfig.AUDIT_HMAC_KEY,
                      KEYRING_FILE=str(tmp / "keyring.json"), AUDIT_SIGNING_KEY_FILE=str(tmp / "audit-signing-key.pem"),
                      **overrides)
