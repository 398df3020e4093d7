"""Reminder claims, the e-mail outbox, in-app notifications and calendar feed tokens."""
from __future__ import annotations

from datetime import date, datetime
from typing import NamedTuple, Optional

from sqlalchemy import Date, DateTime, ForeignKey, ForeignKeyConstraint, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.clock import utcnow
from app.extensions import db


class ReminderSweep(db.Model):
    """One run of the sweep that claimed something: its digests list the claims it made."""

    __tablename__ = "reminder_sweeps"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The day the sweep was run for.
    as_of: Mapped[date] = mapped_column(Date)
    ran_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReminderAudience(db.Model):
    """Who is told of a reminder: addresses e-mailed and users shown it in the app, kept as they
    were when it was claimed. Reminders about the same organisations share one audience, so a
    register of any size has a few hundred of them; ``fingerprint`` (SHA-256 of the members)
    finds the one a new reminder shares."""

    __tablename__ = "reminder_audiences"

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    members: Mapped[list["ReminderAudienceMember"]] = relationship(order_by="ReminderAudienceMember.position")


class ReminderAudienceMember(db.Model):
    """An address to e-mail, or a user to notify in the app (one or the other)."""

    __tablename__ = "reminder_audience_members"

    audience_id: Mapped[int] = mapped_column(ForeignKey("reminder_audiences.id"), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[Optional[str]] = mapped_column(String(254))
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)


class ReminderSweepAudience(db.Model):
    """An audience a sweep set out to tell: each of its claims names one of these.

    Claims reach their sweep and their audience through this row, with one foreign key, not one
    each: a first sweep over a large register checks a reference for each of a hundred thousand
    claims, and the second check cost it a third of a second on PostgreSQL. It is written with
    the audiences, before the claims; if another sweep claimed all of an audience's reminders
    first, the row stays with no claims of its own.
    """

    __tablename__ = "reminder_sweep_audiences"

    sweep_id: Mapped[int] = mapped_column(ForeignKey("reminder_sweeps.id"), primary_key=True)
    audience_id: Mapped[int] = mapped_column(ForeignKey("reminder_audiences.id"), primary_key=True)


class ReminderClaim(db.Model):
    """One milestone of one due item, claimed before anything about it is sent.

    The unique constraint is what makes a reminder go out exactly once: reruns, misfires, two
    schedulers and downtime all try to insert the same row, and only one insert succeeds. Its
    audience says who is told; the e-mail digests that tell them are written in the same
    transaction, and the users of the audience see it in the app until they acknowledge it.
    """

    __tablename__ = "reminder_claims"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(100))
    due_on: Mapped[date] = mapped_column(Date)
    #: ``before:30``, ``before:0`` (the due day) or ``overdue:N`` (N intervals late).
    milestone: Mapped[str] = mapped_column(String(16))
    #: The day the sweep that claimed it was run for (its ``as_of``).
    as_of: Mapped[date] = mapped_column(Date)
    title: Mapped[str] = mapped_column(String(300))
    #: Whether the CSP chair's organisation was told too (the item was overdue).
    escalated: Mapped[bool] = mapped_column(default=False)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: The sweep that claimed it and who it told (``ReminderSweepAudience``, one foreign key for both).
    sweep_id: Mapped[int]
    audience_id: Mapped[int]

    audience: Mapped[ReminderAudience] = relationship(
        primaryjoin="foreign(ReminderClaim.audience_id) == ReminderAudience.id", viewonly=True)

    __table_args__ = (
        # Named explicitly: the conventional name is 64 characters, one more than PostgreSQL keeps.
        # Due date first: a sweep reads the claims already made over a range of due dates, and
        # _latest_claims looks up (due date, kind, subject): this index serves both, with no
        # index on the due date of its own to keep up for every claim.
        UniqueConstraint("due_on", "kind", "subject_type", "subject_id", "milestone",
                         name="uq_reminder_claims_milestone"),
        # Who was told, in which sweep: a user's notifications and a digest's reminders both start
        # from the audience. One index, not one each: a first sweep inserts a claim per item.
        Index("ix_reminder_claims_audience_sweep", "audience_id", "sweep_id"),
        ForeignKeyConstraint(["sweep_id", "audience_id"],
                             ["reminder_sweep_audiences.sweep_id", "reminder_sweep_audiences.audience_id"]),
    )


class OutboxMessage(db.Model):
    """An e-mail written in the transaction that decided to send it, delivered after commit.

    Delivery claims rows with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so two deliverers never
    send the same message; failures are retried with exponential backoff.
    """

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: A digest: the reminders this sweep claimed that ``to_address`` is told of, in one e-mail,
    #: written from the claims when sent (``outbox.load_digests``).
    sweep_id: Mapped[Optional[int]] = mapped_column(ForeignKey("reminder_sweeps.id"), index=True)
    #: The one reminder this e-mail tells of (written before digests); its text comes from the claim.
    claim_id: Mapped[Optional[int]] = mapped_column(ForeignKey("reminder_claims.id"), index=True)
    to_address: Mapped[str] = mapped_column(String(254))
    #: Subject and body of any other e-mail (none for reminders: their claims hold what they say).
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

    #: A digest's reminders (a ``Digest``), set by ``outbox.load_digests``; not a column.
    digest = None

    def content(self) -> tuple[str, str]:
        """The subject and body to send."""
        from app.reminders.text import digest_text, reminder_text

        if self.subject is not None and self.body is not None:
            return self.subject, self.body
        if self.sweep_id is not None:
            if self.digest is None:
                raise ValueError(f"outbox message {self.id} is a digest: load it with outbox.load_digests")
            return digest_text(self.digest)
        if self.claim is None:
            raise ValueError(f"outbox message {self.id} has neither text nor a reminder")
        return reminder_text(self.claim)

    @property
    def claim_ids(self) -> tuple[int, ...]:
        """The reminders this e-mail lists (a digest's first ``text.DIGEST_LISTED``)."""
        if self.digest is not None:
            return tuple(claim.id for claim in self.digest.claims)
        return () if self.claim_id is None else (self.claim_id,)

    @property
    def display_subject(self) -> str:
        return self.content()[0]

    @property
    def message_id(self) -> str:
        """The same Message-ID on every attempt, so a receiver can drop a resent copy."""
        return f"<accord-outbox-{self.id}@accord.invalid>"


class Digest(NamedTuple):
    """The reminders of one sweep to one address: the first ones listed, and how many in all."""

    claims: list[ReminderClaim]
    total: int
    overdue: int


class Notification(db.Model):
    """What one user did with a reminder shown in the app: acknowledged it, or snoozed it.

    A reminder is shown to every user of its claim's audience; the row is made the first time
    the user acts on it (rows made by sweeps before audiences existed stay valid). What it says
    comes from its claim, which never changes.
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
    claim: Mapped[ReminderClaim] = relationship()

    __table_args__ = (UniqueConstraint("claim_id", "user_id"),)

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
