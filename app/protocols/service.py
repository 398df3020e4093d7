"""Loading ``policies/`` into the database, signing protocols off, and reading their status."""
from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.audit import service as audit
from app.auth.models import Role, User
from app.auth.permissions import require_role
from app.errors import Conflict, NotFound, NotPermitted, ValidationFailed
from app.policies import loader
from app.policies.loader import PolicyBundle
from app.protocols.models import PolicyDocument, ProtocolSignOff, ProtocolVersion
from app.registry import service as registry
from app.registry.models import Organisation, Subgroup


class PolicyLoadRefused(Conflict):
    """Loading would change something already loaded, or refers to what the register lacks."""

    def __init__(self, problems: list[str]):
        super().__init__("The policies were not loaded: " + "; ".join(problems))
        self.problems = problems


@dataclass
class LoadReport:
    bundle_hash: str
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    documents_updated: list[str] = field(default_factory=list)


def load_policies(session: Session, root: str | Path, actor: Any) -> LoadReport:
    """Store every new protocol version and umbrella file from ``root``, all or nothing.

    A file whose version is already loaded with different content is refused: protocol versions
    are immutable once loaded, because decisions cite them by hash.
    """
    if not Path(root).is_dir():
        raise loader.PolicyError([loader.PolicyProblem(str(root), None, None, "the policies folder does not exist")])
    sources = loader.collect_sources(Path(root))
    bundle = loader.bundle_from_sources(sources)  # raises PolicyError with file, line and field
    report = LoadReport(bundle_hash=bundle.sha256)
    problems: list[str] = []

    existing = {(p.code, p.version): p for p in session.scalars(select(ProtocolVersion))}
    subgroups = {s.code: s for s in session.scalars(select(Subgroup))}
    organisations = set(session.scalars(select(Organisation.code)))
    to_add = []
    for loaded in bundle.protocols:
        protocol = loaded.protocol
        stored = existing.get(loaded.key)
        if stored is not None:
            if stored.content_hash != loaded.sha256:
                problems.append(
                    f"{loaded.path} has changed since {protocol.code} v{protocol.version} was loaded on "
                    f"{stored.loaded_at:%d %B %Y}; loaded versions cannot change: save the change as "
                    f"{protocol.code}-v{_next_version(existing, protocol.code)}.yaml with "
                    f"'supersedes: {protocol.version}'"
                )
            else:
                report.unchanged.append(f"{protocol.code} v{protocol.version}")
            continue
        if protocol.subgroup not in subgroups:
            problems.append(f"{loaded.path}: subgroup {protocol.subgroup!r} is not in the register; add it first")
        unknown = [p.organisation for p in protocol.parties if p.organisation not in organisations]
        if unknown:
            problems.append(f"{loaded.path}: {', '.join(unknown)} not in the register; add the organisation first")
        to_add.append(loaded)
    if problems:
        raise PolicyLoadRefused(problems)

    _store_documents(session, bundle, sources, actor, report)
    registry.sync_kmisa_versions(
        session, [(v.label, v.published_on, v.valid) for v in bundle.kmisa.versions], actor=actor)
    for loaded in to_add:
        protocol = loaded.protocol
        version = ProtocolVersion(
            code=protocol.code, version=protocol.version, title=protocol.title,
            subgroup=subgroups[protocol.subgroup], source_path=loaded.path, source=loaded.source,
            content_hash=loaded.sha256, effective_from=protocol.effective_from, review_on=protocol.review_on,
            ends_on=protocol.ends_on, supersedes=protocol.supersedes, is_retired=protocol.status == "retired",
            party_codes=[p.organisation for p in protocol.parties], loaded_by=audit.actor_label(actor)[0] or "system",
        )
        session.add(version)
        session.flush()
        audit.record(session, action="protocol.loaded", actor=actor, organisation=subgroups[protocol.subgroup].lead_organisation.code,
                     subject_type="protocol_version", subject_id=f"{protocol.code}:v{protocol.version}",
                     details={"content_hash": loaded.sha256, "path": loaded.path, "subgroup": protocol.subgroup,
                              "bundle_hash": bundle.sha256})
        report.added.append(f"{protocol.code} v{protocol.version}")
    if report.added or report.documents_updated:
        registry.bump_revision(session)
    session.flush()
    return report


def _next_version(existing: dict[tuple[str, int], ProtocolVersion], code: str) -> int:
    return max((v for c, v in existing if c == code), default=0) + 1


def _store_documents(session: Session, bundle: PolicyBundle, sources: dict[str, bytes], actor: Any,
                     report: LoadReport) -> None:
    current = current_documents(session)
    for path, sha in ((loader.TAXONOMY_FILE, bundle.taxonomy_sha256), (loader.KMISA_FILE, bundle.kmisa_sha256)):
        if current.get(path) is not None and current[path].sha256 == sha:
            continue
        session.add(PolicyDocument(path=path, sha256=sha, source=sources[path].decode(), loaded_by=audit.actor_label(actor)[0] or "system"))
        audit.record(session, action="policy_document.loaded", actor=actor, subject_type="policy_document",
                     subject_id=path, details={"sha256": sha, "bundle_hash": bundle.sha256})
        report.documents_updated.append(path)
    session.flush()


def current_documents(session: Session) -> dict[str, PolicyDocument]:
    rows = session.scalars(select(PolicyDocument).order_by(PolicyDocument.id))
    return {row.path: row for row in rows}  # later rows win


def stored_bundle(session: Session, extra_sources: dict[str, bytes] | None = None) -> PolicyBundle:
    """The bundle as loaded into the database (not as the files stand now), optionally with proposals."""
    sources: dict[str, bytes] = {doc.path: doc.source.encode() for doc in current_documents(session).values()}
    for version in session.scalars(select(ProtocolVersion)):
        sources[version.source_path] = version.source.encode()
    sources.update(extra_sources or {})
    if not sources:
        raise NotFound("No policies have been loaded: run `accord policies load`.")
    return loader.bundle_from_sources(sources)


# --- status -----------------------------------------------------------------------------------


class ProtocolStatus(str, enum.Enum):
    DRAFT = "draft"
    APPROVED = "approved"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    RETIRED = "retired"

    @property
    def label(self) -> str:
        return self.value.capitalize()


@dataclass(frozen=True)
class ProtocolView:
    version: ProtocolVersion
    status: ProtocolStatus
    past_review: bool
    superseded_by: int | None


def protocol_status(version: ProtocolVersion, siblings: Iterable[ProtocolVersion], as_of: date) -> ProtocolView:
    """Approved only when every party has signed off; superseded once a later approved version is in force."""
    approved = not version.awaiting_codes
    later = [s for s in siblings if s.code == version.code and s.version > version.version
             and not s.awaiting_codes and not s.is_retired and s.effective_from <= as_of]
    superseded_by = max((s.version for s in later), default=None)
    if version.is_retired:
        status = ProtocolStatus.RETIRED
    elif not approved:
        status = ProtocolStatus.DRAFT
    elif superseded_by is not None:
        status = ProtocolStatus.SUPERSEDED
    elif version.ends_on is not None and version.ends_on < as_of:
        status = ProtocolStatus.EXPIRED
    else:
        status = ProtocolStatus.APPROVED
    return ProtocolView(version, status, version.review_on < as_of, superseded_by)


def list_protocols(session: Session, as_of: date, subgroup: str | None = None) -> list[ProtocolView]:
    query = select(ProtocolVersion).options(
        selectinload(ProtocolVersion.sign_offs).selectinload(ProtocolSignOff.organisation),
        selectinload(ProtocolVersion.subgroup),
    ).order_by(ProtocolVersion.code, ProtocolVersion.version.desc())
    versions = list(session.scalars(query))
    views = [protocol_status(v, versions, as_of) for v in versions]
    if subgroup:
        views = [v for v in views if v.version.subgroup.code == subgroup]
    return views


def get_protocol_version(session: Session, code: str, version: int) -> ProtocolVersion:
    found = session.scalar(select(ProtocolVersion).where(ProtocolVersion.code == code,
                                                         ProtocolVersion.version == version))
    if found is None:
        raise NotFound(f"There is no protocol {code} version {version}")
    return found


def sign_off(session: Session, actor: User, version: ProtocolVersion, *, now: datetime) -> ProtocolSignOff:
    """Record the actor's organisation's sign-off of ``version``; only its DPO may give it."""
    require_role(actor, Role.DPO, action="sign off a protocol for their organisation")
    organisation = actor.organisation
    if organisation.code not in version.party_codes:
        raise NotPermitted(f"{organisation.name} is not a party to {version.title} v{version.version}.")
    if organisation.code in version.signed_off_codes:
        raise ValidationFailed({"confirm": f"{organisation.name} has already signed off this version."})
    if version.is_retired:
        raise ValidationFailed({"confirm": "This version is retired and cannot be signed off."})
    record = ProtocolSignOff(protocol_version=version, organisation=organisation, signed_off_by_user_id=actor.id,
                             signed_off_by_name=actor.name, signed_off_role="Data protection officer",
                             signed_off_at=now)
    session.add(record)
    registry.bump_revision(session)
    session.flush()
    session.refresh(version)
    audit.record(session, action="protocol.signed_off", actor=actor, organisation=organisation.code,
                 subject_type="protocol_version", subject_id=f"{version.code}:v{version.version}",
                 details={"content_hash": version.content_hash, "awaiting": version.awaiting_codes,
                          "approved": not version.awaiting_codes})
    return record


def record_demo_sign_offs(session: Session, pending: dict[tuple[str, int], tuple[str, ...]], now: datetime) -> None:
    """Sign off every demo protocol version for every party except those still pending."""
    organisations = {o.code: o for o in session.scalars(select(Organisation))}
    for version in session.scalars(select(ProtocolVersion)):
        waiting = set(pending.get((version.code, version.version), ()))
        for code in version.party_codes:
            if code in waiting or code in version.signed_off_codes:
                continue
            organisation = organisations[code]
            session.add(ProtocolSignOff(protocol_version=version, organisation=organisation,
                                        signed_off_by_name=organisation.dpo_name or "Data protection officer",
                                        signed_off_role="Data protection officer", signed_off_at=now))
            audit.record(session, action="protocol.signed_off", actor="system:seed", organisation=code,
                         subject_type="protocol_version", subject_id=f"{version.code}:v{version.version}",
                         details={"content_hash": version.content_hash, "demo": True})
    registry.bump_revision(session)
    session.flush()
