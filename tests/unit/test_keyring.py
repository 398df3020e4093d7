"""The keyring wraps data keys per transfer, rotates without re-encrypting payloads, and keeps its
key file owner-only."""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from app.transfers.cipher import TransferCryptoError, new_data_key
from app.transfers.keyring import (
    KeyUnwrapFailed,
    Keyring,
    KeyringError,
    UnknownKeyId,
    WrappedKey,
    load_key_file,
    load_or_create_key_file,
    new_key_id,
    save_key_file,
)

TRANSFER = "tr-0001"
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def key_b64(fill: int = 1) -> str:
    return base64.b64encode(bytes([fill]) * 32).decode()


# -- wrapping ------------------------------------------------------------------------------------


def test_wrap_unwrap_round_trip() -> None:
    keyring = Keyring.generate()
    data_key = new_data_key()

    wrapped = keyring.wrap(data_key, TRANSFER)

    assert wrapped.key_id == keyring.current_key_id
    assert len(wrapped.blob) == 12 + 32 + 16
    assert keyring.unwrap(wrapped, TRANSFER) == data_key


def test_wraps_use_fresh_nonces() -> None:
    keyring = Keyring.generate()
    data_key = new_data_key()

    assert keyring.wrap(data_key, TRANSFER).blob != keyring.wrap(data_key, TRANSFER).blob


def _two_ids_same_key() -> tuple[Keyring, WrappedKey]:
    """A keyring where two ids hold the same KEK, so only the associated data tells them apart."""
    key = bytes(32)
    keyring = Keyring({"k-a": key, "k-b": key}, "k-a")
    return keyring, keyring.wrap(new_data_key(), TRANSFER)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("other transfer", KeyUnwrapFailed),
        ("relabelled key id", KeyUnwrapFailed),
        ("flipped byte", KeyUnwrapFailed),
        ("short blob", KeyUnwrapFailed),
        ("unknown key id", UnknownKeyId),
    ],
)
def test_unwrap_refuses(case: str, error: type[Exception]) -> None:
    keyring, wrapped = _two_ids_same_key()
    transfer_id = TRANSFER
    if case == "other transfer":
        transfer_id = "tr-0002"
    elif case == "relabelled key id":
        wrapped = replace(wrapped, key_id="k-b")
    elif case == "flipped byte":
        wrapped = replace(wrapped, blob=wrapped.blob[:-1] + bytes([wrapped.blob[-1] ^ 1]))
    elif case == "short blob":
        wrapped = replace(wrapped, blob=wrapped.blob[:20])
    elif case == "unknown key id":
        wrapped = replace(wrapped, key_id="k-gone")

    with pytest.raises(error):
        keyring.unwrap(wrapped, transfer_id)


def test_unknown_key_id_message_names_the_id() -> None:
    wrapped = WrappedKey(key_id="k-retired", blob=bytes(60))

    with pytest.raises(UnknownKeyId, match="'k-retired' is not in the keyring: the keyring lacks it"):
        Keyring.generate().unwrap(wrapped, TRANSFER)


def test_wrap_refuses_a_data_key_of_the_wrong_size() -> None:
    with pytest.raises(ValueError):
        Keyring.generate().wrap(b"short", TRANSFER)


# -- rotation ------------------------------------------------------------------------------------


def test_rotation_rewraps_then_retires_the_old_key() -> None:
    old = Keyring.generate()
    data_keys = {f"tr-{n}": new_data_key() for n in range(3)}
    stored = {tid: old.wrap(key, tid) for tid, key in data_keys.items()}

    rotated, new_id = old.with_new_key()
    assert rotated.current_key_id == new_id
    assert set(rotated.key_ids) == {old.current_key_id, new_id}
    stored = {tid: rotated.rewrap(wrapped, tid) for tid, wrapped in stored.items()}
    retired = rotated.without(old.current_key_id)

    assert retired.key_ids == (new_id,)
    for tid, wrapped in stored.items():
        assert wrapped.key_id == new_id
        assert retired.unwrap(wrapped, tid) == data_keys[tid]


def test_rewrap_under_the_current_key_is_idempotent() -> None:
    keyring = Keyring.generate()
    wrapped = keyring.wrap(new_data_key(), TRANSFER)

    assert keyring.rewrap(wrapped, TRANSFER) is wrapped


def test_rewrap_still_authenticates() -> None:
    old = Keyring.generate()
    rotated, _ = old.with_new_key()
    wrapped = old.wrap(new_data_key(), TRANSFER)

    with pytest.raises(KeyUnwrapFailed):
        rotated.rewrap(wrapped, "tr-other")


def test_the_current_key_cannot_be_removed() -> None:
    keyring = Keyring.generate()

    with pytest.raises(KeyringError, match="is the current key"):
        keyring.without(keyring.current_key_id)
    with pytest.raises(UnknownKeyId):
        keyring.without("k-missing")


def test_keyring_is_immutable_and_never_prints_keys() -> None:
    keyring = Keyring.generate()
    rotated, _ = keyring.with_new_key()

    assert len(keyring.key_ids) == 1  # with_new_key returned a new keyring
    with pytest.raises(AttributeError):
        keyring._current_key_id = "k-x"  # type: ignore[misc]
    encoded = json.loads(rotated.to_json())["keys"].values()
    assert all(value not in repr(rotated) for value in encoded)


def test_key_ids_are_random_and_dateless() -> None:
    ids = {new_key_id() for _ in range(50)}

    assert len(ids) == 50
    assert all(len(key_id) == 14 and key_id.startswith("k-") for key_id in ids)


# -- serialisation -------------------------------------------------------------------------------


def test_json_round_trip() -> None:
    keyring, _ = Keyring.generate().with_new_key()

    again = Keyring.from_json(keyring.to_json())

    assert again.current_key_id == keyring.current_key_id
    assert again.to_json() == keyring.to_json()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"not valid JSON \(line 1, column 2\)"),
        ("[]", "exactly the fields 'current' and 'keys'"),
        (json.dumps({"current": "k-a"}), "exactly the fields 'current' and 'keys'"),
        (json.dumps({"current": "k-a", "keys": {}, "extra": 1}), "exactly the fields"),
        (json.dumps({"current": "k-a", "keys": {}}), "'keys' must be a non-empty object"),
        (json.dumps({"current": 1, "keys": {"k-a": key_b64()}}), "'current' must be a key id"),
        (json.dumps({"current": "k-a", "keys": {"k-a": 7}}), "'k-a' must be a base64 string"),
        (json.dumps({"current": "k-a", "keys": {"k-a": "***"}}), "'k-a' is not valid base64"),
        (
            json.dumps({"current": "k-a", "keys": {"k-a": base64.b64encode(bytes(16)).decode()}}),
            "'k-a' decodes to 16 bytes, not 32; set it to the base64 of 32 random bytes",
        ),
        (
            json.dumps({"current": "k-b", "keys": {"k-a": key_b64()}}),
            "current key id 'k-b' is not among the keys",
        ),
        (json.dumps({"current": "k a", "keys": {"k a": key_b64()}}), "key id 'k a' is not valid"),
    ],
)
def test_bad_documents_say_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message) as caught:
        Keyring.from_json(text)

    assert key_b64() not in str(caught.value)
    assert issubclass(KeyringError, TransferCryptoError)


# -- key files -----------------------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
def test_save_writes_owner_only_atomically(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keyring = Keyring.generate()

    save_key_file(path, keyring)
    rotated, _ = keyring.with_new_key()
    save_key_file(path, rotated)

    assert mode_of(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temporary left behind
    assert load_key_file(path).to_json() == rotated.to_json()


@posix_only
def test_save_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        save_key_file(tmp_path / "keys.json", Keyring.generate())
    finally:
        os.umask(previous)

    assert mode_of(tmp_path / "keys.json") == 0o600


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_load_refuses_a_file_others_can_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keys.json"
    save_key_file(path, Keyring.generate())
    path.chmod(mode)

    with pytest.raises(KeyringError, match=f"mode {mode:04o}.*chmod 600"):
        load_key_file(path)


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="does not exist"):
        load_key_file(tmp_path / "absent.json")


@posix_only
def test_load_names_the_file_in_validation_errors(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{oops")
    path.chmod(0o600)

    with pytest.raises(KeyringError, match=r"keys\.json: the keyring is not valid JSON"):
        load_key_file(path)


@posix_only
def test_load_or_create_creates_once_then_reuses(tmp_path: Path) -> None:
    path = tmp_path / "instance" / "keys" / "transfer-keys.json"

    created = load_or_create_key_file(path)
    reloaded = load_or_create_key_file(path)

    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert len(created.key_ids) == 1
    assert reloaded.to_json() == created.to_json()
    assert sorted(p.name for p in path.parent.iterdir()) == ["transfer-keys.json"]


@posix_only
def test_load_or_create_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    existing = Keyring.generate()
    save_key_file(path, existing)

    assert load_or_create_key_file(path).to_json() == existing.to_json()
