"""The register's tables: organisations, K-MISA versions, signatures and subgroups."""
from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Optional

from sqlalchemy import JSON, CheckConstraint, Date, DateTime, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.clock import utcnow
from app.extensions import db


class OrganisationKind(str, enum.Enum):
    POLICE = "police"
    DISTRICT_COUNCIL = "district_council"
    COUNTY_COUNCIL = "county_council"
    NHS_BODY = "nhs_body"
    PROBATION = "probation"
    FIRE_AND_RESCUE = "fire_and_rescue"
    VOLUNTARY = "voluntary"
    PRIVATE = "private"
    HOUSING = "housing"

    @property
    def label(self) -> str:
        return {
            "nhs_body": "NHS body",
        }.get(self.value, self.value.replace("_", " ").capitalize())


class SignatoryRole(str, enum.Enum):
    """Who may sign the K-MISA for an organisation."""

    CHIEF_OFFICER = "chief_officer"
    SIRO = "siro"
    CALDICOTT_GUARDIAN = "caldicott_guardian"

    @property
    def label(self) -> str:
        return {
            "chief_officer": "Chief officer",
            "siro": "Senior Information Risk Owner (SIRO)",
            "caldicott_guardian": "Caldicott Guardian",
        }[self.value]


class Organisation(db.Model):
    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: A short, stable slug used in policy files and the API, e.g. ``kent-police``.
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    is_public_authority: Mapped[bool] = mapped_column(default=False)
    #: A competent authority for the law enforcement purposes of DPA 2018 Part 3.
    is_competent_authority: Mapped[bool] = mapped_column(default=False)
    dissolved_on: Mapped[Optional[date]] = mapped_column(Date)
    #: The body that took over a dissolved organisation's functions.
    successor_id: Mapped[Optional[int]] = mapped_column(ForeignKey("organisations.id"))
    ico_registration_number: Mapped[Optional[str]] = mapped_column(String(32))
    ico_registration_expires_on: Mapped[Optional[date]] = mapped_column(Date)
    dpo_name: Mapped[Optional[str]] = mapped_column(String(200))
    dpo_email: Mapped[Optional[str]] = mapped_column(String(254))
    #: Schedule 1 paragraphs (DPA 2018) covered by the organisation's appropriate policy document.
    apd_paragraphs: Mapped[list[int]] = mapped_column(JSON, default=list)
    apd_review_on: Mapped[Optional[date]] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    successor: Mapped[Optional["Organisation"]] = relationship(remote_side=[id])
    signatures: Mapped[list["Signature"]] = relationship(
        back_populates="organisation", order_by="Signature.signed_on.desc()"
    )

    __table_args__ = (CheckConstraint("successor_id IS NULL OR successor_id <> id", name="not_own_successor"),)

    def is_dissolved_on(self, as_of: date) -> bool:
        return self.dissolved_on is not None and self.dissolved_on <= as_of

    @property
    def kind_label(self) -> str:
        try:
            return OrganisationKind(self.kind).label
        except ValueError:
            return self.kind

    def __repr__(self) -> str:
        return f"<Organisation {self.code}>"


class KmisaVersion(db.Model):
    """A published version of the Kent and Medway Information Sharing Agreement.

    Whether a version is still valid is policy (``policies/kmisa.yaml``), copied here when the
    policies are loaded so that the register can be read without the files.
    """

    __tablename__ = "kmisa_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(32), unique=True)
    published_on: Mapped[date] = mapped_column(Date)
    is_valid: Mapped[bool] = mapped_column(default=True)

    def __repr__(self) -> str:
        return f"<KmisaVersion {self.label}>"


class Signature(db.Model):
    """An organisation's signature to a K-MISA version; its status is derived, never stored."""

    __tablename__ = "signatures"

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    kmisa_version_id: Mapped[int] = mapped_column(ForeignKey("kmisa_versions.id"))
    signed_on: Mapped[date] = mapped_column(Date)
    signed_by_name: Mapped[str] = mapped_column(String(200))
    signed_by_role: Mapped[str] = mapped_column(String(32))
    #: The date by which the signature must be renewed; none for an open-ended signature.
    expires_on: Mapped[Optional[date]] = mapped_column(Date)
    withdrawn_on: Mapped[Optional[date]] = mapped_column(Date)
    withdrawal_reason: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    organisation: Mapped[Organisation] = relationship(back_populates="signatures")
    kmisa_version: Mapped[KmisaVersion] = relationship()

    __table_args__ = (
        CheckConstraint("expires_on IS NULL OR expires_on > signed_on", name="expires_after_signing"),
        CheckConstraint("withdrawn_on IS NULL OR withdrawn_on >= signed_on", name="withdrawn_after_signing"),
    )

    @property
    def signed_by_role_label(self) -> str:
        try:
            return SignatoryRole(self.signed_by_role).label
        except ValueError:
            return self.signed_by_role


class Subgroup(db.Model):
    """The CSP board or one of its subgroups; each shares under its own protocols."""

    __tablename__ = "subgroups"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    lead_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("subgroups.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    lead_organisation: Mapped[Organisation] = relationship()
    parent: Mapped[Optional["Subgroup"]] = relationship(remote_side=[id])


class RegisterRevision(db.Model):
    """A counter bumped by every change the decision engine depends on (register or policies).

    The engine's snapshot is rebuilt only when this moves, so a decision costs microseconds
    while every change is still seen by the next decision after it commits.
    """

    __tablename__ = "register_revision"

    id: Mapped[int] = mapped_column(primary_key=True)
    revision: Mapped[int] = mapped_column(default=0)
