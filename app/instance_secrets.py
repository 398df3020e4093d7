"""Secrets for the embedded default, generated once into the instance folder.

Each secret is independent random material (never derived from another), written with
owner-only permissions. Production never reaches this module: it must supply every secret
through the environment and refuses to start otherwise.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

#: Config keys generated for the embedded default, each its own random value.
GENERATED_SECRETS = ("SECRET_KEY", "TOKEN_PEPPER", "AUDIT_HMAC_KEY")


def load_or_create(path: Path) -> dict[str, str]:
    """The secrets stored at ``path``, creating the file (mode 0600) with fresh values if absent."""
    if path.exists():
        stored = json.loads(path.read_text())
    else:
        stored = {}
    missing = [name for name in GENERATED_SECRETS if not stored.get(name)]
    if missing:
        for name in missing:
            stored[name] = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(stored, handle, indent=2)
        os.replace(tmp, path)
    return stored
