"""Signature status, derived from dates and versions and never stored.

A stored status flag drifts the day after it is written; deriving it from the signature's
dates, the validity of the K-MISA version it was given to and whether the organisation has
signed again since keeps every screen, reminder and decision consistent with one another.
This module is pure so the decision engine can use the same rule as the register pages.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, timedelta

#: How long before expiry a signature counts as due for renewal, unless kmisa.yaml says otherwise.
DEFAULT_RENEWAL_WINDOW_DAYS = 90


class SignatureStatus(str, enum.Enum):
    ACTIVE = "active"
    DUE_FOR_RENEWAL = "due_for_renewal"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    WITHDRAWN = "withdrawn"
    NOT_YET_SIGNED = "not_yet_signed"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()

    @property
    def is_current(self) -> bool:
        """Whether the signature lets its organisation share today."""
        return self in (SignatureStatus.ACTIVE, SignatureStatus.DUE_FOR_RENEWAL)


@dataclass(frozen=True)
class SignatureFacts:
    """What the status rule needs to know of one signature."""

    organisation: str
    kmisa_version: str
    signed_on: date
    expires_on: date | None
    withdrawn_on: date | None = None


def signature_status(
    signature: SignatureFacts,
    *,
    as_of: date,
    version_is_valid: bool,
    signed_again_since: bool = False,
    renewal_window_days: int = DEFAULT_RENEWAL_WINDOW_DAYS,
) -> SignatureStatus:
    """The status of ``signature`` on ``as_of``.

    Withdrawal wins over everything because the organisation has said it no longer agrees;
    a signature to a version that is no longer valid (the pre-2018 K-MISA) or one replaced by a
    later signature is superseded; then the expiry date decides.
    """
    if signature.signed_on > as_of:
        return SignatureStatus.NOT_YET_SIGNED
    if signature.withdrawn_on is not None and signature.withdrawn_on <= as_of:
        return SignatureStatus.WITHDRAWN
    if not version_is_valid or signed_again_since:
        return SignatureStatus.SUPERSEDED
    if signature.expires_on is not None:
        if signature.expires_on < as_of:
            return SignatureStatus.EXPIRED
        if signature.expires_on <= as_of + timedelta(days=renewal_window_days):
            return SignatureStatus.DUE_FOR_RENEWAL
    return SignatureStatus.ACTIVE
