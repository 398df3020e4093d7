"""The keyring of key-encryption keys (KEKs) that wrap each transfer's data key, kept outside the
database so that a copy of the database alone cannot decrypt any transfer.

Keys are named by key ids stored beside each wrapped data key. Rotation adds a new current key,
re-wraps the data keys under it (the payloads are not re-encrypted) and then retires the old key.
The keyring is immutable: rotation returns a new keyring, which the caller saves.

Pure apart from the key-file functions at the bottom: no Flask, no database, no clock.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .cipher import DATA_KEY_SIZE, TransferCryptoError

__all__ = [
    "KEY_SIZE",
    "KeyUnwrapFailed",
    "Keyring",
    "KeyringError",
    "UnknownKeyId",
    "WrappedKey",
    "load_key_file",
    "load_or_create_key_file",
    "new_key_id",
    "save_key_file",
]

KEY_SIZE = 32
# Bump the label, never reuse it, if the wrapping format ever changes.
_WRAP_AAD_LABEL = b"accord-data-key-wrap-v1"
_NONCE_SIZE = 12
_TAG_SIZE = 16
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_OWNER_ONLY = 0o600
_DOCUMENT_SHAPE = '{"current": "<key id>", "keys": {"<key id>": "<base64 of 32 bytes>"}}'


class KeyringError(TransferCryptoError):
    """The keyring or its key file is unusable; the message says what to fix."""


class UnknownKeyId(TransferCryptoError):
    """A wrapped data key names a key id that this keyring does not hold (retired or never
    loaded)."""


class KeyUnwrapFailed(TransferCryptoError):
    """A wrapped data key did not authenticate: altered, or belonging to another transfer."""


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A transfer's data key sealed under the KEK named by ``key_id``; blob = nonce || ciphertext
    and tag."""

    key_id: str
    blob: bytes


def new_key_id() -> str:
    """Return a fresh random key id; random rather than dated so that no clock is read."""
    return "k-" + secrets.token_hex(6)


class Keyring:
    """An immutable set of KEKs by key id, one of which is current and used for new wraps."""

    __slots__ = ("_keys", "_current_key_id")

    _keys: Mapping[str, bytes]
    _current_key_id: str

    def __init__(self, keys: Mapping[str, bytes], current_key_id: str) -> None:
        for key_id, key in keys.items():
            _check_key_id(key_id)
            if not isinstance(key, bytes) or len(key) != KEY_SIZE:
                raise KeyringError(f"key {key_id!r} must be exactly {KEY_SIZE} bytes")
        if current_key_id not in keys:
            raise KeyringError(
                f"the current key id {current_key_id!r} is not among the keys; "
                "set 'current' to one of the key ids"
            )
        object.__setattr__(self, "_keys", MappingProxyType(dict(keys)))
        object.__setattr__(self, "_current_key_id", current_key_id)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Keyring is immutable; use with_new_key() or without()")

    def __repr__(self) -> str:
        # Key ids only: a keyring must never print its key material into a log.
        return f"Keyring(current={self._current_key_id!r}, key_ids={list(self.key_ids)!r})"

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    @classmethod
    def generate(cls) -> Keyring:
        """Return a keyring holding one freshly generated key."""
        key_id = new_key_id()
        return cls({key_id: AESGCM.generate_key(bit_length=256)}, key_id)

    @property
    def current_key_id(self) -> str:
        return self._current_key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    # -- wrapping -------------------------------------------------------------------------------

    def wrap(self, data_key: bytes, transfer_id: str) -> WrappedKey:
        """Seal a transfer's data key under the current KEK."""
        if len(data_key) != DATA_KEY_SIZE:
            raise ValueError(f"a data key must be {DATA_KEY_SIZE} bytes, got {len(data_key)}")
        key_id = self._current_key_id
        # A random nonce is fine here: one wrap per transfer (and per rotation) stays far below
        # the 2**32 random-nonce messages per key that NIST SP 800-38D allows.
        nonce = secrets.token_bytes(_NONCE_SIZE)
        sealed = AESGCM(self._keys[key_id]).encrypt(nonce, data_key, _wrap_aad(transfer_id, key_id))
        return WrappedKey(key_id=key_id, blob=nonce + sealed)

    def unwrap(self, wrapped: WrappedKey, transfer_id: str) -> bytes:
        """Return the data key; the associated data makes a wrapped key fail if it is moved to
        another transfer or relabelled with another key id."""
        kek = self._keys.get(wrapped.key_id)
        if kek is None:
            raise UnknownKeyId(
                f"key id {wrapped.key_id!r} is not in the keyring: the keyring lacks it "
                "(was it retired before every data key was re-wrapped?)"
            )
        blob = bytes(wrapped.blob)
        failure = KeyUnwrapFailed(
            f"the data key wrapped under key id {wrapped.key_id!r} failed authentication "
            "for this transfer"
        )
        if len(blob) != _NONCE_SIZE + DATA_KEY_SIZE + _TAG_SIZE:
            raise failure
        nonce, sealed = blob[:_NONCE_SIZE], blob[_NONCE_SIZE:]
        try:
            return AESGCM(kek).decrypt(nonce, sealed, _wrap_aad(transfer_id, wrapped.key_id))
        except InvalidTag:
            raise failure from None

    def rewrap(self, wrapped: WrappedKey, transfer_id: str) -> WrappedKey:
        """Return the data key wrapped under the current KEK; a key already under it is returned
        unchanged (after checking it unwraps), so a rotation job can be re-run."""
        data_key = self.unwrap(wrapped, transfer_id)
        if wrapped.key_id == self._current_key_id:
            return wrapped
        return self.wrap(data_key, transfer_id)

    # -- rotation -------------------------------------------------------------------------------

    def with_new_key(self) -> tuple[Keyring, str]:
        """Return a keyring with a freshly generated key made current, and that key's id."""
        key_id = new_key_id()
        while key_id in self._keys:  # 48 random bits: a clash is theoretical, but cheap to rule out
            key_id = new_key_id()
        keys = dict(self._keys)
        keys[key_id] = AESGCM.generate_key(bit_length=256)
        return Keyring(keys, key_id), key_id

    def without(self, key_id: str) -> Keyring:
        """Return a keyring with a retired key removed. Any data key still wrapped under it
        becomes unreadable, so re-wrap first."""
        if key_id not in self._keys:
            raise UnknownKeyId(f"key id {key_id!r} is not in the keyring: the keyring lacks it")
        if key_id == self._current_key_id:
            raise KeyringError(
                f"key id {key_id!r} is the current key and cannot be removed; "
                "add a new key with with_new_key() and re-wrap first"
            )
        return Keyring({k: v for k, v in self._keys.items() if k != key_id}, self._current_key_id)

    # -- serialisation --------------------------------------------------------------------------

    @classmethod
    def from_json(cls, text: str) -> Keyring:
        """Parse the keyring document ``{"current": ..., "keys": {...}}``; raise KeyringError
        saying what to fix. Messages never quote key material."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyringError(
                f"the keyring is not valid JSON (line {exc.lineno}, column {exc.colno}); "
                f"expected {_DOCUMENT_SHAPE}"
            ) from None
        return cls._from_document(document)

    @classmethod
    def _from_document(cls, document: Any) -> Keyring:
        if not isinstance(document, dict) or set(document) != {"current", "keys"}:
            raise KeyringError(
                f"the keyring must be an object with exactly the fields 'current' and 'keys': "
                f"{_DOCUMENT_SHAPE}"
            )
        encoded_keys = document["keys"]
        if not isinstance(encoded_keys, dict) or not encoded_keys:
            raise KeyringError("'keys' must be a non-empty object mapping key ids to base64 keys")
        current = document["current"]
        if not isinstance(current, str):
            raise KeyringError("'current' must be a key id string")
        keys = {key_id: _decode_key(key_id, value) for key_id, value in encoded_keys.items()}
        return cls(keys, current)

    def to_json(self) -> str:
        """Return the keyring document, with sorted keys so that re-saving is deterministic."""
        document = {
            "current": self._current_key_id,
            "keys": {
                key_id: base64.b64encode(self._keys[key_id]).decode("ascii")
                for key_id in self.key_ids
            },
        }
        return json.dumps(document, indent=2) + "\n"


def _wrap_aad(transfer_id: str, key_id: str) -> bytes:
    # Length-prefixed fields, so no two (transfer id, key id) pairs encode to the same bytes.
    fields = [_WRAP_AAD_LABEL]
    for value in (transfer_id, key_id):
        encoded = value.encode("utf-8")
        fields.append(struct.pack(">I", len(encoded)) + encoded)
    return b"".join(fields)


def _check_key_id(key_id: object) -> None:
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise KeyringError(
            f"key id {key_id!r} is not valid: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _decode_key(key_id: str, value: object) -> bytes:
    _check_key_id(key_id)
    fix = f"set it to the base64 of {KEY_SIZE} random bytes"
    if not isinstance(value, str):
        raise KeyringError(f"key {key_id!r} must be a base64 string; {fix}")
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"key {key_id!r} is not valid base64; {fix}") from None
    if len(key) != KEY_SIZE:
        raise KeyringError(f"key {key_id!r} decodes to {len(key)} bytes, not {KEY_SIZE}; {fix}")
    return key


# -- key files ----------------------------------------------------------------------------------


def load_key_file(path: str | os.PathLike[str]) -> Keyring:
    """Load a keyring from a key file, refusing one that group or others may access."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            # fstat on the open file, not stat on the path, so the file checked is the file read.
            _check_owner_only(path, os.fstat(handle.fileno()))
            raw = handle.read()
    except FileNotFoundError:
        raise KeyringError(f"key file {path} does not exist") from None
    try:
        return Keyring.from_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise KeyringError(f"key file {path} is not UTF-8 text; expected {_DOCUMENT_SHAPE}") from None
    except KeyringError as exc:
        raise KeyringError(f"key file {path}: {exc}") from None


def save_key_file(path: str | os.PathLike[str], keyring: Keyring) -> None:
    """Write the keyring atomically with owner-only permissions, replacing any existing file."""
    path = Path(path)
    temporary = _write_temporary(path, keyring)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def load_or_create_key_file(path: str | os.PathLike[str]) -> Keyring:
    """Load the embedded default key file, creating it with one fresh key on first use.

    Creation never overwrites: the complete file is linked into place only if no file is there,
    so two processes starting together end up sharing the same key rather than one of them
    wrapping data keys under a key the other then replaces.
    """
    path = Path(path)
    if path.exists():
        return load_key_file(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = _write_temporary(path, Keyring.generate())
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process created it first; use theirs
    finally:
        temporary.unlink(missing_ok=True)
    _sync_directory(path.parent)
    return load_key_file(path)


def _check_owner_only(path: Path, status: os.stat_result) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise KeyringError(f"key file {path} is not a regular file")
    # Windows has no POSIX group/other bits; there the file's ACL is the operator's concern.
    if os.name == "posix" and status.st_mode & 0o077:
        raise KeyringError(
            f"key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(status.st_mode):04o}); run: chmod 600 {path}"
        )


def _write_temporary(path: Path, keyring: Keyring) -> Path:
    """Write the keyring to a new owner-only file beside ``path`` (same directory, so the final
    rename or link is atomic) and return its path."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # Created 0o600 from the start: the key material is never in a file others could open.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _OWNER_ONLY)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if os.name == "posix":
                os.fchmod(handle.fileno(), _OWNER_ONLY)  # exact mode whatever the umask
            handle.write(keyring.to_json().encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _sync_directory(directory: Path) -> None:
    # Make the rename durable; directories cannot be opened for syncing on Windows.
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
