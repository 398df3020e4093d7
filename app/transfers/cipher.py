"""Streaming envelope encryption of a transfer's payload, so that any upload or download runs in
bounded memory and any tampering with the stored ciphertext is detected before release.

The payload is cut into segments of ``SEGMENT_SIZE`` plaintext bytes and each segment is sealed
with AES-256-GCM under a data key used for this one transfer only. A segment's nonce and
associated data bind the transfer id, the segment index and a final-segment flag, so a stored
segment that is altered, reordered, duplicated, dropped, appended after the end, or copied from
another transfer fails authentication or the sequence check.

Reading contract. Decryption is two passes over the stored segments, each holding one segment at
a time:

1. ``verify_segments`` authenticates every segment, the index sequence, the final flag, the
   plaintext size and the plaintext SHA-256, and returns nothing;
2. only if it returned, ``decrypt_segments`` streams the plaintext to the reader.

A transfer of a few segments can be read in one pass instead: ``open_verified`` makes the same
checks and returns the plaintext, held in memory, only once all of them have passed.

``decrypt_segments`` still authenticates each segment and the sequence, but on its own it can
only notice a truncation or a digest mismatch after it has yielded the earlier segments; running
``verify_segments`` first (over the same rows, in the same database transaction) is what
guarantees that no plaintext byte of a tampered transfer is ever released. Neither function
includes plaintext in an exception message.

This module is pure: no Flask, no database, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Iterable, Iterator
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DATA_KEY_SIZE",
    "SEGMENT_SIZE",
    "Segment",
    "SegmentEncryptor",
    "TransferCryptoError",
    "TransferTampered",
    "decrypt_segments",
    "new_data_key",
    "open_verified",
    "verify_segments",
]

#: Plaintext bytes per segment: large enough that the per-segment overhead (16-byte tag, one
#: chunk row) is negligible, small enough that a segment is a cheap unit of memory.
SEGMENT_SIZE = 64 * 1024
DATA_KEY_SIZE = 32
TAG_SIZE = 16

# Bump the label, never reuse it, if the segment format ever changes.
_AAD_LABEL = b"accord-transfer-v1"
_NOT_FINAL = 0
_FINAL = 1
# The associated data carries the index in 8 bytes, which bounds it more tightly than the 11
# nonce bytes do; 2**64 segments is far beyond any transfer.
_MAX_INDEX = 2**64 - 1
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

#: A stored segment as the storage layer hands it over: (segment index, ciphertext with tag).
Segment = tuple[int, bytes]

_T = TypeVar("_T")


class TransferCryptoError(Exception):
    """Base of every error raised by the transfer cryptography, so a service can map them once."""


class TransferTampered(TransferCryptoError):
    """The stored transfer is not exactly what was sealed; its messages name the fault, never data."""


def new_data_key() -> bytes:
    """Return a fresh random 256-bit data key; one per transfer, which is what makes the
    counter nonces below safe."""
    return secrets.token_bytes(DATA_KEY_SIZE)


class _SegmentSealer:
    """Seals and opens single segments of one transfer under its data key."""

    __slots__ = ("_aead", "_transfer_id_field")

    def __init__(self, data_key: bytes, transfer_id: str) -> None:
        if len(data_key) != DATA_KEY_SIZE:
            raise ValueError(f"a data key must be {DATA_KEY_SIZE} bytes, got {len(data_key)}")
        if not transfer_id:
            raise ValueError("a transfer id is required")
        encoded_id = transfer_id.encode("utf-8")
        # Length-prefixed so that no two (transfer id, index) pairs can encode to the same bytes.
        self._transfer_id_field = struct.pack(">I", len(encoded_id)) + encoded_id
        self._aead = AESGCM(data_key)

    def seal(self, index: int, is_final: bool, plaintext: bytes | bytearray) -> bytes:
        flag = _FINAL if is_final else _NOT_FINAL
        return self._aead.encrypt(_nonce(index, flag), plaintext, self._aad(index, flag))

    def open(self, index: int, is_last: bool, ciphertext: bytes) -> bytes:
        """Return the plaintext of a segment that must carry the final flag exactly when it is the
        last one stored; raise TransferTampered naming the fault otherwise."""
        expected_flag = _FINAL if is_last else _NOT_FINAL
        plaintext = self._try_open(index, expected_flag, ciphertext)
        if plaintext is not None:
            return plaintext
        # Only on failure: try the other flag to say precisely what is wrong. Whatever that
        # attempt decrypts is discarded.
        if self._try_open(index, _NOT_FINAL if is_last else _FINAL, ciphertext) is None:
            raise TransferTampered(f"segment {index} failed authentication")
        if is_last:
            raise TransferTampered("final segment missing: the transfer is truncated")
        raise TransferTampered("data after the final segment")

    def _try_open(self, index: int, flag: int, ciphertext: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(_nonce(index, flag), ciphertext, self._aad(index, flag))
        except InvalidTag:
            return None

    def _aad(self, index: int, flag: int) -> bytes:
        return _AAD_LABEL + self._transfer_id_field + struct.pack(">QB", index, flag)


def _nonce(index: int, flag: int) -> bytes:
    # A counter nonce is safe here because each data key seals exactly one transfer: every
    # (index, flag) pair, hence every nonce, is used at most once under a given key. Deterministic
    # nonces also mean a segment's position is authenticated by the nonce itself.
    return index.to_bytes(11, "big") + bytes((flag,))


class SegmentEncryptor:
    """Turns a plaintext stream into sealed segments while hashing it, holding at most one
    segment of plaintext so uploads of any size use bounded memory.

    A full segment is held back until more data arrives, because only then is it known not to be
    the last. So every segment is full except the final one, which holds the remaining 1 to
    ``segment_size`` bytes; only an empty payload produces an empty (final) segment.
    """

    def __init__(self, data_key: bytes, transfer_id: str, segment_size: int = SEGMENT_SIZE) -> None:
        if segment_size < 1:
            raise ValueError("segment_size must be a positive number of bytes")
        self._sealer = _SegmentSealer(data_key, transfer_id)
        self._segment_size = segment_size
        self._buffer = bytearray()
        self._next_index = 0
        self._digest = hashlib.sha256()
        self._size = 0
        self._finalized = False

    def update(self, data: bytes) -> list[Segment]:
        """Add plaintext; return the segments completed by it (possibly none)."""
        self._require_open()
        self._digest.update(data)
        self._size += len(data)
        sealed: list[Segment] = []
        remaining = memoryview(data)
        while remaining:
            if len(self._buffer) == self._segment_size:
                # More data follows, so the held-back segment is not the last one.
                sealed.append(self._seal_buffer(is_final=False))
            take = self._segment_size - len(self._buffer)
            self._buffer += remaining[:take]
            remaining = remaining[take:]
        return sealed

    def finalize(self) -> list[Segment]:
        """Seal the held-back plaintext as the final segment and return it."""
        self._require_open()
        self._finalized = True
        return [self._seal_buffer(is_final=True)]

    @property
    def sha256_hex(self) -> str:
        """Lower-case hex SHA-256 of the whole plaintext; available after ``finalize``."""
        self._require_finalized()
        return self._digest.hexdigest()

    @property
    def size(self) -> int:
        """Plaintext length in bytes; available after ``finalize``."""
        self._require_finalized()
        return self._size

    def _seal_buffer(self, *, is_final: bool) -> Segment:
        index = self._next_index
        ciphertext = self._sealer.seal(index, is_final, self._buffer)
        self._buffer.clear()
        self._next_index += 1
        return index, ciphertext

    def _require_open(self) -> None:
        if self._finalized:
            raise RuntimeError("the encryptor has already been finalized")

    def _require_finalized(self) -> None:
        if not self._finalized:
            raise RuntimeError("the digest and size are known only after finalize()")


def verify_segments(
    data_key: bytes,
    transfer_id: str,
    segments: Iterable[Segment],
    expected_sha256_hex: str,
    expected_size: int,
) -> None:
    """Authenticate a whole stored transfer without releasing any plaintext; raise
    TransferTampered on the first fault. Run this before ``decrypt_segments``."""
    _verify(data_key, transfer_id, segments, expected_sha256_hex, expected_size, kept=None)


def open_verified(
    data_key: bytes,
    transfer_id: str,
    segments: Iterable[Segment],
    expected_sha256_hex: str,
    expected_size: int,
) -> list[bytes]:
    """The plaintext of a whole stored transfer, segment by segment, returned only once it has
    passed every check of ``verify_segments`` (which raises as it does). It is all held in
    memory: for transfers of a few segments."""
    kept: list[bytes] = []
    _verify(data_key, transfer_id, segments, expected_sha256_hex, expected_size, kept=kept)
    return kept


def _verify(data_key: bytes, transfer_id: str, segments: Iterable[Segment], expected_sha256_hex: str,
            expected_size: int, *, kept: list[bytes] | None) -> None:
    if not _SHA256_HEX.fullmatch(expected_sha256_hex):
        raise ValueError("expected_sha256_hex must be 64 hexadecimal characters")
    digest = hashlib.sha256()
    size = 0
    for plaintext in _open_segments(data_key, transfer_id, segments):
        digest.update(plaintext)
        size += len(plaintext)
        if kept is not None:
            kept.append(plaintext)
    if size != expected_size:
        raise TransferTampered("plaintext size does not match the recorded size")
    if not hmac.compare_digest(digest.hexdigest(), expected_sha256_hex.lower()):
        raise TransferTampered("plaintext digest does not match the recorded digest")


def decrypt_segments(
    data_key: bytes, transfer_id: str, segments: Iterable[Segment]
) -> Iterator[bytes]:
    """Stream the plaintext one segment at a time, authenticating each before yielding it.

    Safe to release to a reader only after ``verify_segments`` has passed over the same segments
    (see the module docstring): a truncation is noticed here only at the end of the stream.
    """
    return _open_segments(data_key, transfer_id, segments)


def _open_segments(
    data_key: bytes, transfer_id: str, segments: Iterable[Segment]
) -> Iterator[bytes]:
    sealer = _SegmentSealer(data_key, transfer_id)
    expected_index = 0
    for (index, ciphertext), is_last in _with_last_marker(segments):
        _check_index(index, expected_index)
        yield sealer.open(index, is_last, ciphertext)
        expected_index += 1
    if expected_index == 0:
        # Even an empty payload is stored as one final segment.
        raise TransferTampered("final segment missing: the transfer is truncated")


def _check_index(index: int, expected_index: int) -> None:
    # The index comes from the storage row; the nonce and associated data are computed from it,
    # so a row whose index was edited fails authentication even if it passes this check.
    if not isinstance(index, int) or isinstance(index, bool):
        raise TypeError(f"a segment index must be an int, got {type(index).__name__}")
    if index > expected_index:
        raise TransferTampered(f"segment {expected_index} is missing or out of order")
    if index < expected_index:
        raise TransferTampered(f"segment {index} is duplicated or out of order")
    if index > _MAX_INDEX:
        raise TransferTampered(f"segment {index} is beyond the largest possible index")


def _with_last_marker(items: Iterable[_T]) -> Iterator[tuple[_T, bool]]:
    """Pair each item with whether it is the last, looking one item ahead: the final flag must
    be on the last stored segment, and the stream length is not known in advance."""
    iterator = iter(items)
    try:
        previous = next(iterator)
    except StopIteration:
        return
    for item in iterator:
        yield previous, False
        previous = item
    yield previous, True
