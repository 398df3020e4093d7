"""The keyring from configuration, in one place, so the web app, the CLI and the scheduler read
the same keys the same way.

``KEYRING`` (the JSON document itself, e.g. from a secret store) wins over ``KEYRING_FILE``.
Outside production a missing key file is created with one fresh key and owner-only permissions
on first use; production requires the file to exist. The file is read on every call, so a
rotation done by ``accord keys rotate`` reaches running web processes without a restart.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.transfers.keyring import Keyring, KeyringError, load_key_file, load_or_create_key_file


def keyring_for(config: Mapping[str, Any]) -> Keyring:
    """The keyring the configuration names; raise KeyringError saying what to set."""
    document = config.get("KEYRING")
    if document:
        return Keyring.from_json(document)
    path = config.get("KEYRING_FILE")
    if not path:
        raise KeyringError("no keyring is configured: set ACCORD_KEYRING_FILE (or ACCORD_KEYRING)")
    if config.get("ENV_NAME") == "production":
        return load_key_file(path)
    return load_or_create_key_file(path)


def key_file_for(config: Mapping[str, Any]) -> Path:
    """The key file a rotation rewrites; a keyring given as ``ACCORD_KEYRING`` text cannot be
    rewritten by Accord, so rotating it is refused with what to do instead."""
    if config.get("KEYRING"):
        raise KeyringError("the keyring comes from ACCORD_KEYRING, which Accord cannot rewrite: keep the keyring "
                           "in a file (ACCORD_KEYRING_FILE) to rotate it with `accord keys rotate`")
    path = config.get("KEYRING_FILE")
    if not path:
        raise KeyringError("no key file is configured: set ACCORD_KEYRING_FILE")
    return Path(path)
