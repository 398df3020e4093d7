"""Throughput of the audit chain's pure core: sealing and verifying ``n`` events held in memory,
so that the chain's share of ``audit verify`` can be told apart from the database's.

Run as ``python -m benchmarks.bench_chain [n]``; prints JSON. The events are realistic in shape
(an actor, an organisation, a subject and a details object with ids, codes and a digest). Memory
is about 1 kB per event, because the sealed chain is kept to be verified.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import cryptography

from app.audit.chain import GENESIS_HASH, EventRecord, seal, verify_chain

AUDIT_KEY = b"benchmark-audit-key-not-a-secret"
_ACTIONS = ("decision.recorded", "transfer.sent", "transfer.downloaded", "register.updated")
_START = datetime(2025, 1, 1, tzinfo=timezone.utc)

#: The sealed chain, module-level so that forked workers share it instead of receiving a copy.
_EVENTS: list[EventRecord] = []


def run(n: int = 1_000_000) -> dict[str, object]:
    """Seal ``n`` events, then verify them with the audit key, without it (a third party), and
    in two halves on two processes; return the timings and rates in events per second."""
    inputs = [_event_fields(seq) for seq in range(1, n + 1)]

    events: list[EventRecord] = []
    prev_hash = GENESIS_HASH
    start = time.perf_counter()
    for seq, fields in enumerate(inputs, start=1):
        record = seal(seq=seq, prev_hash=prev_hash, key=AUDIT_KEY, **fields)
        events.append(record)
        prev_hash = record.hash
    seal_seconds = time.perf_counter() - start
    del inputs

    start = time.perf_counter()
    with_key = verify_chain(events, key=AUDIT_KEY)
    verify_seconds = time.perf_counter() - start

    start = time.perf_counter()
    third_party = verify_chain(events, key=None)
    third_party_seconds = time.perf_counter() - start
    assert with_key.ok and third_party.ok and with_key.checked == n

    figures: dict[str, object] = {
        "events": n,
        "seal_seconds": round(seal_seconds, 3),
        "seal_events_per_second": _rate(n, seal_seconds),
        "verify_with_key_seconds": round(verify_seconds, 3),
        "verify_with_key_events_per_second": _rate(n, verify_seconds),
        "verify_with_key_microseconds_per_event": round(verify_seconds / n * 1e6, 2),
        "verify_without_key_seconds": round(third_party_seconds, 3),
        "verify_without_key_events_per_second": _rate(n, third_party_seconds),
    }
    figures.update(_two_segments(events))
    figures.update(
        {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "cryptography": cryptography.__version__,
            "machine": platform.machine(),
        }
    )
    return figures


def _event_fields(seq: int) -> dict[str, Any]:
    return {
        "occurred_at": _START + timedelta(seconds=seq * 17, microseconds=seq % 1_000_000),
        "action": _ACTIONS[seq % len(_ACTIONS)],
        "actor": f"user{seq % 250}@partner{seq % 12}.example.gov.uk",
        "organisation": f"ORG-{seq % 12:03d}",
        "subject_type": "transfer",
        "subject_id": f"tr-{seq:08d}",
        "details": {
            "transfer_id": f"tr-{seq:08d}",
            "protocol": "CSP-DARTFORD-01",
            "outcome": "approved" if seq % 3 else "refused",
            "rule_codes": ["R2", "R7"],
            "sha256": hashlib.sha256(seq.to_bytes(8, "big")).hexdigest(),
        },
    }


def _two_segments(events: list[EventRecord]) -> dict[str, object]:
    """Verify the halves on two processes, the second trusting the hash the first must end on:
    how a service can use a second core. Forked workers read the chain without pickling it;
    the heap is frozen first so that the children's garbage collector does not walk (and so
    copy) the parent's million events, which a worker reading its own rows would not have."""
    if "fork" not in multiprocessing.get_all_start_methods() or len(events) < 2:
        return {"verify_two_segments_parallel_seconds": None}
    middle = len(events) // 2
    anchor = (events[middle - 1].seq, events[middle - 1].hash)
    _EVENTS[:] = events
    gc.freeze()
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
            start = time.perf_counter()
            first = pool.submit(_verify_segment, 0, middle, None)
            second = pool.submit(_verify_segment, middle, len(events), anchor)
            first_head, first_ok = first.result()
            second_ok = second.result()[1]
            seconds = time.perf_counter() - start
    finally:
        gc.unfreeze()
        _EVENTS.clear()
    assert first_ok and second_ok and first_head == anchor
    return {
        "verify_two_segments_parallel_seconds": round(seconds, 3),
        "verify_two_segments_parallel_events_per_second": _rate(len(events), seconds),
    }


def _verify_segment(
    begin: int, end: int, start_after: tuple[int, str] | None
) -> tuple[tuple[int, str], bool]:
    segment = itertools.islice(_EVENTS, begin, end)
    report = verify_chain(segment, key=AUDIT_KEY, start_after=start_after)
    return (report.head_seq, report.head_hash), report.ok


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds) if seconds > 0 else float("inf")


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000), indent=2))
