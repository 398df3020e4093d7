"""The audit chain's pure core: sealing, the canonical format, every kind of tampering, the
checkpoint keys and the third-party verifier (DESIGN.md section 6)."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import hmac
import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.audit import chain
from app.audit.chain import (
    GENESIS_HASH,
    Checkpoint,
    EventRecord,
    Problem,
    canonical_bytes,
    compute_mac,
    export_document,
    format_timestamp,
    generate_signing_key_file,
    key_id_for,
    load_public_key_pem,
    load_signing_key,
    main,
    parse_timestamp,
    public_key_pem,
    seal,
    sign_checkpoint,
    verify_chain,
    verify_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]
CHAIN_PY = REPO / "app" / "audit" / "chain.py"
KEY = b"accord-test-audit-key-0123456789"
OTHER_KEY = b"someone-else-s-key-0123456789abc"
T0 = datetime(2025, 1, 6, 9, 0, 0, 123456, tzinfo=timezone.utc)
SIGNED_AT = datetime(2025, 2, 1, 2, 0, tzinfo=timezone.utc)
LENGTH = 300

_ACTIONS = ["decision.recorded", "transfer.sent", "register.updated", "protocol.approved"]
_ORGS = ["KENT-POL", "DARTFORD-BC", "NHS-KMCCG", None]


# --------------------------------------------------------------------------- builders


def event_fields(seq: int) -> dict[str, Any]:
    """A varied but deterministic event: nulls, non-ASCII, nesting and naive/aware times."""
    occurred_at = T0 + timedelta(minutes=seq, microseconds=seq * 7)
    return {
        "occurred_at": occurred_at.replace(tzinfo=None) if seq % 5 == 0 else occurred_at,
        "action": _ACTIONS[seq % len(_ACTIONS)],
        "actor": None if seq % 7 == 0 else f"user-{seq % 13}@dartford.example",
        "organisation": _ORGS[seq % len(_ORGS)],
        "subject_type": "decision" if seq % 3 else None,
        "subject_id": f"dec-{seq}" if seq % 3 else None,
        "details": {
            "request_id": f"req-{seq}",
            "outcome": "approved" if seq % 2 else "refused",
            "rule_codes": [f"R{seq % 9}", "R10"],
            "recipient": {"name": "Équipe Sécurité", "code": f"ORG-{seq % 4}"},
            "payload_sha256": hashlib.sha256(str(seq).encode()).hexdigest(),
            "count": seq,
        },
    }


def build_chain(
    length: int = LENGTH,
    *,
    key: bytes = KEY,
    start_seq: int = 1,
    prev_hash: str = GENESIS_HASH,
    fields: Callable[[int], dict[str, Any]] = event_fields,
) -> list[EventRecord]:
    events: list[EventRecord] = []
    for seq in range(start_seq, start_seq + length):
        record = seal(seq=seq, prev_hash=prev_hash, key=key, **fields(seq))
        events.append(record)
        prev_hash = record.hash
    return events


def iter_chain(length: int, key: bytes = KEY) -> Iterator[EventRecord]:
    """Seal lazily, so that only the verifier could hold on to the events."""
    prev_hash = GENESIS_HASH
    for seq in range(1, length + 1):
        record = seal(seq=seq, prev_hash=prev_hash, key=key, **event_fields(seq))
        prev_hash = record.hash
        yield record


def reseal(events: list[EventRecord], from_index: int, key: bytes | None) -> list[EventRecord]:
    """What an attacker with database access does: edit a row, then recompute every hash and
    prev_hash after it; with ``key`` (an insider) the macs too, without it they keep the old."""
    rewritten = list(events[:from_index])
    prev_hash = rewritten[-1].hash if rewritten else GENESIS_HASH
    for index, event in enumerate(events[from_index:]):
        details = dict(event.details, outcome="approved (altered)") if index == 0 else event.details
        fields = {
            "seq": event.seq,
            "prev_hash": prev_hash,
            "occurred_at": event.occurred_at,
            "action": event.action,
            "actor": event.actor,
            "organisation": event.organisation,
            "subject_type": event.subject_type,
            "subject_id": event.subject_id,
            "details": details,
        }
        new_hash = hashlib.sha256(canonical_bytes(**fields)).hexdigest()
        mac = compute_mac(key, new_hash) if key is not None else event.mac
        rewritten.append(EventRecord(**fields, hash=new_hash, mac=mac))
        prev_hash = new_hash
    return rewritten


def edit(event: EventRecord, **changes: Any) -> EventRecord:
    return dataclasses.replace(event, **changes)


@pytest.fixture(scope="module")
def events() -> list[EventRecord]:
    return build_chain()


@pytest.fixture(scope="module")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def checkpoint(events: list[EventRecord], signing_key: Ed25519PrivateKey) -> Checkpoint:
    head = events[-1]
    return sign_checkpoint(signing_key, key_id_for(signing_key), head.seq, head.hash, SIGNED_AT)


# --------------------------------------------------------------------------- an intact chain


def test_an_intact_chain_verifies_with_key_and_checkpoint(
    events: list[EventRecord], signing_key: Ed25519PrivateKey, checkpoint: Checkpoint
) -> None:
    report = verify_chain(
        events, key=KEY, checkpoint=checkpoint, public_key=signing_key.public_key()
    )

    assert report.ok, report.message
    assert (report.checked, report.head_seq, report.head_hash) == (LENGTH, LENGTH, events[-1].hash)
    assert report.problem is None and report.first_bad_seq is None
    assert report.checkpoint_verified and report.macs_checked
    assert "300 events checked" in report.message


def test_a_third_party_verifies_without_the_audit_key(
    events: list[EventRecord], signing_key: Ed25519PrivateKey, checkpoint: Checkpoint
) -> None:
    report = verify_chain(
        events, key=None, checkpoint=checkpoint, public_key=signing_key.public_key()
    )

    assert report.ok and report.checkpoint_verified
    assert not report.macs_checked
    assert "macs not checked" in report.message


def test_a_checkpoint_in_the_middle_is_matched(
    events: list[EventRecord], signing_key: Ed25519PrivateKey
) -> None:
    middle = events[149]
    checkpoint = sign_checkpoint(signing_key, "k1", middle.seq, middle.hash, SIGNED_AT)

    public_key = signing_key.public_key()

    report = verify_chain(events, key=KEY, checkpoint=checkpoint, public_key=public_key)

    assert report.ok and report.checkpoint_verified and report.head_seq == LENGTH


def test_an_empty_chain_without_checkpoint_is_ok() -> None:
    report = verify_chain([], key=KEY)

    assert report.ok
    assert (report.checked, report.head_seq, report.head_hash) == (0, 0, GENESIS_HASH)


def test_seal_links_each_event_to_the_previous_one(events: list[EventRecord]) -> None:
    assert events[0].prev_hash == GENESIS_HASH == "0" * 64
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(events, events[1:]))
    assert len({event.hash for event in events}) == LENGTH
    assert all(event.mac == compute_mac(KEY, event.hash) for event in events[:5])


def test_seal_keeps_times_as_aware_utc(events: list[EventRecord]) -> None:
    naive_one = events[4]  # seq 5 was given a naive datetime

    assert naive_one.occurred_at.tzinfo is timezone.utc
    assert naive_one.occurred_at == T0 + timedelta(minutes=5, microseconds=35)


def test_database_rows_verify_as_they_are(events: list[EventRecord]) -> None:
    """verify_chain only reads attributes, so the audit service can hand it result rows; SQLite
    gives the times back naive."""
    rows = [
        SimpleNamespace(**dict(vars_of(event), occurred_at=event.occurred_at.replace(tzinfo=None)))
        for event in events
    ]

    assert verify_chain(rows, key=KEY).ok


def vars_of(event: EventRecord) -> dict[str, Any]:
    return {field.name: getattr(event, field.name) for field in dataclasses.fields(event)}


def test_verification_streams_without_holding_the_chain() -> None:
    length = 20_000
    tracemalloc.start()
    try:
        report = verify_chain(iter_chain(length), key=KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert report.ok and report.checked == length
    # Held whole, 20,000 events take well over 10 MB; streamed, a few kilobytes at a time.
    assert peak < 2_000_000, peak


def test_progress_is_reported_as_it_goes(
    events: list[EventRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chain, "PROGRESS_EVERY", 128)
    seen: list[int] = []

    verify_chain(events, key=KEY, progress=seen.append)

    assert seen == [128, 256, 300]


# --------------------------------------------------------------------------- tampering

Tamper = Callable[[list[EventRecord]], list[EventRecord]]


def _replace_at(seq: int, /, **changes: Any) -> Tamper:
    def tamper(events: list[EventRecord]) -> list[EventRecord]:
        tampered = list(events)
        tampered[seq - 1] = edit(tampered[seq - 1], **changes)
        return tampered

    return tamper


def _details_edited(seq: int) -> Tamper:
    def tamper(events: list[EventRecord]) -> list[EventRecord]:
        tampered = list(events)
        event = tampered[seq - 1]
        tampered[seq - 1] = edit(event, details=dict(event.details, outcome="approved"))
        return tampered

    return tamper


def _timestamp_moved(seq: int, delta: timedelta) -> Tamper:
    def tamper(events: list[EventRecord]) -> list[EventRecord]:
        tampered = list(events)
        event = tampered[seq - 1]
        tampered[seq - 1] = edit(event, occurred_at=event.occurred_at + delta)
        return tampered

    return tamper


def _deleted(*seqs: int) -> Tamper:
    return lambda events: [event for event in events if event.seq not in seqs]


def _swapped(first: int, second: int) -> Tamper:
    def tamper(events: list[EventRecord]) -> list[EventRecord]:
        tampered = list(events)
        tampered[first - 1], tampered[second - 1] = tampered[second - 1], tampered[first - 1]
        return tampered

    return tamper


def _seq_values_swapped(first: int, second: int) -> Tamper:
    """UPDATE ... SET seq: the rows trade sequence numbers and are read back in seq order."""

    def tamper(events: list[EventRecord]) -> list[EventRecord]:
        tampered = list(events)
        a, b = tampered[first - 1], tampered[second - 1]
        tampered[first - 1], tampered[second - 1] = edit(b, seq=a.seq), edit(a, seq=b.seq)
        return tampered

    return tamper


def _duplicated(seq: int) -> Tamper:
    return lambda events: events[:seq] + [events[seq - 1]] + events[seq:]


def _forged_inserted_after(seq: int) -> Tamper:
    """A new row with a correct hash and prev_hash but no valid mac, numbered as the next."""

    def tamper(events: list[EventRecord]) -> list[EventRecord]:
        forged = seal(
            seq=seq + 1, prev_hash=events[seq - 1].hash, key=OTHER_KEY, **event_fields(999)
        )
        return events[:seq] + [forged] + events[seq:]

    return tamper


def _truncated(keep: int) -> Tamper:
    return lambda events: events[:keep]


def _rewritten_from(seq: int, *, insider: bool) -> Tamper:
    return lambda events: reseal(events, seq - 1, KEY if insider else None)


def _stored_details(seq: int, details: Any) -> Tamper:
    return _replace_at(seq, details=details)


# Rows: what the attacker did, who verifies (Accord with the audit key, or a third party without
# it), whether the signed head checkpoint is given, and the first problem that must be reported.
KEYED, THIRD_PARTY = KEY, None
CHECKPOINTED, UNCHECKPOINTED = True, False

TAMPER_CASES = [
    ("edited details", _details_edited(120),
     KEYED, CHECKPOINTED, Problem.HASH_MISMATCH, 120),
    ("edited details, third party", _details_edited(120),
     THIRD_PARTY, CHECKPOINTED, Problem.HASH_MISMATCH, 120),
    ("edited actor", _replace_at(33, actor="mallory"),
     KEYED, UNCHECKPOINTED, Problem.HASH_MISMATCH, 33),
    ("edited timestamp", _timestamp_moved(77, timedelta(microseconds=1)),
     KEYED, UNCHECKPOINTED, Problem.HASH_MISMATCH, 77),
    ("edited timestamp by a day", _timestamp_moved(78, timedelta(days=-1)),
     THIRD_PARTY, UNCHECKPOINTED, Problem.HASH_MISMATCH, 78),
    ("edited stored hash", _replace_at(90, hash="f" * 64),
     KEYED, UNCHECKPOINTED, Problem.HASH_MISMATCH, 90),
    ("edited prev_hash", _replace_at(50, prev_hash="e" * 64),
     KEYED, UNCHECKPOINTED, Problem.BROKEN_LINK, 50),
    ("edited genesis link", _replace_at(1, prev_hash="1" * 64),
     THIRD_PARTY, UNCHECKPOINTED, Problem.BROKEN_LINK, 1),
    ("garbled mac", _replace_at(12, mac="0" * 64),
     KEYED, UNCHECKPOINTED, Problem.MAC_MISMATCH, 12),
    ("deleted middle row", _deleted(150),
     KEYED, CHECKPOINTED, Problem.GAP, 150),
    ("deleted first row", _deleted(1),
     KEYED, UNCHECKPOINTED, Problem.GAP, 1),
    ("deleted second-last row", _deleted(299),
     THIRD_PARTY, CHECKPOINTED, Problem.GAP, 299),
    ("truncated tail", _truncated(250),
     KEYED, CHECKPOINTED, Problem.TRUNCATED, 251),
    ("truncated tail, third party", _truncated(1),
     THIRD_PARTY, CHECKPOINTED, Problem.TRUNCATED, 2),
    ("everything deleted", _truncated(0),
     THIRD_PARTY, CHECKPOINTED, Problem.EMPTY_BUT_CHECKPOINTED, 1),
    ("two adjacent rows swapped", _swapped(100, 101),
     KEYED, CHECKPOINTED, Problem.OUT_OF_ORDER, 100),
    ("two distant rows swapped", _swapped(40, 200),
     KEYED, CHECKPOINTED, Problem.OUT_OF_ORDER, 40),
    ("seq numbers swapped", _seq_values_swapped(100, 101),
     KEYED, CHECKPOINTED, Problem.BROKEN_LINK, 100),
    ("row duplicated", _duplicated(60),
     KEYED, CHECKPOINTED, Problem.DUPLICATE_SEQ, 60),
    ("forged row inserted", _forged_inserted_after(90),
     KEYED, UNCHECKPOINTED, Problem.MAC_MISMATCH, 91),
    ("forged row inserted, third party", _forged_inserted_after(90),
     THIRD_PARTY, UNCHECKPOINTED, Problem.DUPLICATE_SEQ, 91),
    ("history rewritten without the key", _rewritten_from(200, insider=False),
     KEYED, CHECKPOINTED, Problem.MAC_MISMATCH, 200),
    ("history rewritten, third party", _rewritten_from(200, insider=False),
     THIRD_PARTY, CHECKPOINTED, Problem.CHECKPOINT_MISMATCH, LENGTH),
    ("history rewritten by a key holder", _rewritten_from(10, insider=True),
     KEYED, CHECKPOINTED, Problem.CHECKPOINT_MISMATCH, LENGTH),
    ("NaN stored in details", _stored_details(70, {"score": math.nan}),
     KEYED, UNCHECKPOINTED, Problem.MALFORMED_EVENT, 70),
    ("unserialisable details", _stored_details(71, {"when": T0}),
     KEYED, UNCHECKPOINTED, Problem.MALFORMED_EVENT, 71),
    ("timestamp replaced by text", _replace_at(72, occurred_at="2025-01-01"),
     KEYED, UNCHECKPOINTED, Problem.MALFORMED_EVENT, 72),
    ("seq replaced by text", _replace_at(73, seq="73"),
     KEYED, UNCHECKPOINTED, Problem.MALFORMED_EVENT, 73),
]


@pytest.mark.parametrize(
    ("tamper", "key", "with_checkpoint", "problem", "first_bad_seq"),
    [pytest.param(*case[1:], id=case[0]) for case in TAMPER_CASES],
)
def test_tampering_is_reported_at_the_first_bad_event(
    events: list[EventRecord],
    signing_key: Ed25519PrivateKey,
    checkpoint: Checkpoint,
    tamper: Tamper,
    key: bytes | None,
    with_checkpoint: bool,
    problem: Problem,
    first_bad_seq: int,
) -> None:
    report = verify_chain(
        tamper(events),
        key=key,
        checkpoint=checkpoint if with_checkpoint else None,
        public_key=signing_key.public_key() if with_checkpoint else None,
    )

    assert not report.ok
    assert (report.problem, report.first_bad_seq) == (problem, first_bad_seq), report.message
    assert re.search(rf"\bevents? {first_bad_seq}\b", report.message), report.message
    assert report.head_seq == report.checked  # everything before the problem verified


def test_a_rewrite_without_key_or_checkpoint_goes_unseen(events: list[EventRecord]) -> None:
    """The limit of the public hash alone, and the reason for macs and signed checkpoints."""
    report = verify_chain(reseal(events, 199, None), key=None)

    assert report.ok


def test_the_reported_messages_are_plain_english(events: list[EventRecord]) -> None:
    edited = verify_chain(_details_edited(120)(events), key=KEY)
    gap = verify_chain(_deleted(150)(events), key=KEY)

    assert edited.message == "event 120: its content does not match its hash — the row was edited"
    assert gap.message == (
        "event 150 is missing: the chain jumps from event 149 to event 151 — a row was deleted"
    )
    assert edited.to_dict()["problem"] == "hash_mismatch"


def _resigned_by_another_key(checkpoint: Checkpoint) -> Checkpoint:
    other = Ed25519PrivateKey.generate()
    return sign_checkpoint(
        other, checkpoint.key_id, checkpoint.seq, checkpoint.head_hash, checkpoint.signed_at
    )


def _altered(**changes: Any) -> Callable[[Checkpoint], Checkpoint]:
    return lambda checkpoint: dataclasses.replace(checkpoint, **changes)


def _signature_truncated(checkpoint: Checkpoint) -> Checkpoint:
    return dataclasses.replace(checkpoint, signature=checkpoint.signature[:-2])


CHECKPOINT_FORGERIES = [
    ("signed with another key", _resigned_by_another_key),
    ("seq altered", _altered(seq=250)),
    ("head hash altered", _altered(head_hash="a" * 64)),
    ("signing time altered", _altered(signed_at=SIGNED_AT + timedelta(seconds=1))),
    ("key id altered", _altered(key_id="0" * 16)),
    ("signature not hex", _altered(signature="zz")),
    ("signature truncated", _signature_truncated),
]


@pytest.mark.parametrize(
    "forge", [pytest.param(case[1], id=case[0]) for case in CHECKPOINT_FORGERIES]
)
@pytest.mark.parametrize("key", [KEY, None], ids=["with key", "third party"])
def test_a_forged_checkpoint_is_refused(
    events: list[EventRecord],
    signing_key: Ed25519PrivateKey,
    checkpoint: Checkpoint,
    forge: Callable[[Checkpoint], Checkpoint],
    key: bytes | None,
) -> None:
    forged = forge(checkpoint)

    report = verify_chain(events, key=key, checkpoint=forged, public_key=signing_key.public_key())

    assert not verify_checkpoint(signing_key.public_key(), forged)
    assert (report.ok, report.problem, report.first_bad_seq) == (
        False,
        Problem.CHECKPOINT_SIGNATURE_INVALID,
        None,
    )
    assert not report.checkpoint_verified and report.checked == 0


def test_a_checkpoint_needs_its_public_key(
    events: list[EventRecord], checkpoint: Checkpoint
) -> None:
    with pytest.raises(ValueError, match="public key"):
        verify_chain(events, key=KEY, checkpoint=checkpoint)


@pytest.mark.parametrize(
    ("key", "error"),
    [("a string key-0123456789", TypeError), (b"short", ValueError)],
    ids=["text", "too short"],
)
def test_a_weak_or_mistyped_audit_key_is_refused(
    events: list[EventRecord], key: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        verify_chain(events, key=key)
    with pytest.raises(error):
        seal(seq=1, prev_hash=GENESIS_HASH, key=key, **event_fields(1))


def test_the_wrong_audit_key_fails_on_the_first_event(events: list[EventRecord]) -> None:
    report = verify_chain(events, key=OTHER_KEY)

    assert (report.problem, report.first_bad_seq) == (Problem.MAC_MISMATCH, 1)


# --------------------------------------------------------------------------- segments


def test_a_segment_verifies_from_a_trusted_point(events: list[EventRecord]) -> None:
    anchor = events[149]

    report = verify_chain(events[150:], key=KEY, start_after=(anchor.seq, anchor.hash))

    assert report.ok, report.message
    assert (report.checked, report.head_seq) == (150, LENGTH)
    assert "events 151 to 300" in report.message


def test_a_segment_and_its_predecessor_join_up(events: list[EventRecord]) -> None:
    """Two halves verified apart (say on two cores) prove the whole when the first half ends
    on the hash the second half trusted."""
    anchor = events[99]
    first = verify_chain(events[:100], key=KEY)
    second = verify_chain(events[100:], key=KEY, start_after=(anchor.seq, anchor.hash))

    assert first.ok and second.ok
    assert (first.head_seq, first.head_hash) == (anchor.seq, anchor.hash)


SEGMENT_CASES = [
    ("wrong trusted hash", 150, "c" * 64, 150, Problem.BROKEN_LINK, 151),
    ("rows missing after the point", 140, None, 150, Problem.GAP, 141),
    ("segment overlaps the point", 151, None, 150, Problem.DUPLICATE_SEQ, 151),
]


@pytest.mark.parametrize(
    ("anchor_seq", "anchor_hash", "first_index", "problem", "first_bad_seq"),
    [pytest.param(*case[1:], id=case[0]) for case in SEGMENT_CASES],
)
def test_a_segment_that_does_not_follow_its_point_fails(
    events: list[EventRecord],
    anchor_seq: int,
    anchor_hash: str | None,
    first_index: int,
    problem: Problem,
    first_bad_seq: int,
) -> None:
    trusted = (anchor_seq, anchor_hash or events[anchor_seq - 1].hash)

    report = verify_chain(events[first_index:], key=KEY, start_after=trusted)

    assert (report.problem, report.first_bad_seq) == (problem, first_bad_seq), report.message


def test_a_segment_against_checkpoints_before_at_and_after_its_start(
    events: list[EventRecord], signing_key: Ed25519PrivateKey
) -> None:
    public = signing_key.public_key()
    anchor = events[149]

    def checkpoint_at(seq: int, head_hash: str | None = None) -> Checkpoint:
        return sign_checkpoint(
            signing_key, "k1", seq, head_hash or events[seq - 1].hash, SIGNED_AT
        )

    def verify(cp: Checkpoint, segment: list[EventRecord] = events[150:]) -> chain.VerifyReport:
        return verify_chain(
            segment, key=KEY, checkpoint=cp, public_key=public, start_after=(150, anchor.hash)
        )

    before = verify(checkpoint_at(100))
    at_start = verify(checkpoint_at(150))
    rewritten_start = verify(checkpoint_at(150, "d" * 64))
    after = verify(checkpoint_at(LENGTH))
    empty = verify(checkpoint_at(LENGTH), segment=[])

    assert before.ok and not before.checkpoint_verified
    assert "comes before this segment" in before.message
    assert at_start.ok and at_start.checkpoint_verified
    assert (rewritten_start.problem, rewritten_start.first_bad_seq) == (
        Problem.CHECKPOINT_MISMATCH,
        150,
    )
    assert after.ok and after.checkpoint_verified
    assert (empty.problem, empty.first_bad_seq) == (Problem.EMPTY_BUT_CHECKPOINTED, 151)


@pytest.mark.parametrize("start_after", [(-1, GENESIS_HASH), (3, "not hex"), ("3", GENESIS_HASH)])
def test_a_malformed_starting_point_is_refused(start_after: Any) -> None:
    with pytest.raises(ValueError, match="start_after"):
        verify_chain([], key=KEY, start_after=start_after)


# --------------------------------------------------------------------------- canonical format

GOLDEN_KEY = b"accord-golden-audit-key-32-bytes"
GOLDEN_EVENT: dict[str, Any] = {
    "seq": 1,
    "prev_hash": GENESIS_HASH,
    "occurred_at": datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=timezone.utc),
    "action": "decision.recorded",
    "actor": "alice@dartford.example",
    "organisation": "KENT-POL",
    "subject_type": "decision",
    "subject_id": "dec-42",
    "details": {
        "protocol": "CSP-DARTFORD-01",
        "outcome": "approved",
        "rules": ["R1", "R7"],
        "count": 3,
        "note": 'Café "Ω"\n\x01',
        "flag": True,
        "none": None,
        "nested": {"b": 1, "a": [1.5, -2]},
    },
}
GOLDEN_BYTES = (
    b'{"action":"decision.recorded","actor":"alice@dartford.example","details":{"count":3,'
    b'"flag":true,"nested":{"a":[1.5,-2],"b":1},"none":null,'
    b'"note":"Caf\xc3\xa9 \\"\xce\xa9\\"\\n\\u0001","outcome":"approved",'
    b'"protocol":"CSP-DARTFORD-01","rules":["R1","R7"]},'
    b'"occurred_at":"2025-03-14T15:09:26.535897Z","organisation":"KENT-POL",'
    b'"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000",'
    b'"seq":1,"subject_id":"dec-42","subject_type":"decision","v":1}'
)
GOLDEN_HASH = "1067b169439c4bb362b46d79f801fec7eb0258e562d419a95b304093507ca85a"
GOLDEN_MAC = "9258c36f6fece59ab7bb23585aa42a5103967bf1912b3fdbe2b22cc87858f670"
GOLDEN_SECOND_BYTES = (
    b'{"action":"decision.recorded","actor":null,"details":{},'
    b'"occurred_at":"2025-03-14T15:09:27.000000Z","organisation":null,'
    b'"prev_hash":"1067b169439c4bb362b46d79f801fec7eb0258e562d419a95b304093507ca85a",'
    b'"seq":2,"subject_id":null,"subject_type":null,"v":1}'
)
GOLDEN_SECOND_HASH = "b3f34c653c370ca849bef1a26b27fa3b3ff4801d19b31ed6b289d703e706a933"


def test_the_canonical_format_is_frozen() -> None:
    """If this fails the format changed, and every stored chain and export stops verifying:
    bump FORMAT_VERSION instead. The literals were cross-checked with ``openssl dgst``."""
    record = seal(**GOLDEN_EVENT, key=GOLDEN_KEY)
    second = canonical_bytes(
        seq=2,
        prev_hash=GOLDEN_HASH,
        occurred_at=datetime(2025, 3, 14, 15, 9, 27),  # naive, whole second
        action="decision.recorded",
        actor=None,
        organisation=None,
        subject_type=None,
        subject_id=None,
        details={},
    )

    assert canonical_bytes(**GOLDEN_EVENT) == GOLDEN_BYTES
    assert (record.hash, record.mac) == (GOLDEN_HASH, GOLDEN_MAC)
    assert second == GOLDEN_SECOND_BYTES
    assert hashlib.sha256(second).hexdigest() == GOLDEN_SECOND_HASH


def test_the_plain_json_encoder_gives_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback when the C encoder cannot be reused (another Python) changes nothing."""
    monkeypatch.setattr(chain, "_encode_details", chain._DETAILS_ENCODER.encode)

    assert canonical_bytes(**GOLDEN_EVENT) == GOLDEN_BYTES


def test_the_canonical_format_is_what_the_docstring_says() -> None:
    """The recipe a third party re-implements: json.dumps with fixed options, SHA-256, then
    HMAC over a prefixed hex hash."""
    document = dict(GOLDEN_EVENT, v=1, occurred_at="2025-03-14T15:09:26.535897Z")
    text = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    mac = hmac.new(GOLDEN_KEY, b"accord-audit-mac-v1:" + GOLDEN_HASH.encode(), hashlib.sha256)

    assert text.encode("utf-8") == GOLDEN_BYTES
    assert hashlib.sha256(GOLDEN_BYTES).hexdigest() == GOLDEN_HASH
    assert mac.hexdigest() == GOLDEN_MAC


GOLDEN_SIGNING_KEY = bytes(range(32))
GOLDEN_STATEMENT = (
    b'{"head_hash":"b3f34c653c370ca849bef1a26b27fa3b3ff4801d19b31ed6b289d703e706a933",'
    b'"key_id":"56475aa75463474c","seq":2,"signed_at":"2025-03-15T00:00:00.000000Z",'
    b'"type":"accord-audit-checkpoint","v":1}'
)
GOLDEN_SIGNATURE = (
    "c97ffabec26fde8637b7e40c579a9d10e9109158fa4a9b2f20e2bfdc29df3452"
    "1a56ee7bf416e26808d7e5aeb47813c8fd91f65f1ba6593c75e5d4dc107b2a06"
)


def test_the_checkpoint_statement_is_frozen() -> None:
    """Ed25519 signatures are deterministic (RFC 8032), so the signature is pinned too."""
    private_key = Ed25519PrivateKey.from_private_bytes(GOLDEN_SIGNING_KEY)
    key_id = key_id_for(private_key)

    checkpoint = sign_checkpoint(
        private_key, key_id, 2, GOLDEN_SECOND_HASH, datetime(2025, 3, 15, tzinfo=timezone.utc)
    )

    assert key_id == "56475aa75463474c"
    assert checkpoint.statement_bytes() == GOLDEN_STATEMENT
    assert checkpoint.signature == GOLDEN_SIGNATURE
    assert verify_checkpoint(private_key.public_key(), checkpoint)


_PLUS_ONE = timezone(timedelta(hours=1))
_MINUS_FIVE_THIRTY = timezone(timedelta(hours=-5, minutes=-30))

TIMESTAMP_CASES = [
    ("aware UTC", datetime(2025, 6, 1, 12, 0, 0, 654321, tzinfo=timezone.utc),
     "2025-06-01T12:00:00.654321Z"),
    ("naive is UTC", datetime(2025, 6, 1, 12, 0, 0, 654321), "2025-06-01T12:00:00.654321Z"),
    ("whole seconds keep six digits", datetime(2025, 6, 1, 12, 0), "2025-06-01T12:00:00.000000Z"),
    ("one microsecond is kept", datetime(2025, 6, 1, 12, 0, 0, 1, tzinfo=timezone.utc),
     "2025-06-01T12:00:00.000001Z"),
    ("positive offset normalised", datetime(2025, 6, 1, 13, 0, 0, 5, tzinfo=_PLUS_ONE),
     "2025-06-01T12:00:00.000005Z"),
    ("negative offset crosses midnight",
     datetime(2025, 12, 31, 20, 0, 0, 999999, tzinfo=_MINUS_FIVE_THIRTY),
     "2026-01-01T01:30:00.999999Z"),
    ("zero offset that is not timezone.utc",
     datetime(2025, 6, 1, 12, 0, tzinfo=timezone(timedelta(0), "GMT")),
     "2025-06-01T12:00:00.000000Z"),
    ("year before 1000 is padded", datetime(999, 1, 2, 3, 4, 5, 6), "0999-01-02T03:04:05.000006Z"),
    ("zoneinfo UTC", datetime(2025, 7, 1, 13, 0, tzinfo=ZoneInfo("UTC")),
     "2025-07-01T13:00:00.000000Z"),
    ("British Summer Time", datetime(2025, 7, 1, 13, 0, 0, 5, tzinfo=ZoneInfo("Europe/London")),
     "2025-07-01T12:00:00.000005Z"),
]


@pytest.mark.parametrize(
    ("moment", "text"), [pytest.param(*case[1:], id=case[0]) for case in TIMESTAMP_CASES]
)
def test_timestamps_are_utc_with_microseconds(moment: datetime, text: str) -> None:
    fields = dict(GOLDEN_EVENT, occurred_at=moment)
    as_utc = dict(GOLDEN_EVENT, occurred_at=parse_timestamp(text))

    assert format_timestamp(moment) == text
    assert parse_timestamp(text) == moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    assert canonical_bytes(**fields) == canonical_bytes(**as_utc)
    assert f'"occurred_at":"{text}"'.encode() in canonical_bytes(**fields)


def test_the_same_instant_in_any_zone_seals_to_the_same_hash() -> None:
    instant = datetime(2025, 6, 1, 12, 0, 0, 654321, tzinfo=timezone.utc)
    zones = [instant, instant.replace(tzinfo=None), instant.astimezone(_PLUS_ONE)]

    hashes = {seal(**dict(GOLDEN_EVENT, occurred_at=zone), key=KEY).hash for zone in zones}

    assert len(hashes) == 1


def test_a_microsecond_changes_the_hash() -> None:
    moment = GOLDEN_EVENT["occurred_at"]
    later = seal(**dict(GOLDEN_EVENT, occurred_at=moment + timedelta(microseconds=1)), key=KEY)

    assert later.hash != GOLDEN_HASH


REJECTED = [
    ("NaN", {"details": {"score": math.nan}}, "NaN"),
    ("infinity", {"details": {"score": math.inf}}, "NaN or infinite"),
    ("nested negative infinity", {"details": {"a": [{"b": -math.inf}]}}, "NaN or infinite"),
    ("integer key", {"details": {1: "one"}}, "key 1 of type int"),
    ("nested integer key", {"details": {"a": [{"b": {2: "x"}}]}}, "key 2 of type int"),
    ("boolean key", {"details": {True: "x"}}, "key True of type bool"),
    ("None key", {"details": {None: "x"}}, "key None of type NoneType"),
    ("a set", {"details": {"ids": {1, 2}}}, "only JSON values"),
    ("a datetime value", {"details": {"when": T0}}, "only JSON values"),
    ("lone surrogate", {"details": {"note": "\ud800"}}, "valid Unicode"),
    ("details not a dict", {"details": ["a"]}, "details must be a dict"),
    ("seq zero", {"seq": 0}, "seq must be an integer from 1"),
    ("seq boolean", {"seq": True}, "seq must be an integer from 1"),
    ("seq text", {"seq": "1"}, "seq must be an integer from 1"),
    ("upper-case prev_hash", {"prev_hash": "A" * 64}, "prev_hash must be 64 lowercase hex"),
    ("short prev_hash", {"prev_hash": "0" * 63}, "prev_hash must be 64 lowercase hex"),
    ("empty action", {"action": ""}, "action must be a non-empty string"),
    ("actor not text", {"actor": 42}, "actor must be a string or None"),
    ("subject id not text", {"subject_id": 7}, "subject_id must be a string or None"),
    ("timestamp as text", {"occurred_at": "2025-01-01T00:00:00Z"}, "must be a datetime"),
]


@pytest.mark.parametrize(
    ("changes", "message"), [pytest.param(*case[1:], id=case[0]) for case in REJECTED]
)
def test_values_that_would_not_round_trip_are_refused(
    changes: dict[str, Any], message: str
) -> None:
    fields = dict(GOLDEN_EVENT, **changes)

    with pytest.raises(ValueError, match=message):
        canonical_bytes(**fields)
    with pytest.raises(ValueError, match=message):
        seal(**fields, key=KEY)


# --------------------------------------------------------------------------- properties

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_optional_text = st.none() | st.text(max_size=20)
_moments = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([None, timezone.utc, _PLUS_ONE, _MINUS_FIVE_THIRTY]),
)
_event_contents = st.fixed_dictionaries(
    {
        "occurred_at": _moments,
        "action": st.text(min_size=1, max_size=24),
        "actor": _optional_text,
        "organisation": _optional_text,
        "subject_type": _optional_text,
        "subject_id": _optional_text,
        "details": st.dictionaries(st.text(max_size=8), _json_values, max_size=5),
    }
)
_PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def seal_contents(contents: list[dict[str, Any]]) -> list[EventRecord]:
    return build_chain(len(contents), fields=lambda seq: contents[seq - 1])


@_PROPERTY_SETTINGS
@given(st.lists(_event_contents, min_size=1, max_size=8))
def test_any_sealed_chain_verifies(contents: list[dict[str, Any]]) -> None:
    sealed = seal_contents(contents)

    assert verify_chain(sealed, key=KEY).ok
    assert verify_chain(sealed, key=None).ok


@_PROPERTY_SETTINGS
@given(_event_contents, st.integers(min_value=1, max_value=10**9))
def test_the_fast_serialiser_matches_the_documented_recipe(
    contents: dict[str, Any], seq: int
) -> None:
    timestamp = format_timestamp(contents["occurred_at"])
    document = dict(contents, v=1, seq=seq, prev_hash=GENESIS_HASH, occurred_at=timestamp)
    recipe = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")

    assert canonical_bytes(seq=seq, prev_hash=GENESIS_HASH, **contents) == recipe


_hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@_PROPERTY_SETTINGS
@given(_event_contents, st.integers(min_value=1, max_value=10**9), _hex64, _hex64)
def test_a_draft_sealed_later_hashes_the_canonical_bytes(
    contents: dict[str, Any], seq: int, prev_hash: str, other_prev_hash: str
) -> None:
    """An appender drafts its event before it takes the chain's lock and seals it under the
    lock; the hash must be the one ``canonical_bytes`` defines, wherever the draft is sealed."""
    fields = {name: value for name, value in contents.items() if name != "subject_id"}
    drafted = chain.draft(**fields)

    for at, after in ((seq, prev_hash), (seq + 1, other_prev_hash)):
        record = drafted.seal(seq=at, prev_hash=after, subject_id=contents["subject_id"], key=KEY)
        expected = canonical_bytes(seq=at, prev_hash=after, **contents)
        assert record.hash == hashlib.sha256(expected).hexdigest()
        assert record.mac == hmac.new(KEY, chain.MAC_PREFIX + record.hash.encode(), "sha256").hexdigest()
        assert (record.seq, record.prev_hash, record.subject_id) == (at, after, contents["subject_id"])
        assert record == seal(seq=at, prev_hash=after, **contents, key=KEY)


def _different_text(old: str | None, new: str) -> str:
    return new if new != old else new + "!"


FIELD_MUTATIONS: dict[str, Callable[[Any, Any], Any]] = {
    "seq": lambda old, n: old + (n % 5 or 1) * (1 if n % 2 else -1),
    "occurred_at": lambda old, n: old + timedelta(microseconds=1 + n),
    "action": lambda old, n: _different_text(old, f"action.{n}"),
    "actor": lambda old, n: None if old is not None and n % 2 else _different_text(old, f"u{n}"),
    "organisation": lambda old, n: _different_text(old, f"ORG-{n}"),
    "subject_type": lambda old, n: None if old is not None else "decision",
    "subject_id": lambda old, n: _different_text(old, str(n)),
    "details": lambda old, n: (
        {k: v for k, v in old.items() if k != "mutated"}
        if "mutated" in old
        else dict(old, mutated=n)
    ),
    "prev_hash": lambda old, n: ("1" if old[n % 64] == "0" else "0").join(
        (old[: n % 64], old[n % 64 + 1 :])
    ),
    "hash": lambda old, n: old[:-1] + ("1" if old[-1] == "0" else "0"),
    "mac": lambda old, n: ("1" if old[0] == "0" else "0") + old[1:],
}


@_PROPERTY_SETTINGS
@given(
    st.lists(_event_contents, min_size=1, max_size=6),
    st.data(),
    st.sampled_from(sorted(FIELD_MUTATIONS)),
    st.integers(min_value=0, max_value=10**6),
)
def test_any_single_field_mutation_is_detected(
    contents: list[dict[str, Any]], data: st.DataObject, field: str, noise: int
) -> None:
    sealed = seal_contents(contents)
    index = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1), label="index")
    original = sealed[index]
    mutated = edit(original, **{field: FIELD_MUTATIONS[field](getattr(original, field), noise)})
    assume(getattr(mutated, field) != getattr(original, field))
    tampered = sealed[:index] + [mutated] + sealed[index + 1 :]

    with_key = verify_chain(tampered, key=KEY)
    third_party = verify_chain(tampered, key=None)

    assert not with_key.ok
    if field != "seq":  # a renumbered row is blamed on where the numbering broke
        assert with_key.first_bad_seq == original.seq
    if field == "mac":
        assert third_party.ok  # macs need the key; this is why checkpoints exist
    else:
        assert not third_party.ok


@_PROPERTY_SETTINGS
@given(st.binary(min_size=16, max_size=200), st.text("0123456789abcdef", min_size=64, max_size=64))
def test_the_precomputed_mac_is_hmac_sha256(key: bytes, event_hash: str) -> None:
    """Verification splits HMAC into precomputed states for speed; it must still be HMAC,
    including for keys longer than SHA-256's block, which HMAC hashes first."""
    reference = hmac.new(key, b"accord-audit-mac-v1:" + event_hash.encode(), hashlib.sha256)
    inner, outer = chain._mac_states(key)
    inner.update(event_hash.encode())
    outer.update(inner.digest())

    assert outer.hexdigest() == compute_mac(key, event_hash) == reference.hexdigest()


# --------------------------------------------------------------------------- keys


def test_a_generated_signing_key_is_private_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "checkpoint.pem"
    path.parent.mkdir()

    private_key = generate_signing_key_file(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key_id_for(load_signing_key(path)) == key_id_for(private_key)
    assert sorted(os.listdir(path.parent)) == ["checkpoint.pem"]  # no temporary left behind


def test_a_signing_key_is_never_silently_replaced(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pem"
    first = generate_signing_key_file(path)

    with pytest.raises(FileExistsError):
        generate_signing_key_file(path)
    assert key_id_for(load_signing_key(path)) == key_id_for(first)

    second = generate_signing_key_file(path, overwrite=True)
    assert key_id_for(load_signing_key(path)) == key_id_for(second) != key_id_for(first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pem"]


def test_the_public_key_round_trips_as_pem(signing_key: Ed25519PrivateKey) -> None:
    pem = public_key_pem(signing_key)
    loaded = load_public_key_pem(pem)

    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert public_key_pem(signing_key.public_key()) == pem
    assert key_id_for(loaded) == key_id_for(signing_key)
    assert len(key_id_for(loaded)) == 16
    assert load_public_key_pem(pem.encode()).public_bytes_raw() == loaded.public_bytes_raw()


def test_keys_of_another_kind_are_refused(tmp_path: Path) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    private_pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "ec.pem").write_bytes(private_pem)

    with pytest.raises(ValueError, match="Ed25519"):
        load_signing_key(tmp_path / "ec.pem")
    with pytest.raises(ValueError, match="Ed25519"):
        load_public_key_pem(public_pem)


def test_checkpoints_round_trip_through_an_export(checkpoint: Checkpoint) -> None:
    assert Checkpoint.from_dict(json.loads(json.dumps(checkpoint.to_dict()))) == checkpoint


@pytest.mark.parametrize(("seq", "head_hash"), [(0, GENESIS_HASH), (5, "not a hash")])
def test_a_checkpoint_must_name_an_event(
    signing_key: Ed25519PrivateKey, seq: int, head_hash: str
) -> None:
    with pytest.raises(ValueError):
        sign_checkpoint(signing_key, "k1", seq, head_hash, SIGNED_AT)


# --------------------------------------------------------------------------- export and CLI


@pytest.fixture()
def export_files(
    tmp_path: Path,
    events: list[EventRecord],
    signing_key: Ed25519PrivateKey,
    checkpoint: Checkpoint,
) -> tuple[Path, Path, dict[str, Any]]:
    text = json.dumps(export_document(events, checkpoint, signing_key.public_key()))
    export = tmp_path / "export.json"
    export.write_text(text, encoding="utf-8")
    document = json.loads(text)  # a copy: the records' details are shared, not copied
    key_file = tmp_path / "accord-audit.pub.pem"
    key_file.write_text(public_key_pem(signing_key), encoding="ascii")
    return export, key_file, document


def rewrite(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document), encoding="utf-8")


def test_events_round_trip_through_an_export(
    events: list[EventRecord], export_files: tuple[Path, Path, dict[str, Any]]
) -> None:
    export, _, _ = export_files
    loaded, _, _ = chain.load_export(export)

    assert list(loaded) == events


def test_the_cli_accepts_an_intact_export(
    export_files: tuple[Path, Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    export, key_file, _ = export_files

    code = main(["verify", str(export), "--public-key", str(key_file)])

    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("audit chain: OK")
    assert "matches the checkpoint signed for event 300" in out


def _details_edited_in(document: dict[str, Any]) -> None:
    document["events"][9]["details"]["outcome"] = "approved"


def _tail_cut_from(document: dict[str, Any]) -> None:
    del document["events"][200:]


def _row_dropped_from(document: dict[str, Any]) -> None:
    del document["events"][41]


def _time_moved_in(document: dict[str, Any]) -> None:
    document["events"][4]["occurred_at"] = "2025-01-06T09:05:00.000036Z"


CLI_TAMPERING = [
    ("edited details", _details_edited_in, "hash_mismatch at event 10"),
    ("truncated", _tail_cut_from, "truncated at event 201"),
    ("deleted row", _row_dropped_from, "gap at event 42"),
    ("edited time", _time_moved_in, "hash_mismatch at event 5"),
]


@pytest.mark.parametrize(
    ("tamper", "expected"), [pytest.param(*case[1:], id=case[0]) for case in CLI_TAMPERING]
)
def test_the_cli_fails_a_tampered_export(
    export_files: tuple[Path, Path, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    export, key_file, document = export_files
    tamper(document)
    rewrite(export, document)

    code = main(["verify", str(export), "--public-key", str(key_file)])

    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("audit chain: FAILED")
    assert f"problem: {expected}" in out


def test_the_cli_trusts_the_published_key_over_the_one_in_the_export(
    export_files: tuple[Path, Path, dict[str, Any]],
    events: list[EventRecord],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An attacker who rewrites history can re-sign a checkpoint with a key of their own and
    ship its public half in the export; only the published key exposes that."""
    export, key_file, _ = export_files
    impostor = Ed25519PrivateKey.generate()
    rewritten = reseal(events, 99, KEY)
    head = rewritten[-1]
    forged = sign_checkpoint(impostor, key_id_for(impostor), head.seq, head.hash, SIGNED_AT)
    rewrite(export, export_document(rewritten, forged, impostor.public_key()))

    with_published = main(["verify", str(export), "--public-key", str(key_file), "--json"])
    report = json.loads(capsys.readouterr().out)
    with_embedded = main(["verify", str(export)])
    out = capsys.readouterr().out

    assert with_published == 1
    assert report["problem"] == "checkpoint_signature_invalid"
    assert "different public key" in report["notes"][0]
    assert with_embedded == 0
    assert "used the key inside the export" in out


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "No such file"),
        ("not json", "Expecting value"),
        ('{"rows": []}', "'events' list"),
        ('{"events": [{"seq": 1}]}', "a required field is missing"),
    ],
    ids=["missing file", "not JSON", "no events", "event without fields"],
)
def test_the_cli_reports_an_unreadable_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, reason: str
) -> None:
    export = tmp_path / "export.json"
    if content is not None:
        export.write_text(content, encoding="utf-8")

    code = main(["verify", str(export)])

    assert code == 2
    assert reason in capsys.readouterr().err


def test_the_cli_runs_as_a_standalone_script_from_any_directory(
    tmp_path: Path, export_files: tuple[Path, Path, dict[str, Any]]
) -> None:
    """A partner copies chain.py alone, with no Accord package beside it."""
    export, key_file, _ = export_files
    elsewhere = tmp_path / "partner"
    elsewhere.mkdir()
    shutil.copy(CHAIN_PY, elsewhere / "verify_accord_audit.py")

    arguments = ["verify", str(export), "--public-key", str(key_file)]

    copied = _run(["verify_accord_audit.py", *arguments], cwd=elsewhere)
    in_place = _run([str(CHAIN_PY), "verify", str(export), "--json"], cwd=tmp_path)
    as_module = _run(["-m", "app.audit.chain", *arguments], cwd=REPO)

    assert copied.returncode == 0, copied.stderr
    assert "audit chain: OK" in copied.stdout
    assert in_place.returncode == 0 and json.loads(in_place.stdout)["ok"] is True
    assert as_module.returncode == 0, as_module.stderr


def test_a_tampered_export_fails_the_script(
    tmp_path: Path, export_files: tuple[Path, Path, dict[str, Any]]
) -> None:
    export, key_file, document = export_files
    document["events"][149]["details"]["outcome"] = "approved"
    rewrite(export, document)

    result = _run([str(CHAIN_PY), "verify", str(export), "--public-key", str(key_file)], tmp_path)

    assert result.returncode == 1
    assert "event 150: its content does not match its hash" in result.stdout


def _run(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run this venv's Python without PYTHON* variables, as a partner's shell would."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_module_imports_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(CHAIN_PY.read_text(encoding="utf-8"))
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }

    assert imported - set(sys.stdlib_module_names) - {"__future__"} == {"cryptography"}
