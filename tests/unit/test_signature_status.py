"""Signature status is derived from dates and versions: one row per case."""
from __future__ import annotations

from datetime import date

import pytest

from app.registry.status import SignatureFacts, SignatureStatus, signature_status

TODAY = date(2026, 11, 22)


def sig(signed_on=date(2025, 1, 1), expires_on=date(2028, 1, 1), withdrawn_on=None):
    return SignatureFacts("kent-police", "2024", signed_on, expires_on, withdrawn_on)


@pytest.mark.parametrize(
    ("signature", "valid", "signed_again", "expected"),
    [
        (sig(), True, False, SignatureStatus.ACTIVE),
        (sig(expires_on=None), True, False, SignatureStatus.ACTIVE),
        (sig(expires_on=date(2027, 2, 20)), True, False, SignatureStatus.DUE_FOR_RENEWAL),  # exactly 90 days
        (sig(expires_on=date(2027, 2, 21)), True, False, SignatureStatus.ACTIVE),  # 91 days
        (sig(expires_on=TODAY), True, False, SignatureStatus.DUE_FOR_RENEWAL),  # last day still counts
        (sig(expires_on=date(2026, 11, 21)), True, False, SignatureStatus.EXPIRED),
        (sig(), False, False, SignatureStatus.SUPERSEDED),  # pre-2018 version
        (sig(), True, True, SignatureStatus.SUPERSEDED),
        (sig(withdrawn_on=TODAY), True, False, SignatureStatus.WITHDRAWN),
        (sig(withdrawn_on=date(2026, 11, 23)), True, False, SignatureStatus.ACTIVE),  # withdrawal not yet effective
        (sig(withdrawn_on=date(2026, 1, 1)), False, False, SignatureStatus.WITHDRAWN),  # withdrawal wins
        (sig(signed_on=date(2026, 11, 23)), True, False, SignatureStatus.NOT_YET_SIGNED),
    ],
)
def test_signature_status(signature, valid, signed_again, expected):
    assert signature_status(signature, as_of=TODAY, version_is_valid=valid, signed_again_since=signed_again) is expected


def test_only_active_and_due_for_renewal_let_an_organisation_share():
    current = {s for s in SignatureStatus if s.is_current}
    assert current == {SignatureStatus.ACTIVE, SignatureStatus.DUE_FOR_RENEWAL}
