"""Reminder claims, the e-mail outbox, in-app notifications and calendar feed tokens."""
from __future__ import annotations

from datetime import date, datetime
from typing import Optional

from sqlalchemy import Date, DateTime, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.clock import utcnow
from app.extensions import db


class ReminderClaim(db.Model):
    """One milestone of one due item, claimed before anything about it is sent.

    The unique constraint is what makes a reminder go out exactly once: reruns, misfires, two
    schedulers and downtime all try to insert the same row, and only one insert succeeds. The
    outbox messages and notifications it produces are written in the same transaction.
    """

    __tablename__ = "reminder_claims"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(100))
    due_on: Mapped[date] = mapped_column(Date, index=True)
    #: ``before:30``, ``before:0`` (the due day) or ``overdue:N`` (N intervals late).
    milestone: Mapped[str] = mapped_column(String(16))
    #: The day the sweep that claimed it was run for (its ``as_of``).
    as_of: Mapped[date] = mapped_column(Date)
    title: Mapped[str] = mapped_column(String(300))
    #: Whether the CSP chair's organisation was told too (the item was overdue).
    escalated: Mapped[bool] = mapped_column(default=False)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    # Named explicitly: the conventional name is 64 characters, one more than PostgreSQL keeps.
    __table_args__ = (UniqueConstraint("kind", "subject_type", "subject_id", "due_on", "milestone",
                                       name="uq_reminder_claims_milestone"),)


class OutboxMessage(db.Model):
    """An e-mail written in the transaction that decided to send it, delivered after commit.

    Delivery claims rows with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so two deliverers never
    send the same message; failures are retried with exponential backoff.
    """

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The reminder this e-mail tells of; its subject and body are written from the claim when sent.
    claim_id: Mapped[Optional[int]] = mapped_column(ForeignKey("reminder_claims.id"), index=True)
    to_address: Mapped[str] = mapped_column(String(254))
    #: Subject and body of any other e-mail (none for a reminder: the claim holds what it says).
    subject: Mapped[Optional[str]] = mapped_column(String(300))
    body: Mapped[Optional[str]] = mapped_column(Text)
    #: ``pending`` until sent; ``failed`` after a permanent refusal or too many attempts.
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_attempt_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    #: The kind of failure and the SMTP code, never the server's text (it may echo credentials).
    last_error: Mapped[Optional[str]] = mapped_column(String(200))
    sent_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    claim: Mapped[Optional[ReminderClaim]] = relationship()

    __table_args__ = (Index("ix_outbox_messages_status_next_attempt_at", "status", "next_attempt_at"),)

    def content(self) -> tuple[str, str]:
        """The subject and body to send."""
        if self.subject is not None and self.body is not None:
            return self.subject, self.body
        if self.claim is None:
            raise ValueError(f"outbox message {self.id} has neither text nor a reminder")
        from app.reminders.text import reminder_text

        return reminder_text(self.claim)

    @property
    def display_subject(self) -> str:
        return self.content()[0]

    @property
    def message_id(self) -> str:
        """The same Message-ID on every attempt, so a receiver can drop a resent copy."""
        return f"<accord-outbox-{self.id}@accord.invalid>"


class Notification(db.Model):
    """A reminder shown to one user in the app until acknowledged, or hidden until a snooze ends.

    What it says comes from its claim, which never changes.
    """

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    claim_id: Mapped[int] = mapped_column(ForeignKey("reminder_claims.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    acknowledged_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    #: Hidden from the list until this day, when it shows again; none when not snoozed.
    snoozed_until: Mapped[Optional[date]] = mapped_column(Date)

    user: Mapped[User] = relationship()
    claim: Mapped[ReminderClaim] = relationship(lazy="joined", innerjoin=True)

    __table_args__ = (UniqueConstraint("claim_id", "user_id"),)

    @property
    def kind(self) -> str:
        return self.claim.kind

    @property
    def due_on(self) -> date:
        return self.claim.due_on

    @property
    def title(self) -> str:
        from app.reminders.text import reminder_subject

        return reminder_subject(self.claim.title, self.claim.due_on, self.claim.as_of)

    def is_active_on(self, as_of: date) -> bool:
        return self.acknowledged_at is None and (self.snoozed_until is None or self.snoozed_until <= as_of)


class CalendarFeedToken(db.Model):
    """The secret in a user's calendar feed address, stored only as a peppered hash.

    Calendar programs keep the address and fetch it from their own servers, so it carries a
    credential that can read the due dates and nothing else, and can be revoked on its own.
    """

    __tablename__ = "calendar_feed_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship()
