"""Transfers: the encrypted payload of an allowed exchange, its downloads and its destruction.

The ciphertext lives in ``transfer_chunks`` rows inserted in the same transaction as the
transfer row, so a transfer is either wholly there or not there at all. The data key is stored
only wrapped by a key-encryption key from the keyring, which is kept outside the database.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Optional

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.clock import as_utc, utcnow
from app.decisions.models import Exchange
from app.extensions import db
from app.registry.models import Organisation
from app.transfers.rules import TransferStatus, confirmation_overdue, transfer_status


def new_transfer_id() -> str:
    """A random UUID, so that transfer ids cannot be guessed or counted."""
    return str(uuid.uuid4())


class Transfer(db.Model):
    __tablename__ = "transfers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_transfer_id)
    exchange_id: Mapped[int] = mapped_column(ForeignKey("exchanges.id"), index=True)
    sender_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    sender_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    recipient_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    media_type: Mapped[str] = mapped_column(String(127))
    #: Sanitised on upload: the last path component, no control or reserved characters.
    filename: Mapped[str] = mapped_column(String(200))
    #: Plaintext length in bytes and lower-case hex SHA-256, checked on every download.
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    #: Plaintext bytes per encrypted segment (the last segment may be shorter).
    segment_size: Mapped[int] = mapped_column(Integer)
    segment_count: Mapped[int] = mapped_column(Integer)
    #: The data key sealed under ``key_id``; both cleared when the transfer is destroyed.
    wrapped_key: Mapped[Optional[bytes]] = mapped_column(LargeBinary)
    key_id: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: When the payload is destroyed: the decision's retention, capped by the protocol's maximum.
    retention_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    destroyed_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    #: How: ``crypto_shredding`` (data key and chunks deleted).
    destruction_method: Mapped[Optional[str]] = mapped_column(String(32))
    #: Set when destroyed after a download: the recipient must confirm it destroyed any copies.
    destruction_confirmation_requested_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    destruction_confirmed_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    destruction_confirmed_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))

    exchange: Mapped[Exchange] = relationship()
    sender: Mapped[User] = relationship(foreign_keys=[sender_id])
    sender_organisation: Mapped[Organisation] = relationship(foreign_keys=[sender_organisation_id])
    recipient_organisation: Mapped[Organisation] = relationship(foreign_keys=[recipient_organisation_id])
    destruction_confirmed_by: Mapped[Optional[User]] = relationship(foreign_keys=[destruction_confirmed_by_id])
    downloads: Mapped[list["TransferDownload"]] = relationship(
        back_populates="transfer", order_by="TransferDownload.downloaded_at")

    __table_args__ = (
        Index("ix_transfers_recipient_created", "recipient_organisation_id", "created_at"),
        Index("ix_transfers_sender_created", "sender_organisation_id", "created_at"),
        Index("ix_transfers_destroyed_retention", "destroyed_at", "retention_until"),
    )

    @property
    def is_destroyed(self) -> bool:
        return self.destroyed_at is not None

    def status(self, now: datetime) -> TransferStatus:
        return transfer_status(
            destroyed_at=self.destroyed_at, downloaded=bool(self.downloads),
            confirmation_requested_at=_utc(self.destruction_confirmation_requested_at),
            confirmed_at=_utc(self.destruction_confirmed_at), now=as_utc(now))

    def confirmation_overdue(self, now: datetime) -> bool:
        return confirmation_overdue(confirmation_requested_at=_utc(self.destruction_confirmation_requested_at),
                                    confirmed_at=_utc(self.destruction_confirmed_at), now=as_utc(now))

    @property
    def confirmation_pending(self) -> bool:
        return self.destruction_confirmation_requested_at is not None and self.destruction_confirmed_at is None


class TransferChunk(db.Model):
    """One sealed segment of a transfer's payload (AES-256-GCM, tag included)."""

    __tablename__ = "transfer_chunks"

    transfer_id: Mapped[str] = mapped_column(ForeignKey("transfers.id", ondelete="CASCADE"), primary_key=True)
    segment_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class TransferDownload(db.Model):
    """Who downloaded a transfer and when; recorded, with its audit event, before the first byte leaves."""

    __tablename__ = "transfer_downloads"

    id: Mapped[int] = mapped_column(primary_key=True)
    transfer_id: Mapped[str] = mapped_column(ForeignKey("transfers.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    downloaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: The plaintext bytes released (the whole payload: a download is all or nothing).
    bytes: Mapped[int] = mapped_column(BigInteger)

    transfer: Mapped[Transfer] = relationship(back_populates="downloads")
    user: Mapped[User] = relationship()


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)
