"""The transfer cipher round-trips any payload and refuses every tampering before releasing a byte."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.transfers.cipher import (
    SEGMENT_SIZE,
    Segment,
    SegmentEncryptor,
    TransferCryptoError,
    TransferTampered,
    decrypt_segments,
    new_data_key,
    verify_segments,
)
from app.transfers.keyring import KeyUnwrapFailed, Keyring, UnknownKeyId

SMALL = 16  # a small segment size keeps multi-segment cases fast
TRANSFER = "tr-0001"
OTHER_TRANSFER = "tr-0002"
SECRET = b"SENSITIVE-PLAINTEXT-"  # recognisable, so a leak into a message would be caught


def encrypt(
    payload: bytes,
    *,
    data_key: bytes,
    transfer_id: str = TRANSFER,
    segment_size: int = SMALL,
    feed: int = 7,
) -> tuple[list[Segment], str, int]:
    """Encrypt in uneven pieces, as an upload arrives; return segments, digest and size."""
    encryptor = SegmentEncryptor(data_key, transfer_id, segment_size)
    segments: list[Segment] = []
    for start in range(0, len(payload), feed):
        segments += encryptor.update(payload[start : start + feed])
    segments += encryptor.finalize()
    return segments, encryptor.sha256_hex, encryptor.size


def read_transfer(
    data_key: bytes,
    transfer_id: str,
    segments: list[Segment],
    sha256_hex: str,
    size: int,
    released: list[bytes],
) -> None:
    """What the download service does: verify everything, then stream into ``released``."""
    verify_segments(data_key, transfer_id, segments, sha256_hex, size)
    released.extend(decrypt_segments(data_key, transfer_id, segments))


@pytest.fixture
def data_key() -> bytes:
    return new_data_key()


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "segment_count"),
    [
        (0, 1),
        (1, 1),
        (SMALL - 1, 1),
        (SMALL, 1),
        (SMALL + 1, 2),
        (2 * SMALL, 2),
        (5 * SMALL + 3, 6),
    ],
)
def test_round_trip_segment_boundaries(data_key: bytes, size: int, segment_count: int) -> None:
    payload = (SECRET * (size // len(SECRET) + 1))[:size]
    segments, sha256_hex, recorded_size = encrypt(payload, data_key=data_key)

    assert [index for index, _ in segments] == list(range(segment_count))
    assert recorded_size == size
    assert sha256_hex == hashlib.sha256(payload).hexdigest()
    released: list[bytes] = []
    read_transfer(data_key, TRANSFER, segments, sha256_hex, size, released)
    assert b"".join(released) == payload


@given(
    payload=st.binary(max_size=10 * SMALL),
    segment_size=st.integers(min_value=1, max_value=3 * SMALL),
    feed=st.integers(min_value=1, max_value=4 * SMALL),
)
@settings(max_examples=200, deadline=None)
def test_round_trip_any_size(payload: bytes, segment_size: int, feed: int) -> None:
    data_key = new_data_key()
    segments, sha256_hex, size = encrypt(
        payload, data_key=data_key, segment_size=segment_size, feed=feed
    )

    verify_segments(data_key, TRANSFER, segments, sha256_hex, size)
    plaintexts = list(decrypt_segments(data_key, TRANSFER, segments))
    assert b"".join(plaintexts) == payload
    assert size == len(payload)
    # Every segment is full except the last, which is non-empty unless the payload is empty.
    assert all(len(p) == segment_size for p in plaintexts[:-1])
    expected_last = (len(payload) - 1) % segment_size + 1 if payload else 0
    assert len(plaintexts[-1]) == expected_last


def test_default_segment_size_round_trip(data_key: bytes) -> None:
    payload = bytes(range(256)) * (SEGMENT_SIZE // 256) * 2 + b"tail"
    segments, sha256_hex, size = encrypt(
        payload, data_key=data_key, segment_size=SEGMENT_SIZE, feed=50_000
    )

    assert len(segments) == 3
    released: list[bytes] = []
    read_transfer(data_key, TRANSFER, segments, sha256_hex, size, released)
    assert b"".join(released) == payload


def test_encryptor_holds_at_most_one_segment(data_key: bytes) -> None:
    encryptor = SegmentEncryptor(data_key, TRANSFER, SMALL)

    assert encryptor.update(b"x" * SMALL) == []  # held back: it may be the last
    assert [i for i, _ in encryptor.update(b"y")] == [0]
    assert [i for i, _ in encryptor.update(b"z" * (3 * SMALL))] == [1, 2, 3]
    assert [i for i, _ in encryptor.finalize()] == [4]


def test_digest_and_size_only_after_finalize(data_key: bytes) -> None:
    encryptor = SegmentEncryptor(data_key, TRANSFER, SMALL)
    encryptor.update(b"abc")

    with pytest.raises(RuntimeError):
        encryptor.sha256_hex
    encryptor.finalize()
    assert encryptor.size == 3
    with pytest.raises(RuntimeError):
        encryptor.update(b"more")
    with pytest.raises(RuntimeError):
        encryptor.finalize()


@pytest.mark.parametrize(
    ("data_key", "transfer_id", "segment_size"),
    [(b"short", TRANSFER, SMALL), (bytes(32), "", SMALL), (bytes(32), TRANSFER, 0)],
)
def test_encryptor_rejects_bad_arguments(
    data_key: bytes, transfer_id: str, segment_size: int
) -> None:
    with pytest.raises(ValueError):
        SegmentEncryptor(data_key, transfer_id, segment_size)


# -- tampering -----------------------------------------------------------------------------------

Tamper = Callable[[list[Segment], bytes], list[Segment]]


def flip_byte_in_middle(segments: list[Segment], data_key: bytes) -> list[Segment]:
    index, ciphertext = segments[2]
    flipped = bytes([ciphertext[0] ^ 0x01]) + ciphertext[1:]
    return segments[:2] + [(index, flipped)] + segments[3:]


def drop_middle(segments: list[Segment], data_key: bytes) -> list[Segment]:
    return segments[:2] + segments[3:]


def drop_final(segments: list[Segment], data_key: bytes) -> list[Segment]:
    return segments[:-1]


def drop_all(segments: list[Segment], data_key: bytes) -> list[Segment]:
    return []


def duplicate_middle(segments: list[Segment], data_key: bytes) -> list[Segment]:
    return segments[:3] + [segments[2]] + segments[3:]


def swap_middle(segments: list[Segment], data_key: bytes) -> list[Segment]:
    return segments[:1] + [segments[2], segments[1]] + segments[3:]


def swap_ciphertexts_keep_indexes(segments: list[Segment], data_key: bytes) -> list[Segment]:
    """A storage row whose index was edited: positions look right, the ciphertext is not."""
    (i1, c1), (i2, c2) = segments[1], segments[2]
    return segments[:1] + [(i1, c2), (i2, c1)] + segments[3:]


def append_after_final(segments: list[Segment], data_key: bytes) -> list[Segment]:
    """Seal an extra final segment with the next index and the real key, and append it."""
    longer, _, _ = encrypt(PAYLOAD + b"!" * SMALL, data_key=data_key)
    return segments + [longer[len(segments)]]


def replace_final_from_longer(segments: list[Segment], data_key: bytes) -> list[Segment]:
    """A non-final segment from a longer transfer put in place of the real final segment."""
    longer, _, _ = encrypt(PAYLOAD + b"!" * SMALL, data_key=data_key)
    return segments[:-1] + [longer[len(segments) - 1]]


def move_from_other_transfer(segments: list[Segment], data_key: bytes) -> list[Segment]:
    """Same data key, same position, but sealed for another transfer id."""
    other, _, _ = encrypt(PAYLOAD, data_key=data_key, transfer_id=OTHER_TRANSFER)
    return segments[:2] + [other[2]] + segments[3:]


def truncate_ciphertext(segments: list[Segment], data_key: bytes) -> list[Segment]:
    index, ciphertext = segments[1]
    return segments[:1] + [(index, ciphertext[:10])] + segments[2:]


PAYLOAD = (SECRET * 5)[: 5 * SMALL + 5]  # six segments of SMALL bytes, the last one short


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (flip_byte_in_middle, "segment 2 failed authentication"),
        (drop_middle, "segment 2 is missing"),
        (drop_final, "final segment missing: the transfer is truncated"),
        (drop_all, "final segment missing: the transfer is truncated"),
        (duplicate_middle, "segment 2 is duplicated"),
        (swap_middle, "segment 1 is missing or out of order"),
        (swap_ciphertexts_keep_indexes, "segment 1 failed authentication"),
        (append_after_final, "data after the final segment"),
        (replace_final_from_longer, "final segment missing: the transfer is truncated"),
        (move_from_other_transfer, "segment 2 failed authentication"),
        (truncate_ciphertext, "segment 1 failed authentication"),
    ],
)
def test_tampered_segments_release_nothing(data_key: bytes, tamper: Tamper, message: str) -> None:
    segments, sha256_hex, size = encrypt(PAYLOAD, data_key=data_key)
    released: list[bytes] = []

    with pytest.raises(TransferTampered, match=message) as caught:
        read_transfer(data_key, TRANSFER, tamper(segments, data_key), sha256_hex, size, released)

    assert released == []
    assert SECRET[:8] not in str(caught.value).encode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda digest, size: ("0" * 64, size), "digest does not match the recorded digest"),
        (lambda digest, size: (digest, size + 1), "size does not match the recorded size"),
    ],
)
def test_wrong_recorded_digest_or_size_releases_nothing(
    data_key: bytes, change: Callable[[str, int], tuple[str, int]], message: str
) -> None:
    segments, sha256_hex, size = encrypt(PAYLOAD, data_key=data_key)
    recorded_digest, recorded_size = change(sha256_hex, size)
    released: list[bytes] = []

    with pytest.raises(TransferTampered, match=message):
        read_transfer(data_key, TRANSFER, segments, recorded_digest, recorded_size, released)
    assert released == []


def test_wrong_data_key_fails_first_segment(data_key: bytes) -> None:
    segments, sha256_hex, size = encrypt(PAYLOAD, data_key=data_key)

    with pytest.raises(TransferTampered, match="segment 0 failed authentication"):
        verify_segments(new_data_key(), TRANSFER, segments, sha256_hex, size)


def test_decrypt_alone_never_yields_a_segment_that_fails(data_key: bytes) -> None:
    """The second pass authenticates too: it stops at the bad segment, yielding only earlier ones."""
    segments, _, _ = encrypt(PAYLOAD, data_key=data_key)
    tampered = flip_byte_in_middle(segments, data_key)
    yielded: list[bytes] = []

    with pytest.raises(TransferTampered, match="segment 2 failed authentication"):
        for plaintext in decrypt_segments(data_key, TRANSFER, tampered):
            yielded.append(plaintext)
    assert b"".join(yielded) == PAYLOAD[: 2 * SMALL]


def test_verify_consumes_a_one_shot_iterator(data_key: bytes) -> None:
    """Segments may arrive as a lazy database cursor, read once per pass."""
    segments, sha256_hex, size = encrypt(PAYLOAD, data_key=data_key)

    def cursor() -> Iterable[Segment]:
        yield from segments

    verify_segments(data_key, TRANSFER, cursor(), sha256_hex, size)
    assert b"".join(decrypt_segments(data_key, TRANSFER, cursor())) == PAYLOAD


def test_verify_rejects_malformed_expected_digest(data_key: bytes) -> None:
    segments, _, size = encrypt(PAYLOAD, data_key=data_key)

    with pytest.raises(ValueError):
        verify_segments(data_key, TRANSFER, segments, "not-a-digest", size)


# -- wrapped data keys ---------------------------------------------------------------------------


def test_wrapped_key_of_another_transfer_is_refused(data_key: bytes) -> None:
    keyring = Keyring.generate()
    wrapped_for_a = keyring.wrap(new_data_key(), TRANSFER)
    keyring.wrap(data_key, OTHER_TRANSFER)

    with pytest.raises(KeyUnwrapFailed):
        keyring.unwrap(wrapped_for_a, OTHER_TRANSFER)


def test_wrapped_key_under_unknown_key_id_is_refused(data_key: bytes) -> None:
    wrapped = Keyring.generate().wrap(data_key, TRANSFER)

    with pytest.raises(UnknownKeyId, match="keyring lacks it"):
        Keyring.generate().unwrap(wrapped, TRANSFER)


def test_errors_share_one_base() -> None:
    for error in (TransferTampered, UnknownKeyId, KeyUnwrapFailed):
        assert issubclass(error, TransferCryptoError)
