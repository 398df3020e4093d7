"""The audit trail: one append-only, hash-chained table."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, DateTime, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db


class AuditEvent(db.Model):
    """One event in the chain. ``UNIQUE(seq)`` and ``UNIQUE(prev_hash)`` make a fork impossible."""

    __tablename__ = "audit_events"

    #: Position in the chain, from 1, with no gaps; the order of record, never the timestamp.
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    action: Mapped[str] = mapped_column(String(64))
    #: Who acted: a user's e-mail, or ``system:<job>`` for the scheduler and the CLI.
    actor: Mapped[Optional[str]] = mapped_column(String(254))
    actor_user_id: Mapped[Optional[int]] = mapped_column()
    #: The organisation the event concerns (the actor's, or the register entry changed).
    organisation: Mapped[Optional[str]] = mapped_column(String(64))
    subject_type: Mapped[Optional[str]] = mapped_column(String(32))
    subject_id: Mapped[Optional[str]] = mapped_column(String(64))
    #: Ids, digests, codes and names only: never payload plaintext.
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: HMAC of ``hash`` with the audit key: rewriting history needs the key, not just the database.
    mac: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_events_organisation_seq", "organisation", "seq"),
        Index("ix_audit_events_action_seq", "action", "seq"),
        Index("ix_audit_events_subject", "subject_type", "subject_id"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
        Index("ix_audit_events_actor_seq", "actor", "seq"),
    )


class AuditCheckpoint(db.Model):
    """A signed statement of the chain head, so truncation and rewrites show even without the HMAC key."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(200))
