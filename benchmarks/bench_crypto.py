"""Throughput of the transfer cryptography, so the segment format's cost can be compared with the
raw primitives it is built from.

Run as ``python -m benchmarks.bench_crypto [size_mb]``; prints JSON. Memory stays bounded: the
plaintext is one reused segment and the ciphertext is spooled to a temporary file standing in for
the chunk rows, read back one segment at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import IO

import cryptography
from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.transfers.cipher import (
    SEGMENT_SIZE,
    Segment,
    SegmentEncryptor,
    decrypt_segments,
    new_data_key,
    verify_segments,
)

MIB = 1024 * 1024
_ROW_HEADER = struct.Struct(">QI")  # segment index, ciphertext length


def run(size_mb: int = 256) -> dict[str, object]:
    """Measure raw AES-256-GCM and SHA-256 and the full encrypt / verify / decrypt path over
    ``size_mb`` MiB; return the figures in MiB/s."""
    segment = os.urandom(SEGMENT_SIZE)
    segment_count = size_mb * MIB // SEGMENT_SIZE
    total = segment_count * SEGMENT_SIZE
    figures: dict[str, object] = {
        "size_mib": total // MIB,
        "segment_size": SEGMENT_SIZE,
        "unit": "MiB/s",
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "openssl": backend.openssl_version_text(),
    }
    figures.update(_raw_primitives(segment, segment_count))
    figures.update(_segment_format(segment, segment_count))
    return figures


def _raw_primitives(segment: bytes, segment_count: int) -> dict[str, float]:
    total = segment_count * len(segment)
    aead = AESGCM(new_data_key())
    nonce = bytes(12)  # benchmark only: never reuse a nonce with real data

    start = time.perf_counter()
    for _ in range(segment_count):
        ciphertext = aead.encrypt(nonce, segment, b"aad")
    encrypt_seconds = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(segment_count):
        aead.decrypt(nonce, ciphertext, b"aad")
    decrypt_seconds = time.perf_counter() - start

    digest = hashlib.sha256()
    start = time.perf_counter()
    for _ in range(segment_count):
        digest.update(segment)
    sha256_seconds = time.perf_counter() - start

    return {
        "raw_aesgcm_encrypt": _rate(total, encrypt_seconds),
        "raw_aesgcm_decrypt": _rate(total, decrypt_seconds),
        "raw_sha256": _rate(total, sha256_seconds),
    }


def _segment_format(segment: bytes, segment_count: int) -> dict[str, float]:
    total = segment_count * len(segment)
    data_key = new_data_key()
    transfer_id = "bench-transfer"
    with tempfile.TemporaryFile() as spool:
        # Only the encryptor calls are timed, not the spooling, which stands in for the database.
        encryptor = SegmentEncryptor(data_key, transfer_id)
        encrypt_seconds = 0.0
        for _ in range(segment_count):
            start = time.perf_counter()
            sealed = encryptor.update(segment)
            encrypt_seconds += time.perf_counter() - start
            _spool(spool, sealed)
        start = time.perf_counter()
        sealed = encryptor.finalize()
        encrypt_seconds += time.perf_counter() - start
        _spool(spool, sealed)

        start = time.perf_counter()
        for _ in _read_spool(spool):
            pass
        read_seconds = time.perf_counter() - start

        start = time.perf_counter()
        verify_segments(
            data_key, transfer_id, _read_spool(spool), encryptor.sha256_hex, encryptor.size
        )
        verify_seconds = time.perf_counter() - start

        start = time.perf_counter()
        released = 0
        for plaintext in decrypt_segments(data_key, transfer_id, _read_spool(spool)):
            released += len(plaintext)
        decrypt_seconds = time.perf_counter() - start
    assert released == total

    return {
        "segment_encrypt_with_sha256": _rate(total, encrypt_seconds),
        "spool_read_only": _rate(total, read_seconds),
        "verify_segments_incl_read": _rate(total, verify_seconds),
        "decrypt_segments_incl_read": _rate(total, decrypt_seconds),
        "download_verify_then_decrypt_incl_reads": _rate(total, verify_seconds + decrypt_seconds),
    }


def _spool(spool: IO[bytes], segments: list[Segment]) -> None:
    for index, ciphertext in segments:
        spool.write(_ROW_HEADER.pack(index, len(ciphertext)))
        spool.write(ciphertext)


def _read_spool(spool: IO[bytes]) -> Iterator[Segment]:
    spool.seek(0)
    while header := spool.read(_ROW_HEADER.size):
        index, length = _ROW_HEADER.unpack(header)
        yield index, spool.read(length)


def _rate(size: int, seconds: float) -> float:
    return round(size / MIB / seconds, 1) if seconds > 0 else float("inf")


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 256), indent=2))
