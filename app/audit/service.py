"""Appending to and reading the audit chain.

Every service that changes something calls :func:`record` in the same transaction as the
change, so the change and its audit event commit or roll back together.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.audit import chain
from app.audit.models import AuditEvent
from app.clock import utcnow

if TYPE_CHECKING:  # pragma: no cover
    from app.auth.models import User

#: Key of the PostgreSQL advisory lock that serialises appends (any fixed 64-bit number).
AUDIT_APPEND_LOCK = 0x4143434F5244  # "ACCORD"


def audit_key() -> bytes:
    return current_app.config["AUDIT_HMAC_KEY"].encode()


def actor_label(actor: "User | str | None") -> tuple[str | None, int | None]:
    if actor is None:
        return "system", None
    if isinstance(actor, str):
        return actor, None
    return actor.email, actor.id


def _serialise_appends(session: Session) -> None:
    """Make concurrent appenders take turns, so two cannot read the same head.

    PostgreSQL: a transaction-scoped advisory lock, released at commit or rollback (locking the
    last row does not serialise appends: a new row is invisible to the lock). SQLite: writing
    transactions already began with BEGIN IMMEDIATE (``app.database``).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_APPEND_LOCK})


def record(
    session: Session,
    *,
    action: str,
    actor: "User | str | None",
    organisation: str | None = None,
    subject_type: str | None = None,
    subject_id: str | int | None = None,
    details: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> AuditEvent:
    """Append one event to the chain and flush it; the caller's transaction commits it."""
    _serialise_appends(session)
    head = session.execute(select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)).first()
    seq, prev_hash = (head.seq + 1, head.hash) if head else (1, chain.GENESIS_HASH)
    label, user_id = actor_label(actor)
    sealed = chain.seal(
        seq=seq,
        prev_hash=prev_hash,
        occurred_at=occurred_at or utcnow(),
        action=action,
        actor=label,
        organisation=organisation,
        subject_type=subject_type,
        subject_id=None if subject_id is None else str(subject_id),
        details=details or {},
        key=audit_key(),
    )
    event = AuditEvent(
        seq=sealed.seq,
        occurred_at=sealed.occurred_at,
        action=sealed.action,
        actor=sealed.actor,
        actor_user_id=user_id,
        organisation=sealed.organisation,
        subject_type=sealed.subject_type,
        subject_id=sealed.subject_id,
        details=sealed.details,
        prev_hash=sealed.prev_hash,
        hash=sealed.hash,
        mac=sealed.mac,
    )
    session.add(event)
    session.flush()
    return event
