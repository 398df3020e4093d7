"""The pure rules of a transfer's life: retention, status, file names and media types."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.transfers.rules import (
    FALLBACK_RETENTION_MONTHS,
    TransferStatus,
    add_months,
    maximum_retention_from,
    normalise_media_type,
    retention_months,
    sanitise_filename,
    transfer_status,
)

NOW = datetime(2026, 11, 22, 10, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(("start", "months", "expected"), [
    (datetime(2026, 1, 31, 9, 0), 1, datetime(2026, 2, 28, 9, 0)),
    (datetime(2028, 1, 31, 9, 0), 1, datetime(2028, 2, 29, 9, 0)),
    (datetime(2026, 11, 22, 9, 0), 12, datetime(2027, 11, 22, 9, 0)),
    (datetime(2026, 12, 15), 1, datetime(2027, 1, 15)),
    (datetime(2026, 5, 31), 0, datetime(2026, 5, 31)),
    (datetime(2026, 8, 31), 18, datetime(2028, 2, 29)),
])
def test_add_months_keeps_the_day_or_takes_the_last_of_the_month(start, months, expected):
    assert add_months(start, months) == expected


def test_add_months_refuses_going_back():
    with pytest.raises(ValueError):
        add_months(NOW, -1)


@pytest.mark.parametrize(("requested", "maximum", "months"), [
    (12, 24, 12),          # within the protocol's maximum
    (36, 24, 24),          # capped (the engine would deny this; the cap is a second line)
    (None, 24, FALLBACK_RETENTION_MONTHS),  # no period named: the short fallback
    (None, 1, 1),          # never beyond a maximum, even the fallback
    (6, None, 6),          # no maximum recorded
])
def test_retention_months(requested, maximum, months):
    assert retention_months(requested, maximum) == months


def test_the_maximum_comes_from_the_retention_finding():
    decision = {"findings": [{"rule": "purpose", "evidence": {}},
                             {"rule": "retention", "evidence": {"requested_months": 12, "maximum_months": 24}}]}
    assert maximum_retention_from(decision) == 24
    assert maximum_retention_from({"findings": [{"rule": "retention", "evidence": {"maximum_months": None}}]}) is None
    assert maximum_retention_from({"findings": [{"rule": "retention", "evidence": {"maximum_months": True}}]}) is None
    assert maximum_retention_from({}) is None


STATUS_CASES = [
    # destroyed_at, downloaded, requested_at, confirmed_at, expected
    (None, False, None, None, TransferStatus.SENT),
    (None, True, None, None, TransferStatus.DOWNLOADED),
    (NOW - timedelta(days=30), False, None, None, TransferStatus.DESTROYED),
    (NOW - timedelta(days=3), True, NOW - timedelta(days=3), None, TransferStatus.DESTROYED),
    (NOW - timedelta(days=7), True, NOW - timedelta(days=7), None, TransferStatus.DESTROYED),
    (NOW - timedelta(days=8), True, NOW - timedelta(days=8), None, TransferStatus.DESTRUCTION_UNCONFIRMED),
    (NOW - timedelta(days=30), True, NOW - timedelta(days=30), NOW - timedelta(days=1), TransferStatus.DESTROYED),
]


@pytest.mark.parametrize(("destroyed", "downloaded", "requested", "confirmed", "expected"), STATUS_CASES)
def test_status_is_derived_from_the_dates(destroyed, downloaded, requested, confirmed, expected):
    assert transfer_status(destroyed_at=destroyed, downloaded=downloaded, confirmation_requested_at=requested,
                           confirmed_at=confirmed, now=NOW) is expected


@pytest.mark.parametrize(("raw", "clean"), [
    ("referral.csv", "referral.csv"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\officer\\Desktop\\case notes.docx", "case notes.docx"),
    ("  .hidden  ", "hidden"),
    ("a\x00b\nc\td.txt", "a_b_c_d.txt"),
    ('what"is<this>?.pdf', "what_is_this__.pdf"),
    ("CON.txt", "_CON.txt"),
    ("", "transfer.bin"),
    (None, "transfer.bin"),
    ("...", "transfer.bin"),
    ("cafe\u0301.txt", "caf\u00e9.txt"),
    ("x" * 300 + ".xlsx", "x" * 195 + ".xlsx"),
    ("y" * 300, "y" * 200),
])
def test_sanitise_filename(raw, clean):
    assert sanitise_filename(raw) == clean


@pytest.mark.parametrize(("raw", "clean"), [
    ("text/csv", "text/csv"),
    ("Text/CSV; charset=UTF-8", "text/csv"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
     "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("", "application/octet-stream"),
    (None, "application/octet-stream"),
    ("text/html\r\nX-Injected: yes", "application/octet-stream"),
    ("not a type", "application/octet-stream"),
])
def test_normalise_media_type(raw, clean):
    assert normalise_media_type(raw) == clean
