"""The register through /api/v1: read by any token with `read`, changed by coordinators and admins."""
from __future__ import annotations

from http import HTTPStatus

from flask_openapi3 import APIBlueprint, Tag

from app.api.auth import api_user
from app.api.errors import standard_responses
from app.auth.permissions import require_register_keeper
from app.clock import today
from app.extensions import db
from app.registry import service
from app.registry.models import Organisation, Subgroup
from app.registry.schemas import (
    OrganisationCreate,
    OrganisationList,
    OrganisationOut,
    OrganisationPath,
    OrganisationUpdate,
    SignatureCreate,
    SignatureOut,
    SignaturePath,
    SignatureWithdrawal,
    SubgroupCreate,
    SubgroupList,
    SubgroupOut,
    SubgroupPath,
    SubgroupUpdate,
)

tag = Tag(name="Register", description="K-MISA signatories, signatures and subgroups")
api = APIBlueprint("registry_api", __name__, url_prefix="/api/v1", abp_tags=[tag],
                   abp_security=[{"bearerAuth": []}], abp_responses=standard_responses(401, 403, 422))

READ_ERRORS = standard_responses(404)
WRITE_ERRORS = standard_responses(404, 409)


def organisation_out(organisation: Organisation) -> dict:
    as_of = today()
    standing = service.standing(organisation, as_of)
    return OrganisationOut(
        code=organisation.code, name=organisation.name, kind=organisation.kind,
        is_public_authority=organisation.is_public_authority,
        is_competent_authority=organisation.is_competent_authority,
        status="dissolved" if organisation.is_dissolved_on(as_of) else "active",
        dissolved_on=organisation.dissolved_on,
        successor=organisation.successor.code if organisation.successor else None,
        ico_registration_number=organisation.ico_registration_number,
        ico_registration_expires_on=organisation.ico_registration_expires_on,
        dpo_name=organisation.dpo_name, dpo_email=organisation.dpo_email,
        apd_paragraphs=list(organisation.apd_paragraphs or []), apd_review_on=organisation.apd_review_on,
        signatory_status=standing.status.value if standing.status else "never_signed",
        signatures=[signature_out(v) for v in service.signature_views(organisation, as_of)],
    ).model_dump(mode="json")


def signature_out(view: service.SignatureView) -> SignatureOut:
    s = view.signature
    return SignatureOut(id=s.id, kmisa_version=s.kmisa_version.label, signed_on=s.signed_on,
                        signed_by_name=s.signed_by_name, signed_by_role=s.signed_by_role, expires_on=s.expires_on,
                        withdrawn_on=s.withdrawn_on, status=view.status.value)


def subgroup_out(subgroup: Subgroup) -> dict:
    return SubgroupOut(code=subgroup.code, name=subgroup.name, description=subgroup.description,
                       lead_organisation=subgroup.lead_organisation.code,
                       parent=subgroup.parent.code if subgroup.parent else None).model_dump(mode="json")


@api.get("/organisations", responses={200: OrganisationList})
def list_organisations():
    """Every organisation in the register with its K-MISA standing today."""
    api_user("read")
    return {"organisations": [organisation_out(o) for o in service.list_organisations(db.session)]}


@api.post("/organisations", responses={201: OrganisationOut, **WRITE_ERRORS})
def create_organisation(body: OrganisationCreate):
    """Add an organisation to the register."""
    user = api_user("submit")
    require_register_keeper(user, "change the register")
    organisation = service.create_organisation(db.session, user, body.model_dump())
    db.session.commit()
    return organisation_out(organisation), HTTPStatus.CREATED


@api.get("/organisations/<code>", responses={200: OrganisationOut, **READ_ERRORS})
def get_organisation(path: OrganisationPath):
    """One organisation with every signature it has given."""
    api_user("read")
    return organisation_out(service.get_organisation(db.session, path.code))


@api.patch("/organisations/<code>", responses={200: OrganisationOut, **WRITE_ERRORS})
def update_organisation(path: OrganisationPath, body: OrganisationUpdate):
    """Change the fields given; the rest stay as they are."""
    user = api_user("submit")
    require_register_keeper(user, "change the register")
    organisation = service.get_organisation(db.session, path.code)
    service.update_organisation(db.session, user, organisation, body.model_dump(exclude_unset=True))
    db.session.commit()
    return organisation_out(organisation)


@api.post("/organisations/<code>/signatures", responses={201: OrganisationOut, **WRITE_ERRORS})
def record_signature(path: OrganisationPath, body: SignatureCreate):
    """Record a signature to a K-MISA version."""
    user = api_user("submit")
    require_register_keeper(user, "record signatures")
    organisation = service.get_organisation(db.session, path.code)
    service.record_signature(db.session, user, organisation, body.model_dump())
    db.session.commit()
    return organisation_out(organisation), HTTPStatus.CREATED


@api.post("/signatures/<int:signature_id>/withdrawal", responses={200: OrganisationOut, **WRITE_ERRORS})
def withdraw_signature(path: SignaturePath, body: SignatureWithdrawal):
    """Record that an organisation has withdrawn its signature."""
    user = api_user("submit")
    require_register_keeper(user, "record withdrawals")
    signature = service.get_signature(db.session, path.signature_id)
    service.withdraw_signature(db.session, user, signature, withdrawn_on=body.withdrawn_on, reason=body.reason)
    db.session.commit()
    return organisation_out(signature.organisation)


@api.get("/subgroups", responses={200: SubgroupList})
def list_subgroups():
    """The CSP board and its subgroups."""
    api_user("read")
    return {"subgroups": [subgroup_out(s) for s in service.list_subgroups(db.session)]}


@api.post("/subgroups", responses={201: SubgroupOut, **WRITE_ERRORS})
def create_subgroup(body: SubgroupCreate):
    """Add a subgroup."""
    user = api_user("submit")
    require_register_keeper(user, "change the register")
    subgroup = service.save_subgroup(db.session, user, body.model_dump())
    db.session.commit()
    return subgroup_out(subgroup), HTTPStatus.CREATED


@api.get("/subgroups/<subgroup>", responses={200: SubgroupOut, **READ_ERRORS})
def get_subgroup(path: SubgroupPath):
    """One subgroup."""
    api_user("read")
    return subgroup_out(service.get_subgroup(db.session, path.subgroup))


@api.put("/subgroups/<subgroup>", responses={200: SubgroupOut, **WRITE_ERRORS})
def update_subgroup(path: SubgroupPath, body: SubgroupUpdate):
    """Replace a subgroup's details."""
    user = api_user("submit")
    require_register_keeper(user, "change the register")
    subgroup = service.get_subgroup(db.session, path.subgroup)
    service.save_subgroup(db.session, user, body.model_dump(), existing=subgroup)
    db.session.commit()
    return subgroup_out(subgroup)
