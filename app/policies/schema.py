"""The shape of the policy files, as pydantic models.

These models are the published contract of ``policies/``: the JSON Schemas shipped in
``policies/schema/`` are generated from them, and the loader validates every file against
them before it checks anything else. They describe one file each and know nothing of the
other files; whether a code a protocol uses exists in the taxonomy is the loader's job, so
that an error can name the file and line where the unknown code was written.

Every model forbids unknown fields (a misspelt field would otherwise be ignored and a DPO
would believe a safeguard was in place), and numbers and booleans are strict: YAML reads
``yes`` as true and ``1`` as a number, and neither may slip into the other's place.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
)


def _date_only(value: Any) -> Any:
    """Accept a date or an ISO date string, never a number, boolean or date-time.

    Pydantic would read ``20250401`` as seconds since 1970; a policy date is always a
    calendar day.
    """
    if isinstance(value, datetime) or isinstance(value, (bool, int, float)):
        raise ValueError("write the date as YYYY-MM-DD")
    return value


#: A calendar day written as YYYY-MM-DD.
PolicyDate = Annotated[date, BeforeValidator(_date_only)]

#: A code people type: lower case letters and digits joined by "-" or "_".
Code = Annotated[StrictStr, StringConstraints(pattern=r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")]

#: A data category code: codes joined by dots, parent first (``criminal_offence.intelligence``).
CategoryCode = Annotated[
    StrictStr, StringConstraints(pattern=r"^[a-z0-9]+(?:_[a-z0-9]+)*(?:\.[a-z0-9]+(?:_[a-z0-9]+)*)*$")
]

#: An organisation's register code (``kent-police``); organisations live in the database.
OrganisationCode = Annotated[StrictStr, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")]

#: A UK GDPR Article 6(1) or Article 9(2) point, such as ``e``, ``ea`` or ``g``.
ArticlePoint = Annotated[StrictStr, StringConstraints(pattern=r"^[a-z]{1,2}$")]

#: A DPA 2018 Schedule 1 paragraph number.
Schedule1Paragraph = Annotated[StrictInt, Field(ge=1, le=99)]

#: Free text a person reads; never empty.
Text = Annotated[StrictStr, StringConstraints(min_length=1)]

PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


class _PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# taxonomy.yaml
# ---------------------------------------------------------------------------------------------


class DataCategory(_PolicyModel):
    """One node of the data category hierarchy; its flags are inherited by its children."""

    label: Text = Field(description="What a DPO calls this data.")
    description: Text | None = None
    special_category: StrictBool = Field(
        default=False, description="Special category data (UK GDPR Art 9(1)); needs an Art 9(2) condition."
    )
    criminal_offence: StrictBool = Field(
        default=False,
        description="Criminal offence data (UK GDPR Art 10, DPA 2018 s11(2)), including victims and witnesses.",
    )
    health: StrictBool = Field(
        default=False,
        description="Confidential health information: the common law duty of confidence and Caldicott apply.",
    )
    depersonalised: StrictBool = Field(
        default=False,
        description="Does not identify anyone (Crime and Disorder Act 1998 s17A); may go to depersonalised-tier parties.",
    )


class Labelled(_PolicyModel):
    label: Text
    description: Text | None = None


class Purpose(_PolicyModel):
    label: Text
    description: Text | None = None
    law_enforcement: StrictBool = Field(
        default=False,
        description="A law enforcement purpose (DPA 2018 s31): prevention, investigation, detection or "
        "prosecution of offences. Police data shared for any other purpose needs a gateway (s36(4)).",
    )
    direct_care: StrictBool = Field(
        default=False, description="Direct care of the individual; health data shared for it needs no Caldicott approval."
    )


class TransferMethod(_PolicyModel):
    label: Text
    security: Literal["secure", "insecure"] = Field(
        description="insecure methods are never permitted (UK GDPR Art 5(1)(f) and Art 32)."
    )
    description: Text | None = None


class LawfulBasis(_PolicyModel):
    label: Text
    citation: Text
    unavailable_to_public_authorities: StrictBool = Field(
        default=False,
        description="A public authority may not rely on this basis for its tasks (UK GDPR Art 6(1), final words).",
    )
    note: Text | None = None


class SpecialCategoryConditionCode(_PolicyModel):
    """An Article 9(2) condition and the DPA 2018 Schedule 1 paragraphs it needs (s10)."""

    label: Text
    citation: Text
    schedule1_part: Annotated[StrictInt, Field(ge=1, le=3)] | None = Field(
        default=None, description="The Schedule 1 Part whose paragraph this condition needs (DPA 2018 s10(2)-(3))."
    )
    schedule1_paragraphs: tuple[Schedule1Paragraph, ...] | None = Field(
        default=None, description="Narrows the Part to these paragraphs (e.g. (h) needs paragraph 2)."
    )


class Schedule1ParagraphEntry(_PolicyModel):
    title: Text
    part: Annotated[StrictInt, Field(ge=1, le=3)]
    condition: StrictBool = Field(
        default=True, description="False for paragraphs that are not processing conditions (paragraph 5)."
    )
    apd_required: StrictBool = Field(
        description="The controller needs an appropriate policy document (DPA 2018 Sch 1 paras 1(1)(b), 5, 39)."
    )
    apd_exempt_when_recipient_competent_authority: StrictBool = Field(
        default=False,
        description="No policy document is needed to disclose to a competent authority (Sch 1 para 10(2)).",
    )
    note: Text | None = None


class Article10Route(_PolicyModel):
    label: Text
    citation: Text
    public_authorities_only: StrictBool = False
    needs_schedule1_paragraph: StrictBool = False


class StatutoryGateway(_PolicyModel):
    title: Text
    citation: Text
    authorises_law_enforcement_reuse: StrictBool = Field(
        default=False,
        description="Authorises data a competent authority holds for law enforcement to be used for another "
        "purpose (DPA 2018 s36(4)).",
    )
    description: Text | None = None


class EmergencyCategory(_PolicyModel):
    label: Text
    citation: Text | None = None
    description: Text | None = None


class Urgency(_PolicyModel):
    label: Text
    why_not_an_emergency: Text


class Taxonomy(_PolicyModel):
    """``policies/taxonomy.yaml``: the shared vocabulary and the legal code lists."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, title="Accord taxonomy", json_schema_extra={"$comment": "policies/taxonomy.yaml"}
    )

    data_categories: dict[CategoryCode, DataCategory] = Field(min_length=1)
    subject_types: dict[Code, Labelled] = Field(min_length=1)
    purposes: dict[Code, Purpose] = Field(min_length=1)
    transfer_methods: dict[Code, TransferMethod] = Field(min_length=1)
    confidentiality_bases: dict[Code, Labelled] = Field(
        min_length=1, description="Common law bases for disclosing confidential information."
    )
    lawful_bases: dict[ArticlePoint, LawfulBasis] = Field(min_length=1, description="UK GDPR Art 6(1).")
    special_category_conditions: dict[ArticlePoint, SpecialCategoryConditionCode] = Field(
        min_length=1, description="UK GDPR Art 9(2)."
    )
    schedule1_paragraphs: dict[int, Schedule1ParagraphEntry] = Field(min_length=1, description="DPA 2018 Schedule 1.")
    article10_routes: dict[Code, Article10Route] = Field(min_length=1, description="UK GDPR Art 10, DPA 2018 s10(5).")
    statutory_gateways: dict[Code, StatutoryGateway] = Field(min_length=1)
    emergency_categories: dict[Code, EmergencyCategory] = Field(min_length=1)
    non_emergency_urgencies: dict[Code, Urgency] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# kmisa.yaml
# ---------------------------------------------------------------------------------------------


class KmisaVersion(_PolicyModel):
    label: Annotated[StrictStr, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] = Field(
        description='The version as signatures cite it; quote years ("2024").'
    )
    published_on: PolicyDate
    valid: StrictBool = Field(description="false once signatures to this version no longer count.")
    note: Text | None = None


class AdHocThreshold(_PolicyModel):
    count: PositiveInt = Field(description="One-off requests for the same pair and purpose that make a pattern.")
    window_days: PositiveInt


class KmisaSettings(_PolicyModel):
    """``policies/kmisa.yaml``: the umbrella agreement's versions and the thresholds the rules use."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, title="Accord K-MISA settings", json_schema_extra={"$comment": "policies/kmisa.yaml"}
    )

    versions: tuple[KmisaVersion, ...] = Field(min_length=1)
    grace_period_days: NonNegativeInt = Field(
        description="Days after a protocol's review date during which requests are referred rather than denied."
    )
    ad_hoc_threshold: AdHocThreshold
    reminder_milestones_days: tuple[NonNegativeInt, ...] = Field(
        min_length=1, description="Days before a due date on which reminders go out, largest first."
    )
    overdue_reminder_interval_days: PositiveInt = Field(description="Repeat reminders this often once overdue.")
    emergency_review_days: PositiveInt = Field(description="Days within which a DPO reviews emergency sharing.")
    referral_waiting_days: PositiveInt = Field(description="Days a referral may wait before the DPO is chased.")
    signature_renewal_window_days: NonNegativeInt = Field(
        description="Days before expiry from which a signature is due for renewal."
    )
    bulk_subject_threshold: PositiveInt = Field(
        description="A request about this many people or more counts as bulk for the DPIA rule (UK GDPR Art 35)."
    )


# ---------------------------------------------------------------------------------------------
# protocols/<subgroup>/<protocol>-v<N>.yaml
# ---------------------------------------------------------------------------------------------


class SpecialCategoryUse(_PolicyModel):
    """An Article 9(2) condition a party relies on, with the Schedule 1 paragraph where one is needed."""

    article9: ArticlePoint
    schedule1_paragraph: Schedule1Paragraph | None = None


class CriminalOffenceUse(_PolicyModel):
    """How a party meets UK GDPR Article 10 for criminal offence data."""

    official_authority: StrictBool = Field(
        default=False, description="Processing under the control of official authority (public bodies only)."
    )
    schedule1_paragraphs: tuple[Schedule1Paragraph, ...] = Field(
        default=(), description="DPA 2018 Schedule 1 conditions (s10(5))."
    )


class Party(_PolicyModel):
    organisation: OrganisationCode
    roles: tuple[Literal["provider", "recipient"], ...] = Field(min_length=1)
    tier: Literal["personal", "depersonalised"] = Field(
        description="What this party may receive: personal data, or depersonalised data only."
    )
    limited_to_categories: tuple[CategoryCode, ...] | None = Field(
        default=None, description="Narrows what this party may receive to these categories of its tier."
    )
    lawful_bases: tuple[ArticlePoint, ...] = Field(default=(), description="UK GDPR Art 6(1) bases it relies on.")
    special_category_conditions: tuple[SpecialCategoryUse, ...] = ()
    criminal_offence: CriminalOffenceUse | None = None
    max_retention_months: PositiveInt | None = Field(
        default=None, description="The longest this party may keep what it receives."
    )
    notes: Text | None = None


class CategoriesByTier(_PolicyModel):
    personal: tuple[CategoryCode, ...] = ()
    depersonalised: tuple[CategoryCode, ...] = ()


class Dpia(_PolicyModel):
    reference: Text
    completed_on: PolicyDate
    review_on: PolicyDate
    covers_bulk: StrictBool = Field(description="Whether the DPIA assessed bulk sharing or data matching.")
    scope_purposes: tuple[Code, ...] = Field(min_length=1)


class Caldicott(_PolicyModel):
    approved: StrictBool
    approved_by: Text | None = None
    approved_on: PolicyDate | None = None
    confidentiality_basis_required: StrictBool = Field(
        default=False, description="Each request for health data must give a common law confidentiality basis."
    )


class OnwardSharing(_PolicyModel):
    allowed_recipients: tuple[OrganisationCode, ...] = ()
    conditions: Text | None = None


class Protocol(_PolicyModel):
    """One version of a Frequent Sharing Protocol. Approval comes from sign-offs, never the file."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="Accord frequent sharing protocol",
        json_schema_extra={"$comment": "policies/protocols/<subgroup>/<code>-v<version>.yaml"},
    )

    code: Code
    title: Text
    subgroup: Code
    version: PositiveInt
    supersedes: PositiveInt | None = None
    effective_from: PolicyDate
    review_on: PolicyDate
    ends_on: PolicyDate | None = None
    status: Literal["retired"] | None = Field(
        default=None, description="Only to retire a version; approval is recorded by sign-offs."
    )
    summary: Text | None = None
    purposes: tuple[Code, ...] = Field(min_length=1)
    subject_types: tuple[Code, ...] = Field(min_length=1)
    data_categories: CategoriesByTier
    statutory_gateways: tuple[Code, ...] = ()
    transfer_methods: tuple[Code, ...] = Field(min_length=1)
    parties: tuple[Party, ...] = Field(min_length=2)
    dpia: Dpia | None = None
    caldicott: Caldicott | None = None
    onward_sharing: OnwardSharing = OnwardSharing()


def category_lineage(code: str) -> tuple[str, ...]:
    """``code`` and its ancestors, nearest first: ``a.b.c`` gives ``a.b.c``, ``a.b``, ``a``.

    An allowed parent covers its children, so "is this category allowed" is "does any of
    its lineage appear in the allowed set".
    """
    parts = code.split(".")
    return tuple(".".join(parts[:n]) for n in range(len(parts), 0, -1))


#: The flags a data category passes on to its children.
CATEGORY_FLAGS = ("special_category", "criminal_offence", "health", "depersonalised")


def effective_category_flags(taxonomy: Taxonomy) -> dict[str, dict[str, bool]]:
    """Each category's flags once inherited from its ancestors (a child of health data is health data)."""
    categories = taxonomy.data_categories
    result: dict[str, dict[str, bool]] = {}
    for code in categories:
        lineage = [categories[c] for c in category_lineage(code) if c in categories]
        result[code] = {flag: any(getattr(c, flag) for c in lineage) for flag in CATEGORY_FLAGS}
    return result
