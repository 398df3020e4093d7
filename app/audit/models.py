"""The audit trail: one append-only, hash-chained table."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, DateTime, Index, String
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from app.extensions import db


def canonical_json(value: Any) -> str:
    """The chain's canonical JSON text (defined in ``app.audit.chain``'s docstring)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class CanonicalJSON(TypeDecorator):
    """JSON written as the chain's canonical text (sorted keys, no spaces), so ``verify`` can hash
    the stored text as it is instead of parsing and re-encoding a million details objects."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect):
        if dialect.name == "postgresql" and dialect.driver == "psycopg":
            from psycopg.types.json import Json

            return lambda value: None if value is None else Json(value, dumps=canonical_json)
        return lambda value: None if value is None else canonical_json(value)


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
    details: Mapped[dict[str, Any]] = mapped_column(CanonicalJSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: HMAC of ``hash`` with the audit key: rewriting history needs the key, not just the database.
    mac: Mapped[str] = mapped_column(String(64))
    #: Indexed copies of values inside the hashed ``details`` (``app.audit.indexing``), so the
    #: workspace's filters use an index; not hashed, so ``verify`` checks each against the details.
    protocol: Mapped[Optional[str]] = mapped_column(String(64))
    subgroup: Mapped[Optional[str]] = mapped_column(String(64))
    outcome: Mapped[Optional[str]] = mapped_column(String(32))
    #: The second organisation an event concerns (an exchange's recipient), so its DPO finds it.
    counterparty: Mapped[Optional[str]] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_events_organisation_seq", "organisation", "seq"),
        Index("ix_audit_events_action_seq", "action", "seq"),
        Index("ix_audit_events_subject", "subject_type", "subject_id"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
        Index("ix_audit_events_actor_seq", "actor", "seq"),
        Index("ix_audit_events_protocol_seq", "protocol", "seq"),
        Index("ix_audit_events_subgroup_seq", "subgroup", "seq"),
        Index("ix_audit_events_outcome_seq", "outcome", "seq"),
        Index("ix_audit_events_counterparty_seq", "counterparty", "seq"),
        # A DPO's commonest question, "what was refused (or referred) that concerns us", in order.
        Index("ix_audit_events_organisation_outcome_seq", "organisation", "outcome", "seq"),
        Index("ix_audit_events_counterparty_outcome_seq", "counterparty", "outcome", "seq"),
        # And "what was refused under this protocol, or in this subgroup": a rare outcome's page
        # would otherwise walk every event of the protocol or subgroup.
        Index("ix_audit_events_protocol_outcome_seq", "protocol", "outcome", "seq"),
        Index("ix_audit_events_subgroup_outcome_seq", "subgroup", "outcome", "seq"),
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
