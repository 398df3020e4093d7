"""The Ed25519 key that signs audit checkpoints, from configuration.

``AUDIT_SIGNING_KEY_FILE`` names a PEM file kept outside the database (DESIGN §5: a secret of
its own, never derived from another). The embedded default creates it in the instance folder,
readable by the owner only, the first time a checkpoint is signed; production must be given one
(``app.settings`` refuses to start without the setting) and never gets a key generated for it,
because a key nobody published would sign checkpoints nobody can check.
"""
from __future__ import annotations

import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import current_app

from app.audit import chain
from app.errors import AccordError

_cache: dict[tuple[str, int], Ed25519PrivateKey] = {}
_lock = threading.Lock()


class SigningKeyMissing(AccordError):
    status_code = 503
    code = "signing_key_missing"


def signing_key() -> Ed25519PrivateKey:
    """The configured checkpoint signing key, created on first use outside production."""
    path = Path(current_app.config["AUDIT_SIGNING_KEY_FILE"])
    with _lock:
        if not path.exists():
            if current_app.config.get("ENV_NAME") == "production":
                raise SigningKeyMissing(f"The audit signing key {path} does not exist: create it with "
                                        "`openssl genpkey -algorithm ed25519` and publish its public key.")
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                chain.generate_signing_key_file(path)
            except FileExistsError:  # another process created it meanwhile: use theirs
                pass
        cache_key = (str(path), path.stat().st_mtime_ns)
        key = _cache.get(cache_key)
        if key is None:
            key = _cache[cache_key] = chain.load_signing_key(path)
        return key


def public_key() -> Ed25519PublicKey:
    """The public half, which partners use to check checkpoints and exports."""
    return signing_key().public_key()


def public_key_pem() -> str:
    return chain.public_key_pem(signing_key())
