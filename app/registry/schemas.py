"""JSON shapes of the register for /api/v1. Unknown fields are refused, booleans are not numbers."""
from __future__ import annotations

from datetime import date
from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from app.api.errors import MAX_ROW_ID
from app.registry.models import OrganisationKind, SignatoryRole

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$",
                            description="A slug: lower-case letters, digits and single hyphens")]
Paragraph = Annotated[StrictInt, Field(ge=1, le=37)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrganisationPath(Strict):
    code: Code


class OrganisationFields(Strict):
    name: Optional[str] = Field(default=None, min_length=1, max_length=200)
    kind: Optional[OrganisationKind] = None
    is_public_authority: Optional[StrictBool] = None
    is_competent_authority: Optional[StrictBool] = Field(
        default=None, description="A competent authority for the law enforcement purposes (DPA 2018 Part 3)")
    dissolved_on: Optional[date] = None
    successor: Optional[Code] = Field(default=None, description="Code of the body that took over its functions")
    ico_registration_number: Optional[str] = Field(default=None, max_length=32)
    ico_registration_expires_on: Optional[date] = None
    dpo_name: Optional[str] = Field(default=None, max_length=200)
    dpo_email: Optional[str] = Field(default=None, max_length=254)
    apd_paragraphs: Optional[list[Paragraph]] = Field(
        default=None, description="DPA 2018 Schedule 1 paragraphs covered by its appropriate policy document")
    apd_review_on: Optional[date] = None


class OrganisationCreate(OrganisationFields):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    kind: OrganisationKind
    is_public_authority: StrictBool
    is_competent_authority: StrictBool = False


class OrganisationUpdate(OrganisationFields):
    """Only the fields present are changed."""


class SignatureOut(BaseModel):
    id: int
    kmisa_version: str
    signed_on: date
    signed_by_name: str
    signed_by_role: SignatoryRole
    expires_on: Optional[date]
    withdrawn_on: Optional[date]
    status: str = Field(description="Derived from dates and versions: active, due_for_renewal, expired, "
                                    "superseded, withdrawn or not_yet_signed")


class OrganisationOut(BaseModel):
    code: str
    name: str
    kind: OrganisationKind
    is_public_authority: bool
    is_competent_authority: bool
    status: str = Field(description="active or dissolved")
    dissolved_on: Optional[date]
    successor: Optional[str]
    ico_registration_number: Optional[str]
    ico_registration_expires_on: Optional[date]
    dpo_name: Optional[str]
    dpo_email: Optional[str]
    apd_paragraphs: list[int]
    apd_review_on: Optional[date]
    signatory_status: str = Field(description="The organisation's K-MISA standing today, or never_signed")
    signatures: list[SignatureOut]


class OrganisationList(BaseModel):
    organisations: list[OrganisationOut]


class SignatureCreate(Strict):
    kmisa_version: str = Field(min_length=1, max_length=32, description="A K-MISA version label, e.g. 2024")
    signed_on: date
    signed_by_name: str = Field(min_length=1, max_length=200)
    signed_by_role: SignatoryRole
    expires_on: Optional[date] = None


class SignaturePath(Strict):
    signature_id: StrictInt = Field(ge=1, le=MAX_ROW_ID)


class SignatureWithdrawal(Strict):
    withdrawn_on: date
    reason: str = Field(min_length=1, max_length=2000)


class SubgroupPath(Strict):
    subgroup: Code


class SubgroupCreate(Strict):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    lead_organisation: Code
    parent: Optional[Code] = None


class SubgroupUpdate(Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    lead_organisation: Code
    parent: Optional[Code] = None


class SubgroupOut(BaseModel):
    code: str
    name: str
    description: str
    lead_organisation: str
    parent: Optional[str]


class SubgroupList(BaseModel):
    subgroups: list[SubgroupOut]
