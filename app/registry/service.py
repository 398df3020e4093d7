"""Keeping the register: organisations, signatures, subgroups. Services flush; the caller commits."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Any

from sqlalchemy import ScalarSelect, Select, func, select, update
from sqlalchemy.orm import Session, selectinload

from app.audit import service as audit
from app.errors import NotFound, ValidationFailed
from app.registry.models import (
    KmisaVersion,
    Organisation,
    OrganisationKind,
    RegisterRevision,
    Signature,
    SignatoryRole,
    Subgroup,
)
from app.registry.status import DEFAULT_RENEWAL_WINDOW_DAYS, SignatureFacts, SignatureStatus, signature_status

CODE_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
CODE_HINT = "Use lower-case letters, digits and single hyphens, like kent-police"


# --- the revision the decision engine's snapshot follows ---------------------------------------


def bump_revision(session: Session) -> None:
    """Note that the register or the policies changed, in the same transaction as the change."""
    result = session.execute(update(RegisterRevision).where(RegisterRevision.id == 1)
                             .values(revision=RegisterRevision.revision + 1))
    if result.rowcount == 0:
        session.add(RegisterRevision(id=1, revision=1))
        session.flush()


def current_revision(session: Session) -> int:
    """Every check and recorded exchange asks (``decisions.service.current_register``)."""
    return session.scalar(_revision()) or 0


def revision_subquery() -> ScalarSelect:
    """The revision as a column of another statement (0 before the first change), for a caller
    that reads it along with something else: an API request's token lookup."""
    return func.coalesce(_revision().scalar_subquery(), 0)


@cache
def _revision() -> Select:
    # Built once: constructing it and its cache key cost more CPU than the database takes to answer.
    return select(RegisterRevision.revision).where(RegisterRevision.id == 1)


# --- reading ---------------------------------------------------------------------------------


def get_organisation(session: Session, code: str) -> Organisation:
    organisation = session.scalar(select(Organisation).where(Organisation.code == code))
    if organisation is None:
        raise NotFound(f"There is no organisation with the code {code!r}")
    return organisation


def list_organisations(session: Session) -> list[Organisation]:
    return list(
        session.scalars(
            select(Organisation)
            .options(selectinload(Organisation.signatures).selectinload(Signature.kmisa_version))
            .order_by(func.lower(Organisation.name))
        )
    )


def list_kmisa_versions(session: Session) -> list[KmisaVersion]:
    return list(session.scalars(select(KmisaVersion).order_by(KmisaVersion.published_on.desc())))


def get_signature(session: Session, signature_id: int) -> Signature:
    signature = session.get(Signature, signature_id)
    if signature is None:
        raise NotFound("There is no such signature")
    return signature


def get_subgroup(session: Session, code: str) -> Subgroup:
    subgroup = session.scalar(select(Subgroup).where(Subgroup.code == code))
    if subgroup is None:
        raise NotFound(f"There is no subgroup with the code {code!r}")
    return subgroup


def list_subgroups(session: Session) -> list[Subgroup]:
    return list(session.scalars(select(Subgroup).order_by(Subgroup.parent_id.is_not(None), Subgroup.name)))


@dataclass(frozen=True)
class SignatureView:
    """A signature with its status on a given day."""

    signature: Signature
    status: SignatureStatus


@dataclass(frozen=True)
class SignatoryStanding:
    """Whether an organisation is a current K-MISA signatory, and on which signature that rests."""

    organisation: Organisation
    status: SignatureStatus | None
    signature: Signature | None
    dissolved: bool

    @property
    def label(self) -> str:
        if self.dissolved:
            return "Dissolved"
        if self.status is None:
            return "Never signed"
        return self.status.label


def signature_views(organisation: Organisation, as_of: date,
                    renewal_window_days: int = DEFAULT_RENEWAL_WINDOW_DAYS) -> list[SignatureView]:
    """Every signature of ``organisation`` with its status, newest first."""
    signatures = sorted(organisation.signatures, key=lambda s: (s.signed_on, s.id), reverse=True)
    views = []
    for index, signature in enumerate(signatures):
        # A later signature still in force replaces this one.
        signed_again = any(
            later.signed_on <= as_of and later.kmisa_version.is_valid
            and (later.withdrawn_on is None or later.withdrawn_on > as_of)
            for later in signatures[:index]
        )
        status = signature_status(
            SignatureFacts(organisation.code, signature.kmisa_version.label, signature.signed_on,
                           signature.expires_on, signature.withdrawn_on),
            as_of=as_of,
            version_is_valid=signature.kmisa_version.is_valid,
            signed_again_since=signed_again,
            renewal_window_days=renewal_window_days,
        )
        views.append(SignatureView(signature, status))
    return views


_STANDING_ORDER = [
    SignatureStatus.ACTIVE, SignatureStatus.DUE_FOR_RENEWAL, SignatureStatus.EXPIRED,
    SignatureStatus.WITHDRAWN, SignatureStatus.SUPERSEDED, SignatureStatus.NOT_YET_SIGNED,
]


def standing(organisation: Organisation, as_of: date) -> SignatoryStanding:
    """The signature that best describes the organisation's standing today."""
    views = [v for v in signature_views(organisation, as_of) if v.status is not SignatureStatus.NOT_YET_SIGNED]
    best = min(views, key=lambda v: _STANDING_ORDER.index(v.status), default=None)
    return SignatoryStanding(
        organisation=organisation,
        status=best.status if best else None,
        signature=best.signature if best else None,
        dissolved=organisation.is_dissolved_on(as_of),
    )


# --- validating ------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _validate_organisation(session: Session, data: dict[str, Any], existing: Organisation | None) -> dict[str, str]:
    errors: dict[str, str] = {}
    if existing is None:
        code = data.get("code") or ""
        if not CODE_PATTERN.match(code) or len(code) > 64:
            errors["code"] = CODE_HINT
        elif session.scalar(select(Organisation.id).where(Organisation.code == code)) is not None:
            errors["code"] = f"An organisation with the code {code!r} already exists"
    if not (data.get("name") or "").strip():
        errors["name"] = "Enter the organisation's name"
    elif len(data["name"]) > 200:
        errors["name"] = "Name must be 200 characters or fewer"
    if data.get("kind") not in {k.value for k in OrganisationKind}:
        errors["kind"] = "Select the kind of organisation"
    successor = data.get("successor")
    if successor:
        if existing is not None and successor == existing.code:
            errors["successor"] = "An organisation cannot be its own successor"
        elif session.scalar(select(Organisation.id).where(Organisation.code == successor)) is None:
            errors["successor"] = f"There is no organisation with the code {successor!r}"
    if successor and not data.get("dissolved_on"):
        errors["dissolved_on"] = "Enter the date the organisation was dissolved, or remove the successor"
    paragraphs = data.get("apd_paragraphs") or []
    if any(not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= 37 for p in paragraphs):
        errors["apd_paragraphs"] = "Schedule 1 paragraphs are whole numbers from 1 to 37"
    email = data.get("dpo_email")
    if email and ("@" not in email or len(email) > 254):
        errors["dpo_email"] = "Enter an e-mail address in the correct format, like dpo@example.org"
    return errors


_ORGANISATION_FIELDS = (
    "name", "kind", "is_public_authority", "is_competent_authority", "dissolved_on",
    "ico_registration_number", "ico_registration_expires_on", "dpo_name", "dpo_email",
    "apd_paragraphs", "apd_review_on",
)


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {k: {"from": _jsonable(before.get(k)), "to": _jsonable(v)} for k, v in after.items() if before.get(k) != v}


def _jsonable(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return list(value)
    return value


def _apply_organisation(session: Session, organisation: Organisation, data: dict[str, Any]) -> dict[str, Any]:
    before = {f: getattr(organisation, f) for f in _ORGANISATION_FIELDS}
    before["successor"] = organisation.successor.code if organisation.successor else None
    after: dict[str, Any] = {}
    for field in _ORGANISATION_FIELDS:
        if field in data:
            value = _clean(data[field])
            if field == "apd_paragraphs":
                value = sorted(set(value or []))
            elif value == "":
                value = None
            setattr(organisation, field, value)
            after[field] = value
    if "successor" in data:
        code = data.get("successor") or None
        organisation.successor = get_organisation(session, code) if code else None
        after["successor"] = code
    return _changes(before, after)


def create_organisation(session: Session, actor: Any, data: dict[str, Any]) -> Organisation:
    data = {k: _clean(v) for k, v in data.items()}
    errors = _validate_organisation(session, data, None)
    if errors:
        raise ValidationFailed(errors)
    organisation = Organisation(code=data["code"], apd_paragraphs=[])
    session.add(organisation)
    changes = _apply_organisation(session, organisation, data)
    session.flush()
    bump_revision(session)
    audit.record(session, action="organisation.created", actor=actor, organisation=organisation.code,
                 subject_type="organisation", subject_id=organisation.code, details={"changes": changes})
    return organisation


def update_organisation(session: Session, actor: Any, organisation: Organisation, data: dict[str, Any]) -> Organisation:
    data = {k: _clean(v) for k, v in data.items() if k != "code"}
    merged = {f: getattr(organisation, f) for f in _ORGANISATION_FIELDS}
    merged["successor"] = organisation.successor.code if organisation.successor else None
    merged.update(data)
    errors = _validate_organisation(session, merged, organisation)
    if errors:
        raise ValidationFailed(errors)
    changes = _apply_organisation(session, organisation, data)
    session.flush()
    bump_revision(session)
    if changes:
        audit.record(session, action="organisation.updated", actor=actor, organisation=organisation.code,
                     subject_type="organisation", subject_id=organisation.code, details={"changes": changes})
    return organisation


def _get_version(session: Session, label: str | None) -> KmisaVersion | None:
    if not label:
        return None
    return session.scalar(select(KmisaVersion).where(KmisaVersion.label == label))


def record_signature(session: Session, actor: Any, organisation: Organisation, data: dict[str, Any]) -> Signature:
    """Record that ``organisation`` has signed a K-MISA version."""
    data = {k: _clean(v) for k, v in data.items()}
    errors: dict[str, str] = {}
    version = _get_version(session, data.get("kmisa_version"))
    if version is None:
        known = ", ".join(v.label for v in list_kmisa_versions(session)) or "none loaded"
        errors["kmisa_version"] = f"Select a K-MISA version ({known})"
    elif not version.is_valid:
        errors["kmisa_version"] = f"K-MISA {version.label} is no longer valid: record a signature to a current version"
    signed_on = data.get("signed_on")
    if not isinstance(signed_on, date):
        errors["signed_on"] = "Enter the date the agreement was signed"
    if not data.get("signed_by_name"):
        errors["signed_by_name"] = "Enter the name or post of the person who signed"
    if data.get("signed_by_role") not in {r.value for r in SignatoryRole}:
        errors["signed_by_role"] = "Select the signatory's role"
    expires_on = data.get("expires_on")
    if expires_on is not None and not isinstance(expires_on, date):
        errors["expires_on"] = "Enter a real date for the renewal date"
    elif isinstance(expires_on, date) and isinstance(signed_on, date) and expires_on <= signed_on:
        errors["expires_on"] = "The renewal date must be after the date it was signed"
    if organisation.dissolved_on is not None and isinstance(signed_on, date) and signed_on >= organisation.dissolved_on:
        errors["signed_on"] = f"{organisation.name} was dissolved on {organisation.dissolved_on:%d %B %Y}"
    if errors:
        raise ValidationFailed(errors)
    signature = Signature(
        organisation=organisation, kmisa_version=version, signed_on=signed_on,
        signed_by_name=data["signed_by_name"], signed_by_role=data["signed_by_role"], expires_on=expires_on,
    )
    session.add(signature)
    session.flush()
    bump_revision(session)
    audit.record(session, action="signature.recorded", actor=actor, organisation=organisation.code,
                 subject_type="signature", subject_id=signature.id,
                 details={"kmisa_version": version.label, "signed_on": signed_on.isoformat(),
                          "signed_by_role": signature.signed_by_role,
                          "expires_on": expires_on.isoformat() if expires_on else None})
    return signature


def withdraw_signature(session: Session, actor: Any, signature: Signature, *, withdrawn_on: Any, reason: str) -> Signature:
    errors: dict[str, str] = {}
    if signature.withdrawn_on is not None:
        errors["withdrawn_on"] = f"This signature was already withdrawn on {signature.withdrawn_on:%d %B %Y}"
    elif not isinstance(withdrawn_on, date):
        errors["withdrawn_on"] = "Enter the date the signature was withdrawn"
    elif withdrawn_on < signature.signed_on:
        errors["withdrawn_on"] = "The withdrawal date cannot be before the date it was signed"
    if not (reason or "").strip():
        errors["reason"] = "Enter why the signature was withdrawn"
    if errors:
        raise ValidationFailed(errors)
    signature.withdrawn_on = withdrawn_on
    signature.withdrawal_reason = reason.strip()
    session.flush()
    bump_revision(session)
    audit.record(session, action="signature.withdrawn", actor=actor, organisation=signature.organisation.code,
                 subject_type="signature", subject_id=signature.id,
                 details={"withdrawn_on": withdrawn_on.isoformat(), "kmisa_version": signature.kmisa_version.label})
    return signature


def _validate_subgroup(session: Session, data: dict[str, Any], existing: Subgroup | None) -> dict[str, str]:
    errors: dict[str, str] = {}
    if existing is None:
        code = data.get("code") or ""
        if not CODE_PATTERN.match(code) or len(code) > 64:
            errors["code"] = CODE_HINT.replace("kent-police", "vcs-group")
        elif session.scalar(select(Subgroup.id).where(Subgroup.code == code)) is not None:
            errors["code"] = f"A subgroup with the code {code!r} already exists"
    if not (data.get("name") or "").strip():
        errors["name"] = "Enter the subgroup's name"
    lead = data.get("lead_organisation")
    if not lead or session.scalar(select(Organisation.id).where(Organisation.code == lead)) is None:
        errors["lead_organisation"] = "Select the lead organisation"
    parent = data.get("parent")
    if parent:
        if existing is not None and parent == existing.code:
            errors["parent"] = "A subgroup cannot be its own parent"
        elif session.scalar(select(Subgroup.id).where(Subgroup.code == parent)) is None:
            errors["parent"] = f"There is no subgroup with the code {parent!r}"
    return errors


def save_subgroup(session: Session, actor: Any, data: dict[str, Any], existing: Subgroup | None = None) -> Subgroup:
    data = {k: _clean(v) for k, v in data.items()}
    errors = _validate_subgroup(session, data, existing)
    if errors:
        raise ValidationFailed(errors)
    subgroup = existing or Subgroup(code=data["code"])
    subgroup.name = data["name"]
    subgroup.description = data.get("description") or ""
    subgroup.lead_organisation = get_organisation(session, data["lead_organisation"])
    subgroup.parent = get_subgroup(session, data["parent"]) if data.get("parent") else None
    session.add(subgroup)
    session.flush()
    bump_revision(session)
    audit.record(session, action="subgroup.updated" if existing else "subgroup.created", actor=actor,
                 organisation=subgroup.lead_organisation.code, subject_type="subgroup", subject_id=subgroup.code,
                 details={"name": subgroup.name, "lead": subgroup.lead_organisation.code,
                          "parent": subgroup.parent.code if subgroup.parent else None})
    return subgroup


def sync_kmisa_versions(session: Session, versions: Iterable[tuple[str, date, bool]], actor: Any = "system") -> None:
    """Bring the K-MISA versions in line with ``policies/kmisa.yaml``."""
    existing = {v.label: v for v in session.scalars(select(KmisaVersion))}
    for label, published_on, is_valid in versions:
        version = existing.get(label)
        if version is None:
            session.add(KmisaVersion(label=label, published_on=published_on, is_valid=is_valid))
        elif (version.published_on, version.is_valid) != (published_on, is_valid):
            version.published_on, version.is_valid = published_on, is_valid
        else:
            continue
        bump_revision(session)
        audit.record(session, action="kmisa_version.synced", actor=actor, subject_type="kmisa_version",
                     subject_id=label, details={"published_on": published_on.isoformat(), "valid": is_valid})
    session.flush()
