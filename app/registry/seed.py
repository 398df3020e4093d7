"""Loading the Dartford demo register into an empty database."""
from __future__ import annotations

from datetime import date

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth import service as auth_service
from app.registry import service
from app.registry.demo import DEMO_PASSWORD, DemoRegister, demo_register
from app.registry.models import KmisaVersion, Organisation, Signature

SEED_ACTOR = "system:seed"


def is_seeded(session: Session) -> bool:
    return (session.scalar(select(func.count()).select_from(Organisation)) or 0) > 0


def seed_demo(session: Session, today: date) -> DemoRegister:
    """Create the demo organisations, signatures, subgroups and users, dated relative to ``today``.

    K-MISA versions must already be loaded from ``policies/kmisa.yaml``.
    """
    register = demo_register(today)
    versions = {v.label: v for v in session.scalars(select(KmisaVersion))}
    # Create organisations first, then link successors, so order in the data does not matter.
    for org in register.organisations:
        service.create_organisation(session, SEED_ACTOR, {
            "code": org.code, "name": org.name, "kind": org.kind,
            "is_public_authority": org.is_public_authority, "is_competent_authority": org.is_competent_authority,
            "dpo_name": org.dpo_name, "dpo_email": org.dpo_email,
            "ico_registration_number": org.ico_registration_number,
            "ico_registration_expires_on": org.ico_registration_expires_on,
            "apd_paragraphs": list(org.apd_paragraphs), "apd_review_on": org.apd_review_on,
        })
    for org in register.organisations:
        if org.dissolved_on or org.successor:
            organisation = service.get_organisation(session, org.code)
            service.update_organisation(session, SEED_ACTOR, organisation,
                                        {"dissolved_on": org.dissolved_on, "successor": org.successor})
    for sig in register.signatures:
        # Signatures are historical facts: store them as given, even to versions no longer valid.
        organisation = service.get_organisation(session, sig.organisation)
        signature = Signature(organisation=organisation, kmisa_version=versions[sig.kmisa_version],
                              signed_on=sig.signed_on, signed_by_name=sig.signed_by_name,
                              signed_by_role=sig.signed_by_role, expires_on=sig.expires_on,
                              withdrawn_on=sig.withdrawn_on,
                              withdrawal_reason="Withdrew from the partnership" if sig.withdrawn_on else None)
        session.add(signature)
        session.flush()
        audit.record(session, action="signature.recorded", actor=SEED_ACTOR, organisation=organisation.code,
                     subject_type="signature", subject_id=signature.id,
                     details={"kmisa_version": sig.kmisa_version, "signed_on": sig.signed_on.isoformat(),
                              "withdrawn_on": sig.withdrawn_on.isoformat() if sig.withdrawn_on else None})
    for group in sorted(register.subgroups, key=lambda g: g.parent is not None):
        service.save_subgroup(session, SEED_ACTOR, {
            "code": group.code, "name": group.name, "description": group.description,
            "lead_organisation": group.lead_organisation, "parent": group.parent})
    for user in register.users:
        auth_service.create_user(session, SEED_ACTOR, email=user.email, name=user.name,
                                 organisation_code=user.organisation, roles=list(user.roles),
                                 password=DEMO_PASSWORD)
    return register
