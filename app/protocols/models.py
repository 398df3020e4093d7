"""Stored policy: protocol versions exactly as loaded, their sign-offs, and the umbrella files."""
from __future__ import annotations

from datetime import date, datetime
from typing import Optional

from sqlalchemy import JSON, Date, DateTime, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.clock import utcnow
from app.extensions import db
from app.registry.models import Organisation, Subgroup


class PolicyDocument(db.Model):
    """A load of ``taxonomy.yaml`` or ``kmisa.yaml``; the newest row per path is in force.

    Keeping the exact bytes lets every decision be replayed against the rules it was made under.
    """

    __tablename__ = "policy_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    loaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    loaded_by: Mapped[str] = mapped_column(String(254))

    __table_args__ = (UniqueConstraint("path", "sha256"),)


class ProtocolVersion(db.Model):
    """One version of a protocol; never changed after loading (a change is a new version)."""

    __tablename__ = "protocol_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column()
    title: Mapped[str] = mapped_column(String(300))
    subgroup_id: Mapped[int] = mapped_column(ForeignKey("subgroups.id"), index=True)
    #: Path of the file under ``policies/`` it was loaded from.
    source_path: Mapped[str] = mapped_column(String(300))
    #: The file's exact text; its SHA-256 is ``content_hash``.
    source: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    effective_from: Mapped[date] = mapped_column(Date)
    review_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[Optional[date]] = mapped_column(Date)
    supersedes: Mapped[Optional[int]] = mapped_column()
    is_retired: Mapped[bool] = mapped_column(default=False)
    #: Organisation codes of every party, in file order, for listing without parsing the file.
    party_codes: Mapped[list[str]] = mapped_column(JSON, default=list)
    loaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    loaded_by: Mapped[str] = mapped_column(String(254))

    subgroup: Mapped[Subgroup] = relationship()
    sign_offs: Mapped[list["ProtocolSignOff"]] = relationship(back_populates="protocol_version",
                                                              order_by="ProtocolSignOff.signed_off_at")

    __table_args__ = (UniqueConstraint("code", "version"),)

    @property
    def label(self) -> str:
        return f"{self.code} v{self.version}"

    @property
    def signed_off_codes(self) -> frozenset[str]:
        return frozenset(s.organisation.code for s in self.sign_offs)

    @property
    def awaiting_codes(self) -> list[str]:
        signed = self.signed_off_codes
        return [code for code in self.party_codes if code not in signed]


class ProtocolSignOff(db.Model):
    """A party's DPO (or delegate) agreeing to a protocol version on the organisation's behalf."""

    __tablename__ = "protocol_sign_offs"

    id: Mapped[int] = mapped_column(primary_key=True)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"), index=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    signed_off_by_user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    signed_off_by_name: Mapped[str] = mapped_column(String(200))
    signed_off_role: Mapped[str] = mapped_column(String(100))
    signed_off_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    protocol_version: Mapped[ProtocolVersion] = relationship(back_populates="sign_offs")
    organisation: Mapped[Organisation] = relationship()

    __table_args__ = (UniqueConstraint("protocol_version_id", "organisation_id"),)
