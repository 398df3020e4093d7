"""Helpers shared by the transfer tests: real exchanges recorded through the decision service,
transfers sent through the service, and payloads with a canary that must never be stored."""
from __future__ import annotations

import os
from copy import deepcopy

from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.auth import service as auth_service
from app.clock import utcnow
from app.decisions import service as decisions
from app.transfers import service
from app.transfers.keys import keyring_for
from app.transfers.models import Transfer, TransferChunk, TransferDownload

POLICE_OFFICER = "officer@kent-police.example"
POLICE_DPO = "dpo@kent-police.example"
COUNCIL_OFFICER = "officer@dartford.example"
COUNCIL_DPO = "dpo@dartford.example"
DEMO_USERS = ["admin@dartford.example", "coordinator@dartford.example", POLICE_DPO, COUNCIL_DPO, POLICE_OFFICER,
              COUNCIL_OFFICER, "auditor@dartford.example"]

#: A plaintext marker that must never reach the database in any form a dump or file shows.
CANARY = b"CANARY-3f9c1e-personal-data-must-never-be-stored-in-clear"

#: A safeguarding request the Dartford demo allows under vcs-safeguarding v2 (checked in each use).
ALLOWED_REQUEST = {
    "protocol": {"code": "vcs-safeguarding", "version": 2},
    "purpose": "safeguarding_children", "data_categories": ["identity", "contact"], "subject_types": ["child"],
    "lawful_basis": "e", "legal_gateway": "cda-1998-s115", "transfer_method": "accord_transfer",
    "retention_months": 12,
}


def user(session, email: str):
    return auth_service.find_user_by_email(session, email)


def record_allowed_exchange(session, sender_email: str, to_org: str, **changes):
    """Record an exchange through the decision service, having checked that the demo allows it."""
    sender = user(session, sender_email)
    data = {**deepcopy(ALLOWED_REQUEST), "from_org": sender.organisation.code, "to_org": to_org, **changes}
    decision = decisions.check(session, sender, data, now=utcnow())
    assert decision.outcome.value == "allow", [(f.rule, f.message) for f in decision.findings
                                               if f.outcome.value not in ("pass", "not_applicable")]
    exchange = decisions.record(session, sender, data, now=utcnow())
    session.commit()
    return exchange


def payload(size: int) -> bytes:
    """Random bytes with the canary in the middle (so it straddles no boundary by design)."""
    half = max(size - len(CANARY), 0) // 2
    return os.urandom(half) + CANARY + os.urandom(max(size - len(CANARY) - half, 0))


class Reader:
    """A file-like stream over bytes, counting what was read."""

    def __init__(self, data: bytes, *, forbid_reading: bool = False):
        self.data, self.position, self.forbid_reading = data, 0, forbid_reading

    def read(self, size: int = -1) -> bytes:
        if self.forbid_reading:
            raise AssertionError("the body was read although it should have been refused first")
        size = len(self.data) - self.position if size is None or size < 0 else size
        piece = self.data[self.position:self.position + size]
        self.position += len(piece)
        return piece


def send(app, session, sender_email: str, exchange, data: bytes, *, filename: str = "referral.csv",
         now=None) -> Transfer:
    transfer = service.send(session, user(session, sender_email), exchange, Reader(data), filename=filename,
                            media_type="text/csv", now=now or utcnow(), keyring=keyring_for(app.config),
                            max_bytes=app.config["MAX_PAYLOAD_BYTES"])
    session.commit()
    return transfer


def counts(session) -> dict[str, int]:
    session.expire_all()
    result = {model.__name__: session.scalar(select(func.count()).select_from(model))
              for model in (Transfer, TransferChunk, TransferDownload, AuditEvent)}
    session.rollback()
    return result


def audit_actions(session, transfer_id: str) -> list[str]:
    session.expire_all()
    return list(session.scalars(select(AuditEvent.action).where(AuditEvent.subject_id == transfer_id)
                                .order_by(AuditEvent.seq)))
