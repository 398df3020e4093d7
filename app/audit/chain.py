"""Tamper-evident audit chain: the pure core, shared by Accord and by anyone verifying an export.

It imports only the standard library (Python 3.11+) and ``cryptography``, so that a partner or
the ICO can copy this one file and run ``python chain.py verify EXPORT.json --public-key
KEY.pem`` without Accord (in Accord: ``python -m app.audit.chain verify ...``). It knows nothing
of Flask, the database or the clock: callers pass times in.

Format, version 1 (precise enough to re-implement)
==================================================

Event hash
    ``hash`` is the lowercase hex SHA-256 of the *canonical bytes* of the event: the UTF-8
    encoding of a JSON object with exactly these ten members::

        v             the integer 1 (format version)
        seq           integer; 1 for the first event, then one more for each event, no gaps
        prev_hash     the previous event's hash; for event 1, sixty-four "0" characters
        occurred_at   string "YYYY-MM-DDTHH:MM:SS.ffffffZ": UTC, always six fractional digits
        action        string, e.g. "decision.recorded"
        actor         string or null
        organisation  string or null
        subject_type  string or null
        subject_id    string or null
        details       object: string keys; values are objects, arrays, strings, integers,
                      finite floats, true, false or null (never NaN or Infinity)

    Serialisation rules, at every level: no whitespace anywhere (``,`` and ``:`` separators);
    object members sorted by key, comparing keys code point by code point (not by UTF-16 code
    unit); strings written as they are, non-ASCII included, except that ``"`` and ``\\`` are
    backslash-escaped, U+0008, U+000C, U+000A, U+000D and U+0009 are written ``\\b \\f \\n \\r \\t``
    and every other character below U+0020 as ``\\u00xx`` with lowercase hex; integers in
    decimal; floats in Python's ``repr`` form (shortest round trip: ``0.1``, ``1.0``,
    ``1e+16``) — Accord writes no floats, so other implementations rarely meet one. In Python
    this is exactly ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False, allow_nan=False).encode("utf-8")``.

Event mac
    ``mac`` is the lowercase hex HMAC-SHA-256, keyed with Accord's secret audit key, of
    ``b"accord-audit-mac-v1:"`` followed by the ASCII bytes of ``hash``. The hash is public so
    that anyone can recompute the chain; the mac stops someone who can write to the database but
    does not hold the key from rewriting history with recomputed hashes.

Checkpoint
    ``signature`` is the hex Ed25519 signature over the canonical bytes (same rules) of
    ``{"v": 1, "type": "accord-audit-checkpoint", "seq": s, "head_hash": h, "signed_at": t,
    "key_id": k}``, where ``h`` is the hash of event ``s``, ``t`` a timestamp as above and ``k``
    the first 16 hex digits of the SHA-256 of the raw 32-byte public key. Whoever holds the
    published public key can check that the chain still reaches event ``s`` with hash ``h``,
    which exposes a truncated tail and a history rewritten even by someone holding the audit key.

Export document
    ``{"events": [event, ...], "checkpoint": checkpoint or null, "public_key_pem": "..."}``;
    an event is ``{"seq", "occurred_at", "action", "actor", "organisation", "subject_type",
    "subject_id", "details", "prev_hash", "hash", "mac"}`` and a checkpoint is ``{"seq",
    "head_hash", "signed_at", "key_id", "signature"}``, timestamps written as above.

Verification order, per event: sequence number, link to the previous hash, content hash, mac,
then the checkpoint; the first failure is reported and verification stops.
"""

from __future__ import annotations

import argparse
import enum
import hashlib
import hmac
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "CHECKPOINT_TYPE",
    "ChainEvent",
    "FORMAT_VERSION",
    "GENESIS_HASH",
    "MAC_PREFIX",
    "Checkpoint",
    "EventRecord",
    "Problem",
    "ROW_COLUMNS",
    "VerifyReport",
    "canonical_bytes",
    "compute_mac",
    "export_document",
    "format_timestamp",
    "generate_signing_key_file",
    "key_id_for",
    "load_export",
    "load_public_key_pem",
    "load_signing_key",
    "main",
    "parse_timestamp",
    "public_key_pem",
    "seal",
    "draft",
    "Draft",
    "sign_checkpoint",
    "joined_report",
    "verify_chain",
    "verify_checkpoint",
    "verify_rows",
]

FORMAT_VERSION = 1
GENESIS_HASH = "0" * 64
MAC_PREFIX = b"accord-audit-mac-v1:"
CHECKPOINT_TYPE = "accord-audit-checkpoint"
#: How often ``verify_chain`` reports progress, in events.
PROGRESS_EVERY = 10_000
#: Shorter audit keys are refused: a guessable key would let anyone recompute the macs.
MIN_KEY_BYTES = 16

_UTC = timezone.utc
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP_FORMAT = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"
# The very string escaper json.dumps uses with ensure_ascii=False (the C one when available).
_encode_str = json.encoder.encode_basestring
_DETAILS_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _make_details_encoder() -> Callable[[Any], str]:
    """Return a callable equal to ``_DETAILS_ENCODER.encode`` but built once, because
    ``JSONEncoder.encode`` rebuilds the C encoder on every call and verification calls it a
    million times. Circular-reference tracking is off (it would be shared state between
    threads); a cycle cannot come from stored JSON and fails with RecursionError anyway. Any
    doubt about the C encoder (another Python, another signature) falls back to the plain one."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _DETAILS_ENCODER.encode
    try:
        encode_chunks = make(
            None, _DETAILS_ENCODER.default, _encode_str, None, ":", ",", True, False, False
        )

        def encode(value: Any) -> str:
            return "".join(encode_chunks(value, 0))

        sample = {"é": [1.5, -2, True, None, "\u2028\n\""], "a": {"z": 10**20, "b": 0.1}}
        if encode(sample) == _DETAILS_ENCODER.encode(sample):
            return encode
    except Exception:  # noqa: BLE001  # any failure means: use the documented path
        pass
    return _DETAILS_ENCODER.encode


_encode_details = _make_details_encoder()


class Problem(enum.StrEnum):
    """The stable codes of what verification can find; they appear in reports and exports."""

    HASH_MISMATCH = "hash_mismatch"
    MAC_MISMATCH = "mac_mismatch"
    BROKEN_LINK = "broken_link"
    GAP = "gap"
    DUPLICATE_SEQ = "duplicate_seq"
    OUT_OF_ORDER = "out_of_order"
    MALFORMED_EVENT = "malformed_event"
    TRUNCATED = "truncated"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    CHECKPOINT_SIGNATURE_INVALID = "checkpoint_signature_invalid"
    EMPTY_BUT_CHECKPOINTED = "empty_but_checkpointed"


# --------------------------------------------------------------------------- timestamps


def format_timestamp(value: datetime) -> str:
    """Write ``value`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC; a naive datetime is taken to be
    UTC already, because that is how the databases hand them back."""
    if not isinstance(value, datetime):
        raise ValueError(f"a timestamp must be a datetime, not {type(value).__name__}")
    return _timestamp_text(value)


def parse_timestamp(text: str) -> datetime:
    """Read a timestamp from an export as an aware UTC datetime (naive text is taken as UTC)."""
    if not isinstance(text, str):
        raise ValueError(f"a timestamp must be a string, not {type(text).__name__}")
    return _as_utc(datetime.fromisoformat(text))


def _as_utc(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise ValueError(f"a timestamp must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        return value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)


def _timestamp_text(value: datetime) -> str:
    """``format_timestamp`` without the type check, for the verification loop. %-formatting the
    fields costs two thirds of an aware ``isoformat``, and naive or ``timezone.utc`` values (what
    the databases return) need no conversion."""
    tz = value.tzinfo
    if tz is not None and tz is not _UTC:
        offset = value.utcoffset()
        if offset:
            try:
                value = value.replace(tzinfo=None) - offset
            except OverflowError as exc:
                raise ValueError(f"timestamp {value} is out of range in UTC") from exc
    return _TIMESTAMP_FORMAT % (
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )


# --------------------------------------------------------------------------- canonical form


def canonical_bytes(
    seq: int,
    prev_hash: str,
    occurred_at: datetime,
    action: str,
    actor: str | None,
    organisation: str | None,
    subject_type: str | None,
    subject_id: str | None,
    details: dict[str, Any],
) -> bytes:
    """Return the bytes an event's hash covers (format in the module docstring); anything that
    would not survive a round trip through JSON unchanged is refused with ValueError, because
    its hash could then not be recomputed from the stored row."""
    _check_place(seq, prev_hash, subject_id)
    _check_members(action, actor, organisation, subject_type, details)
    head = _head_text(format_timestamp(occurred_at), action, actor, organisation, _encoded_details(details))
    return _utf8(head + _place_text(seq, prev_hash, subject_id) + _tail_text(subject_type))


def _check_place(seq: int, prev_hash: str, subject_id: str | None) -> None:
    if type(seq) is not int or seq < 1:
        raise ValueError(f"seq must be an integer from 1, not {seq!r}")
    if not isinstance(prev_hash, str) or not _HEX64.fullmatch(prev_hash):
        raise ValueError(f"prev_hash must be 64 lowercase hex characters, not {prev_hash!r}")
    if subject_id is not None and not isinstance(subject_id, str):
        raise ValueError(f"subject_id must be a string or None, not {type(subject_id).__name__}")


def _check_members(action: str, actor: str | None, organisation: str | None, subject_type: str | None,
                   details: dict[str, Any]) -> None:
    if not isinstance(action, str) or not action:
        raise ValueError(f"action must be a non-empty string, not {action!r}")
    for name, value in (("actor", actor), ("organisation", organisation), ("subject_type", subject_type)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string or None, not {type(value).__name__}")
    if not isinstance(details, dict):
        raise ValueError(f"details must be a dict, not {type(details).__name__}")
    _check_json_keys(details)


def _encoded_details(details: dict[str, Any]) -> str:
    try:
        return _encode_details(details)
    except ValueError as exc:  # allow_nan=False
        raise ValueError(f"details must not contain NaN or infinite numbers ({exc})") from exc
    except TypeError as exc:
        raise ValueError(f"details must hold only JSON values ({exc})") from exc
    except RecursionError as exc:
        raise ValueError("details must not refer to themselves") from exc


def _canonical_text(
    seq: int,
    prev_hash: str,
    occurred_at: str,
    action: str,
    actor: str | None,
    organisation: str | None,
    subject_type: str | None,
    subject_id: str | None,
    details: Any,
) -> str:
    """Build the canonical JSON by hand for speed; the top-level members are written in their
    sorted order and the tests prove the result equal to the ``json.dumps`` definition.
    ``occurred_at`` is already formatted and ``prev_hash`` already known to be hex."""
    e = _encode_str
    # _place_text and _tail_text written out: this runs once per event verified.
    return (
        f'{_head_text(occurred_at, action, actor, organisation, _encode_details(details))}{prev_hash}"'
        f',"seq":{seq}'
        f',"subject_id":{"null" if subject_id is None else e(subject_id)}'
        f',"subject_type":{"null" if subject_type is None else e(subject_type)}'
        f',"v":{FORMAT_VERSION}}}'
    )


# The canonical text in three parts: the members before ``prev_hash``'s value, the event's place
# in the chain (``prev_hash``, ``seq``) with ``subject_id``, and the rest. A draft (``draft``) is
# the first and last, written before its transaction holds the chain's lock.


def _head_text(occurred_at: str, action: str, actor: str | None, organisation: str | None, details: str) -> str:
    e = _encode_str
    return (
        f'{{"action":{e(action)}'
        f',"actor":{"null" if actor is None else e(actor)}'
        f',"details":{details}'
        f',"occurred_at":"{occurred_at}"'
        f',"organisation":{"null" if organisation is None else e(organisation)}'
        f',"prev_hash":"'
    )


def _place_text(seq: int, prev_hash: str, subject_id: str | None) -> str:
    return f'{prev_hash}","seq":{seq},"subject_id":{"null" if subject_id is None else _encode_str(subject_id)}'


def _tail_text(subject_type: str | None) -> str:
    return f',"subject_type":{"null" if subject_type is None else _encode_str(subject_type)},"v":{FORMAT_VERSION}}}'


def _canonical_json(value: Mapping[str, Any]) -> bytes:
    try:
        return _utf8(_DETAILS_ENCODER.encode(value))
    except ValueError as exc:
        raise ValueError(f"not canonical JSON: {exc}") from exc


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text must be valid Unicode (a lone surrogate?): {exc}") from exc


def _check_json_keys(value: Any) -> None:
    """Refuse non-string keys, which json.dumps would silently turn into strings: ``{1: "a"}``
    and ``{"1": "a"}`` would share a hash but not a meaning, and the stored row would differ."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"details has a key {key!r} of type {type(key).__name__}: "
                    "JSON object keys must be strings"
                )
            if isinstance(item, (dict, list, tuple)):
                _check_json_keys(item)
    else:
        for item in value:
            if isinstance(item, (dict, list, tuple)):
                _check_json_keys(item)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One audit event as the chain sees it; ``details`` is a dict and must not be mutated."""

    seq: int
    occurred_at: datetime
    action: str
    actor: str | None
    organisation: str | None
    subject_type: str | None
    subject_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str
    mac: str

    def to_dict(self) -> dict[str, Any]:
        """The event as it appears in an export document (``details`` is shared, not copied)."""
        return {
            "seq": self.seq,
            "occurred_at": format_timestamp(self.occurred_at),
            "action": self.action,
            "actor": self.actor,
            "organisation": self.organisation,
            "subject_type": self.subject_type,
            "subject_id": self.subject_id,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "mac": self.mac,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventRecord:
        """Read an event from an export document; a missing ``mac`` reads as empty, since a
        third party cannot check macs anyway."""
        return cls(
            seq=data["seq"],
            occurred_at=parse_timestamp(data["occurred_at"]),
            action=data["action"],
            actor=data["actor"],
            organisation=data["organisation"],
            subject_type=data["subject_type"],
            subject_id=data["subject_id"],
            details=data["details"],
            prev_hash=data["prev_hash"],
            hash=data["hash"],
            mac=data.get("mac") or "",
        )


class ChainEvent(Protocol):
    """What ``verify_chain`` reads from an event: an ``EventRecord``, or equally a database row
    with these column names, which spares building a million records just to verify them."""

    @property
    def seq(self) -> int: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def action(self) -> str: ...
    @property
    def actor(self) -> str | None: ...
    @property
    def organisation(self) -> str | None: ...
    @property
    def subject_type(self) -> str | None: ...
    @property
    def subject_id(self) -> str | None: ...
    @property
    def details(self) -> Mapping[str, Any]: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...
    @property
    def mac(self) -> str: ...


def compute_mac(key: bytes, event_hash: str) -> str:
    """HMAC the public hash with the secret audit key, so recomputed hashes cannot pass."""
    message = MAC_PREFIX + event_hash.encode("ascii")
    return hmac.new(_checked_key(key), message, "sha256").hexdigest()


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _mac_states(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA-256 (RFC 2104) split into its keyed inner and outer hash states, the way the
    hmac module's own pure-Python path does it, with the domain prefix already absorbed: each
    event then costs two SHA-256 state copies, half the price of copying OpenSSL's HMAC context.
    The tests check it against ``hmac.new`` (used by ``compute_mac``)."""
    key = _checked_key(key)
    block = hashlib.sha256().block_size
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.sha256(key.translate(_IPAD))
    inner.update(MAC_PREFIX)
    return inner, hashlib.sha256(key.translate(_OPAD))


def _checked_key(key: bytes) -> bytes:
    if not isinstance(key, bytes):
        raise TypeError(f"the audit key must be bytes, not {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the audit key must be at least {MIN_KEY_BYTES} bytes")
    return key


def seal(
    *,
    seq: int,
    prev_hash: str,
    occurred_at: datetime,
    action: str,
    actor: str | None,
    organisation: str | None,
    subject_type: str | None,
    subject_id: str | None,
    details: dict[str, Any],
    key: bytes,
) -> EventRecord:
    """Compute the hash and mac of the next event; the caller stores the record and passes its
    hash as ``prev_hash`` of the one after. ``occurred_at`` is kept as an aware UTC datetime."""
    return draft(occurred_at=occurred_at, action=action, actor=actor, organisation=organisation,
                 subject_type=subject_type, details=details).seal(seq=seq, prev_hash=prev_hash,
                                                                  subject_id=subject_id, key=key)


@dataclass(frozen=True, slots=True)
class Draft:
    """An event written out before its place in the chain is known (``draft``).

    An appender holds the chain's lock from reading its head until the new event commits, and
    every other appender waits for it; ``seal`` does only what needs the head: it hashes the
    members from ``prev_hash`` on, onto a copy of the hash of those before it, made in advance.
    The canonical bytes are the ones ``canonical_bytes`` defines (the tests prove the hashes equal).
    """

    occurred_at: datetime
    action: str
    actor: str | None
    organisation: str | None
    subject_type: str | None
    details: dict[str, Any]
    #: SHA-256 of the canonical text up to the opening quote of ``prev_hash``'s value.
    _head: Any = field(repr=False, compare=False)
    #: The canonical text after ``subject_id``'s value.
    _tail: str = field(repr=False, compare=False)

    def seal(self, *, seq: int, prev_hash: str, subject_id: str | None, key: bytes) -> EventRecord:
        """The event at ``seq``, after the event whose hash is ``prev_hash``."""
        _check_place(seq, prev_hash, subject_id)
        state = self._head.copy()
        state.update(_utf8(_place_text(seq, prev_hash, subject_id) + self._tail))
        event_hash = state.hexdigest()
        return EventRecord(
            seq=seq,
            occurred_at=_as_utc(self.occurred_at),
            action=self.action,
            actor=self.actor,
            organisation=self.organisation,
            subject_type=self.subject_type,
            subject_id=subject_id,
            details=self.details,
            prev_hash=prev_hash,
            hash=event_hash,
            mac=compute_mac(key, event_hash),
        )


def draft(
    *,
    occurred_at: datetime,
    action: str,
    actor: str | None,
    organisation: str | None,
    subject_type: str | None,
    details: dict[str, Any],
) -> Draft:
    """Check and encode everything of an event but its place in the chain and its subject's id
    (``Draft.seal`` adds them); what ``canonical_bytes`` refuses, this refuses, with its words."""
    _check_members(action, actor, organisation, subject_type, details)
    head = _head_text(format_timestamp(occurred_at), action, actor, organisation, _encoded_details(details))
    tail = _tail_text(subject_type)
    return Draft(occurred_at, action, actor, organisation, subject_type, details, hashlib.sha256(_utf8(head)), tail)


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement that event ``seq`` had hash ``head_hash``: it lets a holder of the
    public key detect truncation and a rewritten history."""

    seq: int
    head_hash: str
    signed_at: datetime
    key_id: str
    signature: str

    def statement_bytes(self) -> bytes:
        """The bytes the signature covers."""
        return _checkpoint_statement(self.seq, self.head_hash, self.signed_at, self.key_id)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint as it appears in an export document."""
        return {
            "seq": self.seq,
            "head_hash": self.head_hash,
            "signed_at": format_timestamp(self.signed_at),
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Read a checkpoint from an export document."""
        return cls(
            seq=data["seq"],
            head_hash=data["head_hash"],
            signed_at=parse_timestamp(data["signed_at"]),
            key_id=data["key_id"],
            signature=data["signature"],
        )


def _checkpoint_statement(seq: int, head_hash: str, signed_at: datetime, key_id: str) -> bytes:
    return _canonical_json(
        {
            "v": FORMAT_VERSION,
            "type": CHECKPOINT_TYPE,
            "seq": seq,
            "head_hash": head_hash,
            "signed_at": format_timestamp(signed_at),
            "key_id": key_id,
        }
    )


def sign_checkpoint(
    private_key: Ed25519PrivateKey,
    key_id: str,
    seq: int,
    head_hash: str,
    signed_at: datetime,
) -> Checkpoint:
    """Sign the head of the chain; ``key_id`` names the key so verifiers can pick the right one
    after a rotation (normally ``key_id_for(private_key)``)."""
    if type(seq) is not int or seq < 1:
        raise ValueError(f"a checkpoint covers an event, so seq must be from 1, not {seq!r}")
    if not isinstance(head_hash, str) or not _HEX64.fullmatch(head_hash):
        raise ValueError(f"head_hash must be 64 lowercase hex characters, not {head_hash!r}")
    if not isinstance(key_id, str) or not key_id:
        raise ValueError("key_id must be a non-empty string")
    signed_at = _as_utc(signed_at)
    signature = private_key.sign(_checkpoint_statement(seq, head_hash, signed_at, key_id))
    return Checkpoint(
        seq=seq, head_hash=head_hash, signed_at=signed_at, key_id=key_id, signature=signature.hex()
    )


def verify_checkpoint(public_key: Ed25519PublicKey, checkpoint: Checkpoint) -> bool:
    """Whether ``public_key`` signed exactly this checkpoint. Choosing the key by ``key_id`` is
    the caller's job; the key id is itself covered by the signature."""
    try:
        public_key.verify(bytes.fromhex(checkpoint.signature), checkpoint.statement_bytes())
    except (InvalidSignature, ValueError, TypeError, AttributeError):
        return False
    return True


# --------------------------------------------------------------------------- Ed25519 keys


def generate_signing_key_file(
    path: str | os.PathLike[str], *, overwrite: bool = False
) -> Ed25519PrivateKey:
    """Create an Ed25519 checkpoint key as unencrypted PKCS8 PEM, readable by the owner only.

    The file appears complete or not at all (written beside it, then linked or renamed), and an
    existing key is kept unless ``overwrite``: losing it would orphan every checkpoint it signed.
    """
    target = Path(path)
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if not overwrite and target.exists():
        raise FileExistsError(f"{target} already exists; refusing to replace a signing key")
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)  # fails if another process created it meanwhile
            os.unlink(temporary)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_directory(target.parent)
    return private_key


def _fsync_directory(directory: Path) -> None:
    """Make the new directory entry durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read the checkpoint signing key written by ``generate_signing_key_file``."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public half as SubjectPublicKeyInfo PEM, the form Accord publishes to partners."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key_pem(text: str | bytes) -> Ed25519PublicKey:
    """Read a published public key; anything but Ed25519 is refused."""
    data = text.encode("ascii") if isinstance(text, str) else text
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the public key is not an Ed25519 key")
    return key


def key_id_for(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """A short, stable name for a key (16 hex of the SHA-256 of its raw bytes), to print beside
    a checkpoint and to compare with the published one."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of ``verify_chain``: either ok, or the first problem found.

    ``head_seq`` and ``head_hash`` are those of the last event that verified (the starting point
    when none did); ``first_bad_seq`` is the event to look at, None when no event is to blame
    (a forged checkpoint); ``checkpoint_verified`` says a validly signed checkpoint matched the
    chain; ``macs_checked`` says the audit key was used.
    """

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None
    problem: Problem | None
    message: str
    checkpoint_verified: bool
    macs_checked: bool

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-compatible data, for the CLI and the API."""
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq,
            "problem": None if self.problem is None else str(self.problem),
            "message": self.message,
            "checkpoint_verified": self.checkpoint_verified,
            "macs_checked": self.macs_checked,
        }


def verify_chain(
    events: Iterable[ChainEvent],
    *,
    key: bytes | None,
    checkpoint: Checkpoint | None = None,
    public_key: Ed25519PublicKey | None = None,
    start_after: tuple[int, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Recompute the chain from ``events`` (in sequence order, streamed: only the previous
    event's hash is held) and report the first problem.

    ``key=None`` is the third-party mode: macs are not checked, everything else is.
    ``checkpoint`` needs the ``public_key`` that signed it. ``start_after=(seq, hash)`` verifies
    only the segment after a point already trusted (incremental verification); a checkpoint from
    before that point cannot be compared and is left unverified. ``progress`` is called with the
    number of events checked every ``PROGRESS_EVERY`` events and once at the end.
    """
    mac_inner, mac_outer = (None, None) if key is None else _mac_states(key)
    if start_after is None:
        anchor_seq, anchor_hash = 0, GENESIS_HASH
    else:
        anchor_seq, anchor_hash = start_after
        if type(anchor_seq) is not int or anchor_seq < 0 or not _HEX64.fullmatch(str(anchor_hash)):
            raise ValueError(f"start_after must be (seq, 64 hex hash), not {start_after!r}")
    last_seq, last_hash = anchor_seq, anchor_hash
    outcome = _Outcome(macs_checked=key is not None, progress=progress)

    checkpoint_seq = -1
    checkpoint_hash = ""
    if checkpoint is not None:
        if public_key is None:
            raise ValueError("a checkpoint can only be trusted with the public key that signed it")
        if not verify_checkpoint(public_key, checkpoint):
            return outcome.failed(
                Problem.CHECKPOINT_SIGNATURE_INVALID,
                None,
                f"the checkpoint for event {checkpoint.seq} is not validly signed by the public "
                f"key {key_id_for(public_key)} — it was forged or altered",
                0,
                last_seq,
                last_hash,
            )
        checkpoint_seq = checkpoint.seq
        checkpoint_hash = checkpoint.head_hash
        if checkpoint_seq == anchor_seq:
            if checkpoint_hash != anchor_hash:
                return outcome.failed(
                    Problem.CHECKPOINT_MISMATCH,
                    anchor_seq,
                    f"event {anchor_seq}: the trusted starting point's hash differs from the "
                    "signed checkpoint — the history was rewritten",
                    0,
                    last_seq,
                    last_hash,
                )
            outcome.checkpoint_verified = True

    # The hot path: locals only, and no objects per event beyond the text that is hashed.
    sha256 = hashlib.sha256
    canonical_text = _canonical_text
    timestamp_text = _timestamp_text
    checked = 0
    next_progress = PROGRESS_EVERY if progress is not None else -1
    iterator = iter(events)
    for event in iterator:
        seq = event.seq
        if seq != last_seq + 1 or type(seq) is not int:
            problem, first_bad, message = _sequence_problem(event, last_seq, anchor_seq, iterator)
            return outcome.failed(problem, first_bad, message, checked, last_seq, last_hash)
        if event.prev_hash != last_hash:
            return outcome.failed(
                Problem.BROKEN_LINK,
                seq,
                _broken_link_message(seq, anchor_seq),
                checked,
                last_seq,
                last_hash,
            )
        try:
            text = canonical_text(
                seq,
                last_hash,
                timestamp_text(event.occurred_at),
                event.action,
                event.actor,
                event.organisation,
                event.subject_type,
                event.subject_id,
                event.details,
            )
            event_hash = sha256(text.encode()).hexdigest()
        except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
            return outcome.failed(
                Problem.MALFORMED_EVENT,
                seq,
                f"event {seq}: it cannot be serialised ({exc}) — the row was edited",
                checked,
                last_seq,
                last_hash,
            )
        if event_hash != event.hash:
            return outcome.failed(
                Problem.HASH_MISMATCH,
                seq,
                f"event {seq}: its content does not match its hash — the row was edited",
                checked,
                last_seq,
                last_hash,
            )
        if mac_inner is not None:
            inner = mac_inner.copy()
            inner.update(event_hash.encode())
            outer = mac_outer.copy()  # type: ignore[union-attr]  # set with mac_inner
            outer.update(inner.digest())
            # A plain comparison: a batch verifier is no timing oracle, and unlike
            # compare_digest it cannot raise on a malformed stored value.
            if outer.hexdigest() != event.mac:
                return outcome.failed(
                    Problem.MAC_MISMATCH,
                    seq,
                    f"event {seq}: its hash is not sealed with the audit key — the history from "
                    "here was rewritten by someone without the key",
                    checked,
                    last_seq,
                    last_hash,
                )
        if seq == checkpoint_seq:
            if event_hash != checkpoint_hash:
                return outcome.failed(
                    Problem.CHECKPOINT_MISMATCH,
                    seq,
                    f"event {seq}: its hash differs from the signed checkpoint — the history up "
                    f"to event {seq} was rewritten",
                    checked,
                    last_seq,
                    last_hash,
                )
            outcome.checkpoint_verified = True
        last_seq = seq
        last_hash = event_hash
        checked += 1
        if checked == next_progress:
            progress(checked)  # type: ignore[misc]  # next_progress is -1 without a callback
            next_progress += PROGRESS_EVERY

    if checkpoint_seq > last_seq:
        if checked == 0:
            where = (
                "the audit trail is empty"
                if anchor_seq == 0
                else f"there are no events after event {anchor_seq}"
            )
            return outcome.failed(
                Problem.EMPTY_BUT_CHECKPOINTED,
                last_seq + 1,
                f"events {last_seq + 1} to {checkpoint_seq} are missing: {where}, but a signed "
                f"checkpoint covers event {checkpoint_seq} — the events were deleted",
                checked,
                last_seq,
                last_hash,
            )
        return outcome.failed(
            Problem.TRUNCATED,
            last_seq + 1,
            f"events {last_seq + 1} to {checkpoint_seq} are missing: the chain ends at event "
            f"{last_seq}, but a signed checkpoint covers event {checkpoint_seq} — the latest "
            "events were deleted",
            checked,
            last_seq,
            last_hash,
        )
    return outcome.passed(checked, anchor_seq, last_seq, last_hash, checkpoint)


class _Outcome:
    """What ``verify_chain`` knows besides its loop variables, and how it words the report; an
    object rather than a closure, so that the hot loop's variables stay fast locals."""

    def __init__(self, *, macs_checked: bool, progress: Callable[[int], None] | None) -> None:
        self.macs_checked = macs_checked
        self.progress = progress
        self.checkpoint_verified = False

    def failed(
        self,
        problem: Problem,
        first_bad_seq: int | None,
        message: str,
        checked: int,
        head_seq: int,
        head_hash: str,
    ) -> VerifyReport:
        return self._report(problem, first_bad_seq, message, checked, head_seq, head_hash)

    def passed(
        self,
        checked: int,
        anchor_seq: int,
        head_seq: int,
        head_hash: str,
        checkpoint: Checkpoint | None,
    ) -> VerifyReport:
        span = f"events {anchor_seq + 1} to {head_seq}" if checked else "no events"
        parts = [
            f"the chain verifies: {checked} events checked ({span})",
            "macs checked with the audit key"
            if self.macs_checked
            else "macs not checked (no audit key)",
        ]
        if checkpoint is None:
            parts.append("no checkpoint given")
        elif self.checkpoint_verified:
            parts.append(f"it matches the checkpoint signed for event {checkpoint.seq}")
        else:
            parts.append(
                f"the checkpoint for event {checkpoint.seq} comes before this segment and was "
                "not compared"
            )
        return self._report(None, None, "; ".join(parts), checked, head_seq, head_hash)

    def _report(
        self,
        problem: Problem | None,
        first_bad_seq: int | None,
        message: str,
        checked: int,
        head_seq: int,
        head_hash: str,
    ) -> VerifyReport:
        # The loop already reported each multiple of PROGRESS_EVERY; add the final count.
        if self.progress is not None and (checked == 0 or checked % PROGRESS_EVERY):
            self.progress(checked)
        return VerifyReport(
            ok=problem is None,
            checked=checked,
            head_seq=head_seq,
            head_hash=head_hash,
            first_bad_seq=first_bad_seq,
            problem=problem,
            message=message,
            checkpoint_verified=self.checkpoint_verified,
            macs_checked=self.macs_checked,
        )


def _sequence_problem(
    event: ChainEvent, last_seq: int, anchor_seq: int, iterator: Iterator[ChainEvent]
) -> tuple[Problem, int, str]:
    """Name a break in the numbering. A jump forwards is a deleted row unless the next event
    steps back, in which case the rows are out of order; one event of look-ahead tells them
    apart without holding the chain."""
    seq = event.seq
    if type(seq) is not int:
        return (
            Problem.MALFORMED_EVENT,
            last_seq + 1,
            f"event {last_seq + 1}: the row after event {last_seq} has a seq that is not an "
            f"integer ({seq!r}) — the row was edited",
        )
    if seq == last_seq:
        return (
            Problem.DUPLICATE_SEQ,
            seq,
            f"event {seq} appears twice — a row was duplicated or the chain forked",
        )
    if seq < last_seq:
        return (
            Problem.OUT_OF_ORDER,
            seq,
            f"event {seq} comes after event {last_seq} — the rows are out of order",
        )
    missing = last_seq + 1
    following = next(iterator, None)
    following_seq = getattr(following, "seq", None)
    if type(following_seq) is int and following_seq < seq:
        return (
            Problem.OUT_OF_ORDER,
            missing,
            f"event {missing} is out of place: event {seq} comes straight after event "
            f"{last_seq}, then event {following_seq} — rows were swapped or moved",
        )
    if last_seq == anchor_seq:
        where = "the chain starts" if anchor_seq == 0 else "the segment starts"
        return (
            Problem.GAP,
            missing,
            f"event {missing} is missing: {where} at event {seq} — rows were deleted",
        )
    return (
        Problem.GAP,
        missing,
        f"event {missing} is missing: the chain jumps from event {last_seq} to event {seq} "
        "— a row was deleted",
    )


def _broken_link_message(seq: int, anchor_seq: int) -> str:
    if seq == 1:
        previous = "the genesis hash"
    elif seq - 1 == anchor_seq:
        previous = f"the trusted hash of event {anchor_seq}"
    else:
        previous = f"the hash of event {seq - 1}"
    return (
        f"event {seq}: its prev_hash is not {previous} — a row was deleted, inserted or "
        "swapped, or this row was edited"
    )


# --------------------------------------------------------------------------- fast path for stored rows

#: What ``verify_rows`` reads from each row, in this order; later items are left to ``row_check``.
ROW_COLUMNS = ("seq", "prev_hash", "hash", "mac", "canonical_text")


def verify_rows(
    rows: Iterable[tuple[Any, ...]],
    *,
    key: bytes | None,
    checkpoint: Checkpoint | None = None,
    public_key: Ed25519PublicKey | None = None,
    start_after: tuple[int, str] | None = None,
    progress: Callable[[int], None] | None = None,
    row_check: Callable[[tuple[Any, ...]], bool] | None = None,
) -> VerifyReport | None:
    """``verify_chain``'s fast path for rows a database has prepared: tuples in ``ROW_COLUMNS``
    order whose ``canonical_text`` is the event's canonical JSON as the database assembled it
    from the stored columns (details as their stored canonical text, the timestamp formatted as
    above), so nothing is parsed, re-encoded or assembled here: the text is hashed as it is. A
    text that is not exactly canonical cannot match the hash.

    It returns the report ``verify_chain`` gives over the same events when everything verifies,
    and None at the first thing out of the ordinary (a gap, a broken link, a hash or mac that does
    not match, a checkpoint that does not, ``row_check(row)`` returning False): the caller then
    runs ``verify_chain``, which names the problem. Every report is therefore verify_chain's own.
    ``progress`` is called as verify_chain calls it, except that a None leaves it unfinished.
    """
    mac_inner, mac_outer = (None, None) if key is None else _mac_states(key)
    if start_after is None:
        anchor_seq, anchor_hash = 0, GENESIS_HASH
    else:
        anchor_seq, anchor_hash = start_after
        if type(anchor_seq) is not int or anchor_seq < 0 or not _HEX64.fullmatch(str(anchor_hash)):
            raise ValueError(f"start_after must be (seq, 64 hex hash), not {start_after!r}")
    outcome = _Outcome(macs_checked=key is not None, progress=progress)
    checkpoint_seq = -1
    checkpoint_hash = ""
    if checkpoint is not None:
        if public_key is None:
            raise ValueError("a checkpoint can only be trusted with the public key that signed it")
        if not verify_checkpoint(public_key, checkpoint):
            return None
        checkpoint_seq = checkpoint.seq
        checkpoint_hash = checkpoint.head_hash
        if checkpoint_seq == anchor_seq:
            if checkpoint_hash != anchor_hash:
                return None
            outcome.checkpoint_verified = True

    sha256 = hashlib.sha256
    last_seq, last_hash = anchor_seq, anchor_hash
    checked = 0
    next_progress = PROGRESS_EVERY if progress is not None else -1
    for row in rows:
        seq = row[0]
        if seq != last_seq + 1 or type(seq) is not int or row[1] != last_hash:
            return None
        try:
            event_hash = sha256(row[4].encode()).hexdigest()
        except (AttributeError, UnicodeEncodeError):  # not text, or a lone surrogate
            return None
        if event_hash != row[2]:
            return None
        if mac_inner is not None:
            inner = mac_inner.copy()
            inner.update(event_hash.encode())
            outer = mac_outer.copy()  # type: ignore[union-attr]  # set with mac_inner
            outer.update(inner.digest())
            if outer.hexdigest() != row[3]:
                return None
        if seq == checkpoint_seq:
            if event_hash != checkpoint_hash:
                return None
            outcome.checkpoint_verified = True
        if row_check is not None and not row_check(row):
            return None
        last_seq = seq
        last_hash = event_hash
        checked += 1
        if checked == next_progress:
            progress(checked)  # type: ignore[misc]  # next_progress is -1 without a callback
            next_progress += PROGRESS_EVERY
    if checkpoint_seq > last_seq:
        return None
    return outcome.passed(checked, anchor_seq, last_seq, last_hash, checkpoint)


def joined_report(
    *,
    checked: int,
    head_seq: int,
    head_hash: str,
    checkpoint: Checkpoint | None,
    checkpoint_verified: bool,
    macs_checked: bool,
    anchor_seq: int = 0,
) -> VerifyReport:
    """The passing report of a chain verified as consecutive segments (for instance in parallel,
    each segment ``verify_rows`` with ``start_after`` the previous segment's head), worded as
    ``verify_chain`` words it for the whole."""
    outcome = _Outcome(macs_checked=macs_checked, progress=None)
    outcome.checkpoint_verified = checkpoint_verified
    return outcome.passed(checked, anchor_seq, head_seq, head_hash, checkpoint)


# --------------------------------------------------------------------------- exports and CLI


def export_document(
    events: Iterable[EventRecord],
    checkpoint: Checkpoint | None = None,
    public_key: Ed25519PublicKey | Ed25519PrivateKey | None = None,
) -> dict[str, Any]:
    """The document partners receive and ``main`` verifies (shape in the module docstring)."""
    return {
        "events": [event.to_dict() for event in events],
        "checkpoint": None if checkpoint is None else checkpoint.to_dict(),
        "public_key_pem": None if public_key is None else public_key_pem(public_key),
    }


def load_export(
    path: str | os.PathLike[str],
) -> tuple[Iterator[EventRecord], Checkpoint | None, str | None]:
    """Read an export document: the events (parsed lazily), its checkpoint and the public key
    it carries. The JSON itself is read whole, so exports are meant to be of manageable size."""
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise ValueError("an export is a JSON object with an 'events' list")
    raw_checkpoint = document.get("checkpoint")
    checkpoint = None if raw_checkpoint is None else Checkpoint.from_dict(raw_checkpoint)
    events = (EventRecord.from_dict(item) for item in document["events"])
    return events, checkpoint, document.get("public_key_pem")


def main(argv: list[str] | None = None) -> int:
    """``verify EXPORT.json [--public-key KEY.pem] [--json]``: exit 0 when the chain verifies,
    1 when it does not, 2 when the export or the key cannot be read."""
    parser = argparse.ArgumentParser(
        prog="chain.py", description="Verify an exported Accord audit chain."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="verify an export document")
    verify.add_argument("export", help="the export document (JSON)")
    verify.add_argument(
        "--public-key",
        help="Accord's published checkpoint key (PEM); without it the key inside the export is "
        "used, which only shows the export is self-consistent",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--each",
        action="store_true",
        help="check only each event's own hash, for an export of a filtered view: it proves "
        "each event is as it was sealed, not that none is missing",
    )
    args = parser.parse_args(argv)
    if args.each:
        return _verify_each(args.export, as_json=args.json)

    try:
        events, checkpoint, embedded_pem = load_export(args.export)
        notes: list[str] = []
        public_key = None
        if args.public_key:
            public_key = load_public_key_pem(Path(args.public_key).read_bytes())
            embedded = load_public_key_pem(embedded_pem) if embedded_pem else None
            if embedded is not None and key_id_for(embedded) != key_id_for(public_key):
                notes.append("the export carries a different public key from the one given")
        elif embedded_pem:
            public_key = load_public_key_pem(embedded_pem)
            notes.append(
                "no --public-key given: used the key inside the export "
                f"({key_id_for(public_key)}); compare it with the key Accord publishes"
            )
        if checkpoint is not None and public_key is None:
            raise ValueError("the export has a checkpoint but no public key to check it with")
        result = verify_chain(events, key=None, checkpoint=checkpoint, public_key=public_key)
        if checkpoint is None:
            notes.append("the export has no signed checkpoint: a truncated tail cannot be seen")
    except KeyError as exc:
        print(f"cannot verify {args.export}: a required field is missing: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError) as exc:
        print(f"cannot verify {args.export}: {exc}", file=sys.stderr)
        return 2

    if args.json:
        print(json.dumps({**result.to_dict(), "notes": notes}, indent=2))
    else:
        print(f"audit chain: {'OK' if result.ok else 'FAILED'}")
        if not result.ok:
            where = "" if result.first_bad_seq is None else f" at event {result.first_bad_seq}"
            print(f"problem: {result.problem}{where}")
        print(result.message)
        head = "head" if result.ok else "last good event"
        print(f"{head}: event {result.head_seq}, hash {result.head_hash}")
        if checkpoint is not None:
            print(
                f"checkpoint: event {checkpoint.seq}, signed at "
                f"{format_timestamp(checkpoint.signed_at)} with key {checkpoint.key_id}"
            )
        for note in notes:
            print(f"note: {note}")
    return 0 if result.ok else 1


def _verify_each(path: str, *, as_json: bool) -> int:
    """``verify --each``: recompute every event's hash from its own content, in any order and
    with gaps, as an export of a filtered view has them; exit 0, 1 or 2 as ``main``."""
    checked = 0
    bad: list[int] = []
    try:
        events, _checkpoint, _pem = load_export(path)
        for event in events:
            try:
                body = canonical_bytes(
                    event.seq,
                    event.prev_hash,
                    event.occurred_at,
                    event.action,
                    event.actor,
                    event.organisation,
                    event.subject_type,
                    event.subject_id,
                    event.details,
                )
            except ValueError:  # content no sealed event can have: it was edited
                body = b""
            if hashlib.sha256(body).hexdigest() != event.hash:
                bad.append(event.seq)
            checked += 1
    except KeyError as exc:
        print(f"cannot verify {path}: a required field is missing: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError) as exc:
        print(f"cannot verify {path}: {exc}", file=sys.stderr)
        return 2
    message = (
        f"each of the {checked} events matches its own hash"
        if not bad
        else f"{len(bad)} of {checked} events do not match their hash, the first event {bad[0]}"
    )
    if as_json:
        print(json.dumps({"ok": not bad, "checked": checked, "mismatched": bad, "message": message}))
    else:
        print(f"events: {'OK' if not bad else 'FAILED'}")
        print(message)
        print("note: this proves each event is as it was sealed, not that no event is missing")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
