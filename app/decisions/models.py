"""Recorded exchanges: the request, the decision with every finding, and what a DPO did about it."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any, Optional

from sqlalchemy import JSON, Date, DateTime, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.clock import utcnow
from app.extensions import db
from app.registry.models import Organisation


class Exchange(db.Model):
    """A proposed exchange as recorded, decided as of the moment it was recorded.

    The request and the decision are stored whole (JSON), with the protocol version's hash, the
    K-MISA versions and the policy bundle hash, so the decision can be explained and replayed
    years later exactly as it was made.
    """

    __tablename__ = "exchanges"

    id: Mapped[int] = mapped_column(primary_key=True)
    from_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    to_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    purpose: Mapped[str] = mapped_column(String(64))
    protocol_code: Mapped[Optional[str]] = mapped_column(String(64))
    protocol_version: Mapped[Optional[int]] = mapped_column()
    protocol_hash: Mapped[Optional[str]] = mapped_column(String(64))
    #: The subgroup whose protocol was cited; none for one-off sharing.
    subgroup_code: Mapped[Optional[str]] = mapped_column(String(64))
    bundle_hash: Mapped[str] = mapped_column(String(64))
    #: allow, allow_emergency, refer or deny, as the engine decided.
    outcome: Mapped[str] = mapped_column(String(16))
    is_one_off: Mapped[bool] = mapped_column(default=False)
    emergency_category: Mapped[Optional[str]] = mapped_column(String(64))
    retention_months: Mapped[Optional[int]] = mapped_column()
    #: The request exactly as checked (field names of DESIGN §4); never payload content.
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The engine's decision: outcome, every finding with its citation and evidence.
    decision: Mapped[dict[str, Any]] = mapped_column(JSON)

    from_organisation: Mapped[Organisation] = relationship(foreign_keys=[from_organisation_id])
    to_organisation: Mapped[Organisation] = relationship(foreign_keys=[to_organisation_id])
    requested_by: Mapped[User] = relationship()
    resolution: Mapped[Optional["Resolution"]] = relationship(back_populates="exchange", uselist=False)
    emergency_review: Mapped[Optional["EmergencyReview"]] = relationship(back_populates="exchange", uselist=False)

    __table_args__ = (
        Index("ix_exchanges_from_requested", "from_organisation_id", "requested_at"),
        Index("ix_exchanges_to_requested", "to_organisation_id", "requested_at"),
        Index("ix_exchanges_outcome", "outcome", "requested_at"),
        Index("ix_exchanges_one_off_pair", "is_one_off", "from_organisation_id", "to_organisation_id", "purpose",
              "requested_at"),
    )

    @property
    def from_org(self) -> str:
        """The sender's code as requested: organisation codes never change, so no join is needed."""
        return self.request["from_org"]

    @property
    def to_org(self) -> str:
        return self.request["to_org"]

    @property
    def may_proceed(self) -> bool:
        """Whether data may now be sent: allowed, accepted as an emergency, or approved on referral."""
        if self.outcome in ("allow", "allow_emergency"):
            return True
        return self.outcome == "refer" and self.resolution is not None and self.resolution.is_approval

    @property
    def status(self) -> str:
        """What a person needs to know at a glance."""
        if self.outcome == "refer":
            if self.resolution is None:
                return "awaiting_dpo"
            return "approved" if self.resolution.is_approval else "refused"
        return self.outcome


class Resolution(db.Model):
    """A DPO's decision on a referred exchange, with the fields of the ICO's data sharing request form."""

    __tablename__ = "exchange_resolutions"

    id: Mapped[int] = mapped_column(primary_key=True)
    exchange_id: Mapped[int] = mapped_column(ForeignKey("exchanges.id"), unique=True)
    #: approved or refused.
    decision: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[str] = mapped_column(Text)
    decided_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: An approval lapses after this date; a fresh request is needed to share again.
    valid_until: Mapped[Optional[date]] = mapped_column(Date)

    exchange: Mapped[Exchange] = relationship(back_populates="resolution")
    decided_by: Mapped[User] = relationship()

    @property
    def is_approval(self) -> bool:
        return self.decision == "approved"


class EmergencyReview(db.Model):
    """The retrospective DPO review every emergency disclosure needs."""

    __tablename__ = "emergency_reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    exchange_id: Mapped[int] = mapped_column(ForeignKey("exchanges.id"), unique=True)
    due_on: Mapped[date] = mapped_column(Date)
    reviewed_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    reviewed_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    #: justified or not_justified.
    conclusion: Mapped[Optional[str]] = mapped_column(String(16))
    notes: Mapped[Optional[str]] = mapped_column(Text)

    exchange: Mapped[Exchange] = relationship(back_populates="emergency_review")
    reviewed_by: Mapped[Optional[User]] = relationship()
