"""The exchange check (DESIGN §4): may this organisation send that one these data, now?

``decide(request, snapshot)`` is a pure function. It reads no clock (the caller passes
``as_of``), touches no database and imports nothing from Flask, so the same request against
the same snapshot always gets the same answer, the CLI and the API agree, and a DPO can
replay last year's requests against a proposed protocol. Every rule is evaluated and every
finding returned, passed ones included, because a DPO auditing a decision needs to see what
was checked, not only what failed.

Speed matters because the answer is given while an officer waits and replays run over whole
periods: the :class:`Snapshot` indexes everything by key once, and ``decide`` only ever looks
things up, never scans the register or the protocols, so its cost does not grow with them. The
snapshot also remembers what ``decide`` works out that depends on nothing but its key and the
snapshot (pass findings, an organisation's standing on a day), which halves the cost again.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)

from app.registry.status import SignatureFacts, SignatureStatus, signature_status

__all__ = [
    "RULE_CODES",
    "CaldicottFacts",
    "CategoryFacts",
    "CriminalOffenceCondition",
    "Decision",
    "DecisionOutcome",
    "DpiaFacts",
    "Emergency",
    "ExchangeRequestIn",
    "ExchangeRequest",
    "Finding",
    "FindingOutcome",
    "GatewayFacts",
    "KmisaFacts",
    "LawfulBasisFacts",
    "OrganisationFacts",
    "PartyFacts",
    "ProtocolFacts",
    "ProtocolRef",
    "PurposeFacts",
    "Schedule1Facts",
    "SignatureFacts",
    "Snapshot",
    "SpecialCategoryCondition",
    "SpecialConditionFacts",
    "TaxonomyFacts",
    "TransferMethodFacts",
    "combine_outcomes",
    "decide",
]


# =============================================================================================
# Outcomes and rule codes
# =============================================================================================


class FindingOutcome(str, enum.Enum):
    PASS = "pass"
    REFER = "refer"
    DENY = "deny"
    NOT_APPLICABLE = "not_applicable"


class DecisionOutcome(str, enum.Enum):
    ALLOW = "allow"
    ALLOW_EMERGENCY = "allow_emergency"
    REFER = "refer"
    DENY = "deny"

    @property
    def rank(self) -> int:
        """How permissive the outcome is: deny 0, refer 1, allow_emergency 2, allow 3."""
        return _RANK[self]


_RANK = {
    DecisionOutcome.DENY: 0,
    DecisionOutcome.REFER: 1,
    DecisionOutcome.ALLOW_EMERGENCY: 2,
    DecisionOutcome.ALLOW: 3,
}

#: Every rule, in the order of DESIGN §4; findings come back in this order. The codes are stable:
#: decisions, audit events and reports refer to them.
RULE_CODES: tuple[str, ...] = (
    "org_active",
    "kmisa_signatory",
    "protocol_approved",
    "protocol_current",
    "parties",
    "purpose",
    "data_categories",
    "subject_types",
    "lawful_basis",
    "special_category",
    "criminal_offence",
    "legal_gateway",
    "confidentiality",
    "ad_hoc",
    "transfer_method",
    "retention",
    "dpia_scope",
    "onward_sharing",
    "recipient_assurance",
    "emergency",
)

#: The rules an accepted emergency does not set aside: a dissolved body cannot act, and data sent
#: insecurely is exposed however urgent the need (UK GDPR Art 32).
EMERGENCY_STILL_APPLIES = frozenset({"org_active", "transfer_method", "emergency"})

#: Organisation kinds bound by the common law duty of confidence over patient information.
NHS_KINDS = frozenset({"nhs_body"})

PASS = FindingOutcome.PASS
REFER = FindingOutcome.REFER
DENY = FindingOutcome.DENY
NOT_APPLICABLE = FindingOutcome.NOT_APPLICABLE


def combine_outcomes(outcomes: Iterable[FindingOutcome], emergency_accepted: bool) -> DecisionOutcome:
    """The overall outcome: deny if any rule denies, else refer if any refers, else allow.

    An accepted emergency marks an otherwise clear answer ``allow_emergency`` so that the
    retrospective review is never forgotten; it cannot lift a deny or a refer.
    """
    seen = outcomes if isinstance(outcomes, (set, frozenset)) else set(outcomes)
    if DENY in seen:
        return DecisionOutcome.DENY
    if REFER in seen:
        return DecisionOutcome.REFER
    return DecisionOutcome.ALLOW_EMERGENCY if emergency_accepted else DecisionOutcome.ALLOW


# =============================================================================================
# Register facts
# =============================================================================================


@dataclass(frozen=True, slots=True)
class OrganisationFacts:
    """What the rules need to know of one organisation on the register."""

    code: str
    name: str
    kind: str
    is_public_authority: bool
    is_competent_authority: bool
    status: str = "active"
    dissolved_on: date | None = None
    successor: str | None = None
    ico_registration_expires_on: date | None = None
    dpo_email: str | None = None
    apd_paragraphs: frozenset[int] = frozenset()
    apd_review_on: date | None = None

    def is_dissolved(self, as_of: date) -> bool:
        """Dissolved on ``as_of``: a dry run before the dissolution date sees it active."""
        return self.status == "dissolved" and (self.dissolved_on is None or self.dissolved_on <= as_of)

    def apd_is_current(self, as_of: date) -> bool:
        """An APD must be kept under review (DPA 2018 Sch 1 para 40); one past its review date lapses."""
        return bool(self.apd_paragraphs) and (self.apd_review_on is None or self.apd_review_on >= as_of)

    def apd_covers(self, paragraph: int, as_of: date) -> bool:
        return paragraph in self.apd_paragraphs and self.apd_is_current(as_of)


# =============================================================================================
# Policy facts: the taxonomy, K-MISA settings and protocol versions, indexed
# =============================================================================================


@dataclass(frozen=True, slots=True)
class CategoryFacts:
    code: str
    label: str
    #: The category and all its ancestors: an allowed parent covers its children.
    lineage: frozenset[str]
    special_category: bool
    criminal_offence: bool
    health: bool
    depersonalised: bool


@dataclass(frozen=True, slots=True)
class PurposeFacts:
    code: str
    label: str
    law_enforcement: bool
    direct_care: bool


@dataclass(frozen=True, slots=True)
class TransferMethodFacts:
    code: str
    label: str
    secure: bool


@dataclass(frozen=True, slots=True)
class LawfulBasisFacts:
    code: str
    label: str
    citation: str
    unavailable_to_public_authorities: bool


@dataclass(frozen=True, slots=True)
class SpecialConditionFacts:
    code: str
    label: str
    citation: str
    #: The Schedule 1 paragraphs the condition may be met through; empty when it needs none.
    paragraphs: frozenset[int]


@dataclass(frozen=True, slots=True)
class Schedule1Facts:
    number: int
    title: str
    part: int
    condition: bool
    apd_required: bool
    apd_exempt_when_recipient_competent_authority: bool


@dataclass(frozen=True, slots=True)
class GatewayFacts:
    code: str
    title: str
    citation: str
    authorises_law_enforcement_reuse: bool


@dataclass(frozen=True, slots=True)
class TaxonomyFacts:
    categories: Mapping[str, CategoryFacts]
    purposes: Mapping[str, PurposeFacts]
    subject_types: frozenset[str]
    transfer_methods: Mapping[str, TransferMethodFacts]
    lawful_bases: Mapping[str, LawfulBasisFacts]
    special_conditions: Mapping[str, SpecialConditionFacts]
    schedule1: Mapping[int, Schedule1Facts]
    gateways: Mapping[str, GatewayFacts]
    #: Emergency category code to label.
    emergency_categories: Mapping[str, str]
    #: Urgency code to why it is not an emergency.
    non_emergency_urgencies: Mapping[str, str]
    confidentiality_bases: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class KmisaFacts:
    #: K-MISA version label to whether signatures to it still count.
    versions: Mapping[str, bool]
    grace_period_days: int
    ad_hoc_count: int
    ad_hoc_window_days: int
    emergency_review_days: int
    renewal_window_days: int
    bulk_subject_threshold: int


@dataclass(frozen=True, slots=True)
class PartyFacts:
    organisation: str
    provider: bool
    recipient: bool
    tier: str
    #: What this party may receive: its tier's categories, narrowed by any limit.
    allowed_categories: frozenset[str]
    lawful_bases: frozenset[str]
    #: (Article 9(2) point, Schedule 1 paragraph or None).
    special_category_conditions: frozenset[tuple[str, int | None]]
    criminal_official_authority: bool
    criminal_paragraphs: frozenset[int]
    max_retention_months: int | None
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DpiaFacts:
    reference: str
    completed_on: date
    review_on: date
    covers_bulk: bool
    scope_purposes: frozenset[str]


@dataclass(frozen=True, slots=True)
class CaldicottFacts:
    approved: bool
    approved_by: str | None
    approved_on: date | None
    confidentiality_basis_required: bool


@dataclass(frozen=True, slots=True)
class ProtocolFacts:
    """One protocol version as the rules see it, with its sign-offs from the register."""

    code: str
    version: int
    title: str
    subgroup: str
    content_hash: str
    path: str
    effective_from: date
    review_on: date
    ends_on: date | None
    supersedes: int | None
    retired: bool
    parties: Mapping[str, PartyFacts]
    purposes: frozenset[str]
    subject_types: frozenset[str]
    statutory_gateways: frozenset[str]
    transfer_methods: frozenset[str]
    dpia: DpiaFacts | None
    caldicott: CaldicottFacts | None
    onward_recipients: frozenset[str]
    signed_off_by: frozenset[str]
    #: Parties yet to sign this version off, sorted; empty when approved.
    awaiting_signoff: tuple[str, ...] = ()
    #: How messages name it ("vcs-safeguarding v2").
    label: str = ""

    @property
    def approved(self) -> bool:
        """Approved only when every party has signed it off (DESIGN §2)."""
        return not self.awaiting_signoff


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable, indexed view of the register and the policies at one moment.

    Built once by :func:`app.decisions.snapshot.build_snapshot` and reused until the register
    or the policies change; every lookup ``decide`` makes is a dictionary access.
    """

    organisations: Mapping[str, OrganisationFacts]
    #: Each organisation's signatures, most recently signed first.
    signatures: Mapping[str, tuple[SignatureFacts, ...]]
    protocols: Mapping[tuple[str, int], ProtocolFacts]
    #: Each protocol code's versions, newest first.
    versions_by_code: Mapping[str, tuple[ProtocolFacts, ...]]
    latest_version: Mapping[str, int]
    taxonomy: TaxonomyFacts
    kmisa: KmisaFacts
    #: One-off requests in the ad hoc window by (organisation, organisation, purpose), the pair
    #: in sorted order so that either direction counts towards the same pattern.
    ad_hoc_counts: Mapping[tuple[str, str, str], int]
    bundle_hash: str
    #: What ``decide`` has already worked out from this snapshot (standings on a day, category
    #: summaries, and per protocol its pass findings), keyed by everything each depends on; see
    #: ``_remember``. Not an init field, so ``dataclasses.replace`` gives a changed snapshot a
    #: memo of its own.
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def ad_hoc_count(self, from_org: str, to_org: str, purpose: str) -> int:
        first, second = (from_org, to_org) if from_org <= to_org else (to_org, from_org)
        return self.ad_hoc_counts.get((first, second, purpose), 0)


# =============================================================================================
# The request
# =============================================================================================


@dataclass(frozen=True, slots=True)
class ProtocolRef:
    code: str
    version: int


@dataclass(frozen=True, slots=True)
class SpecialCategoryCondition:
    """An Article 9(2) condition, with the DPA 2018 Schedule 1 paragraph where it needs one."""

    article9: str
    schedule1_paragraph: int | None = None


@dataclass(frozen=True, slots=True)
class CriminalOffenceCondition:
    """How the sender meets Article 10: ``official_authority`` or a ``schedule1`` paragraph."""

    route: str
    schedule1_paragraph: int | None = None


@dataclass(frozen=True, slots=True)
class Emergency:
    category: str
    justification: str


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    """A proposed exchange (DESIGN §4 "Request"). ``as_of`` always comes from the caller."""

    from_org: str
    to_org: str
    purpose: str
    data_categories: tuple[str, ...]
    subject_types: tuple[str, ...]
    transfer_method: str
    as_of: date | datetime
    protocol: ProtocolRef | None = None
    subject_count: int = 1
    bulk_or_matching: bool = False
    lawful_basis: str | None = None
    special_category_condition: SpecialCategoryCondition | None = None
    criminal_offence_condition: CriminalOffenceCondition | None = None
    legal_gateway: str | None = None
    retention_months: int | None = None
    one_off: bool = False
    emergency: Emergency | None = None
    confidentiality_basis: str | None = None
    onward_recipient: str | None = None
    justification: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "from_org": self.from_org,
                "to_org": self.to_org,
                "protocol": None if self.protocol is None
                else {"code": self.protocol.code, "version": self.protocol.version},
                "purpose": self.purpose,
                "data_categories": list(self.data_categories),
                "subject_types": list(self.subject_types),
                "subject_count": self.subject_count,
                "bulk_or_matching": self.bulk_or_matching,
                "lawful_basis": self.lawful_basis,
                "special_category_condition": None if self.special_category_condition is None else {
                    "article9": self.special_category_condition.article9,
                    "schedule1_paragraph": self.special_category_condition.schedule1_paragraph,
                },
                "criminal_offence_condition": None if self.criminal_offence_condition is None else {
                    "route": self.criminal_offence_condition.route,
                    "schedule1_paragraph": self.criminal_offence_condition.schedule1_paragraph,
                },
                "legal_gateway": self.legal_gateway,
                "transfer_method": self.transfer_method,
                "retention_months": self.retention_months,
                "one_off": self.one_off,
                "emergency": None if self.emergency is None else {
                    "category": self.emergency.category, "justification": self.emergency.justification,
                },
                "confidentiality_basis": self.confidentiality_basis,
                "onward_recipient": self.onward_recipient,
                "justification": self.justification,
                "as_of": self.as_of,
            }
        )


# =============================================================================================
# Findings and the decision
# =============================================================================================


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's verdict: what a DPO would write, the law behind it and the evidence used."""

    rule: str
    outcome: FindingOutcome
    message: str
    citation: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    #: ``to_dict``'s answer, made on its first call.
    _as_dict: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __init__(
        self, rule: str, outcome: FindingOutcome, message: str, citation: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> None:
        # Written out because a decision makes twenty of these: the generated frozen __init__
        # looks up object.__setattr__ for every field and costs a third more.
        _set(self, "rule", rule)
        _set(self, "outcome", outcome)
        _set(self, "message", message)
        _set(self, "citation", citation)
        _set(self, "evidence", _NO_EVIDENCE if evidence is None else evidence)
        _set(self, "_as_dict", None)

    def to_dict(self) -> dict[str, Any]:
        """The finding as JSON-ready values. Made once per finding: most findings are kept in
        their snapshot's memo (``_pass``) and answer every request like the one that made them,
        so this is the same dict each time, and its callers only ever read it."""
        made = self._as_dict
        if made is None:
            made = {
                "rule": self.rule,
                "outcome": self.outcome.value,
                "message": self.message,
                "citation": self.citation,
                "evidence": _jsonable(self.evidence),
            }
            _set(self, "_as_dict", made)
        return made


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: DecisionOutcome
    findings: tuple[Finding, ...]
    protocol_code: str | None
    protocol_version: int | None
    protocol_hash: str | None
    #: The K-MISA versions the two organisations' signatures were given to.
    kmisa_versions: tuple[str, ...]
    bundle_hash: str
    as_of: date | datetime
    emergency_accepted: bool = False
    retrospective_review_due: date | None = None

    def __init__(
        self, outcome: DecisionOutcome, findings: tuple[Finding, ...], protocol_code: str | None,
        protocol_version: int | None, protocol_hash: str | None, kmisa_versions: tuple[str, ...], bundle_hash: str,
        as_of: date | datetime, emergency_accepted: bool = False, retrospective_review_due: date | None = None,
    ) -> None:
        # Written out for speed, as Finding's is.
        _set(self, "outcome", outcome)
        _set(self, "findings", findings)
        _set(self, "protocol_code", protocol_code)
        _set(self, "protocol_version", protocol_version)
        _set(self, "protocol_hash", protocol_hash)
        _set(self, "kmisa_versions", kmisa_versions)
        _set(self, "bundle_hash", bundle_hash)
        _set(self, "as_of", as_of)
        _set(self, "emergency_accepted", emergency_accepted)
        _set(self, "retrospective_review_due", retrospective_review_due)

    def finding(self, rule: str) -> Finding:
        for item in self.findings:
            if item.rule == rule:
                return item
        raise KeyError(rule)

    def rules_with(self, *outcomes: FindingOutcome) -> tuple[str, ...]:
        """The rule codes whose finding has one of ``outcomes``, in rule order."""
        return tuple(f.rule for f in self.findings if f.outcome in outcomes)

    @property
    def reasons(self) -> tuple[Finding, ...]:
        """The findings that made the decision anything other than a plain allow."""
        return tuple(f for f in self.findings if f.outcome in (DENY, REFER))

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "as_of": _jsonable(self.as_of),
            "protocol": None if self.protocol_code is None else {
                "code": self.protocol_code, "version": self.protocol_version, "sha256": self.protocol_hash,
            },
            "kmisa_versions": list(self.kmisa_versions),
            "bundle_sha256": self.bundle_hash,
            "emergency_accepted": self.emergency_accepted,
            "retrospective_review_due": _jsonable(self.retrospective_review_due),
            "findings": [f.to_dict() for f in self.findings],
        }


_set = object.__setattr__
_NO_EVIDENCE: Mapping[str, Any] = MappingProxyType({})


_JSON_SCALARS = (str, int, float, bool, type(None))


def _jsonable(value: Any) -> Any:
    # Scalars first, then the plain containers by exact type: they are most of what a decision
    # holds, and this runs on every check and recorded exchange (the general tests below, the
    # dataclass and the abstract Mapping ones above all, cost several times as much).
    kind = type(value)
    if kind in _JSON_SCALARS:
        return value
    if kind is dict or kind is MappingProxyType:
        return {str(k): _jsonable(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_jsonable(v) for v in value]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        items = [_jsonable(v) for v in value]
        try:
            return sorted(items)
        except TypeError:  # mixed types, e.g. paragraphs and None: any stable order will do
            return sorted(items, key=repr)
    return value


# =============================================================================================
# decide()
# =============================================================================================


class _Standing(NamedTuple):
    """An organisation's K-MISA standing on the day: its latest signature and that signature's status."""

    signature: SignatureFacts | None
    status: SignatureStatus | None
    current: bool


_NO_STANDING = _Standing(None, None, False)


class _Context:
    """What every rule needs, looked up once per request."""

    __slots__ = (
        "request", "snapshot", "taxonomy", "as_of", "sender", "recipient", "protocol", "protocol_key",
        "protocol_missing", "sender_party", "recipient_party", "categories", "unknown_categories", "any_special",
        "any_criminal", "any_health", "identifying", "purpose", "sender_standing", "recipient_standing",
        "emergency_accepted", "memo",
    )


def decide(request: ExchangeRequest, snapshot: Snapshot) -> Decision:
    """Evaluate every rule of DESIGN §4 for ``request`` against ``snapshot`` and combine them."""
    ctx = _context(request, snapshot)
    findings = [rule(ctx) for rule in _RULES]
    accepted = ctx.emergency_accepted
    review_due = None
    if accepted:
        findings = [f if f.rule in EMERGENCY_STILL_APPLIES else _set_aside(f, request) for f in findings]
        review_due = ctx.as_of + timedelta(days=snapshot.kmisa.emergency_review_days)
    protocol = ctx.protocol
    ref = request.protocol
    return Decision(
        combine_outcomes({f.outcome for f in findings}, accepted),
        tuple(findings),
        ref.code if ref is not None else None,
        ref.version if ref is not None else None,
        protocol.content_hash if protocol is not None else None,
        _kmisa_versions(ctx),
        snapshot.bundle_hash,
        request.as_of,
        accepted,
        review_due,
    )


def _context(request: ExchangeRequest, snapshot: Snapshot) -> _Context:
    ctx = _Context()
    ctx.request = request
    ctx.snapshot = snapshot
    taxonomy = ctx.taxonomy = snapshot.taxonomy
    as_of = request.as_of
    as_of = ctx.as_of = as_of.date() if isinstance(as_of, datetime) else as_of
    organisations = snapshot.organisations
    ctx.sender = organisations.get(request.from_org)
    ctx.recipient = organisations.get(request.to_org)

    ref = request.protocol
    if ref is not None:
        key = ctx.protocol_key = (ref.code, ref.version)
        protocol = ctx.protocol = snapshot.protocols.get(key)
        ctx.protocol_missing = protocol is None
    else:
        protocol = ctx.protocol = ctx.protocol_key = None
        ctx.protocol_missing = False
    if protocol is not None:
        ctx.sender_party = protocol.parties.get(request.from_org)
        ctx.recipient_party = protocol.parties.get(request.to_org)
    else:
        ctx.sender_party = ctx.recipient_party = None
    ctx.memo = snapshot.memo

    codes = tuple(request.data_categories)
    summary = snapshot.memo.get(("categories", codes))
    if summary is None:
        summary = _keep(snapshot.memo, ("categories", codes), _summarise_categories(taxonomy, codes))
    (ctx.categories, ctx.unknown_categories, ctx.any_special, ctx.any_criminal, ctx.any_health,
     ctx.identifying) = summary
    ctx.purpose = taxonomy.purposes.get(request.purpose)
    ctx.sender_standing = _standing(snapshot, request.from_org, as_of)
    ctx.recipient_standing = _standing(snapshot, request.to_org, as_of)
    emergency = request.emergency
    ctx.emergency_accepted = (
        emergency is not None
        and emergency.category in taxonomy.emergency_categories
        and bool(emergency.justification.strip())
    )
    return ctx


def _summarise_categories(taxonomy: TaxonomyFacts, codes: tuple[str, ...]) -> tuple[Any, ...]:
    """The requested categories' facts, the unknown codes, and which kinds of data they include."""
    categories = []
    unknown = []
    special = criminal = health = identifying = False
    for code in codes:
        facts = taxonomy.categories.get(code)
        if facts is None:
            unknown.append(code)
            identifying = True
            continue
        categories.append(facts)
        special = special or facts.special_category
        criminal = criminal or facts.criminal_offence
        health = health or facts.health
        # Depersonalised statistics identify no one: only the rest is personal data (UK GDPR recital 26).
        identifying = identifying or not facts.depersonalised
    return tuple(categories), tuple(unknown), special, criminal, health, identifying


def _standing(snapshot: Snapshot, organisation: str, as_of: date) -> _Standing:
    """The organisation's K-MISA standing on ``as_of``, worked out once per day and snapshot."""
    key = ("standing", organisation, as_of)
    found = snapshot.memo.get(key)
    if found is None:
        found = _keep(snapshot.memo, key, _work_out_standing(snapshot, organisation, as_of))
    return found  # type: ignore[no-any-return]


def _work_out_standing(snapshot: Snapshot, organisation: str, as_of: date) -> _Standing:
    """The latest signature given on or before ``as_of`` decides; any earlier one is superseded by it."""
    for signature in snapshot.signatures.get(organisation, ()):
        if signature.signed_on <= as_of:
            kmisa = snapshot.kmisa
            status = signature_status(
                signature,
                as_of=as_of,
                version_is_valid=kmisa.versions.get(signature.kmisa_version, False),
                renewal_window_days=kmisa.renewal_window_days,
            )
            return _Standing(signature, status, status.is_current)
    return _NO_STANDING


def _kmisa_versions(ctx: _Context) -> tuple[str, ...]:
    sender, recipient = ctx.sender_standing, ctx.recipient_standing
    if sender.current and recipient.current:
        first, second = sender.signature.kmisa_version, recipient.signature.kmisa_version  # type: ignore[union-attr]
        return (first,) if first == second else tuple(sorted((first, second)))
    return tuple(s.signature.kmisa_version for s in (sender, recipient) if s.current)  # type: ignore[union-attr]


def _set_aside(finding: Finding, request: ExchangeRequest) -> Finding:
    """Record that an accepted emergency set this rule aside, and what it would have said."""
    category = request.emergency.category if request.emergency is not None else "emergency"
    return Finding(
        finding.rule,
        PASS if finding.outcome is PASS else NOT_APPLICABLE,
        f"Set aside for an accepted emergency ({category}); a DPO reviews it afterwards. "
        f"It would have said: {finding.message}",
        finding.citation,
        {**finding.evidence, "set_aside_for_emergency": True, "would_have_been": finding.outcome.value},
    )


# =============================================================================================
# Helpers for messages and shared findings
# =============================================================================================


@lru_cache(maxsize=4096)
def _day(value: date) -> str:
    """A date as a DPO writes it (1 July 2022); cached because strftime is slow and dates repeat."""
    return f"{value.day} {value:%B %Y}"


def _name(ctx: _Context, code: str) -> str:
    organisation = ctx.snapshot.organisations.get(code)
    return organisation.name if organisation is not None else f"'{code}'"


def _names(ctx: _Context, codes: Iterable[str]) -> str:
    names = [_name(ctx, code) for code in codes]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _quoted(codes: Iterable[str]) -> str:
    return ", ".join(f"'{code}'" for code in codes)


#: A snapshot's memo is emptied when it grows past this, so years of replays stay bounded.
_MEMO_LIMIT = 100_000


def _remember(ctx: _Context, key: tuple[Any, ...], make: Callable[[], Finding]) -> Finding:
    """Make the pass finding for ``key`` and keep it in the snapshot's memo.

    A pass finding's words and evidence depend only on its key and on the snapshot, which
    never changes, so rules look it up first (``ctx.memo.get(key)``) and only make it the
    first time; the rule's checks still run every time. That halves the cost of a decision.
    """
    return _keep(ctx.memo, key, make())  # type: ignore[no-any-return]


def _keep(memo: dict[tuple[Any, ...], Any], key: tuple[Any, ...], value: Any) -> Any:
    """Store ``value`` in a snapshot's memo, emptying it first if it has grown past its limit."""
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value
    return value


def _no_protocol(rule: str, ctx: _Context, citation: str) -> Finding | None:
    """The shared answer of protocol-based rules when there is no protocol to judge against."""
    if ctx.protocol is not None:
        return None
    key = (rule, ctx.protocol_missing)
    found = _NO_PROTOCOL.get(key)
    if found is None:
        found = _NO_PROTOCOL[key] = Finding(rule, NOT_APPLICABLE,
                                            _UNKNOWN_PROTOCOL if ctx.protocol_missing else _ONE_OFF, citation)
    return found


_UNKNOWN_PROTOCOL = "The cited protocol version is not in the loaded policies (see protocol_approved)."
_ONE_OFF = "No protocol is cited: this is one-off sharing (see ad_hoc)."

#: (rule, protocol missing) to the shared finding; filled on first use, never changed after.
_NO_PROTOCOL: dict[tuple[str, bool], Finding] = {}

# Findings whose words never vary are made once: findings are immutable, so sharing them is safe.
_ONE_OFF_PROTOCOL = Finding("protocol_approved", NOT_APPLICABLE, _ONE_OFF,
                            "UK GDPR Art 5(2) (accountability); protocol sign-off by every party")
_DEPERSONALISED_ONLY = Finding("lawful_basis", NOT_APPLICABLE, "Only depersonalised information is requested: it is "
                               "not personal data and needs no Article 6 basis.", "UK GDPR Art 6(1); recital 26")
_NO_SPECIAL_CATEGORY = Finding("special_category", NOT_APPLICABLE, "No special category data is requested.",
                               "UK GDPR Art 9(1)")
_NO_CRIMINAL_OFFENCE = Finding("criminal_offence", NOT_APPLICABLE, "No criminal offence data is requested.",
                               "UK GDPR Art 10")
_PRIVATE_SENDER = Finding("legal_gateway", NOT_APPLICABLE, "The sender is not a public authority, so it needs no "
                          "statutory power to share.", "Public law (vires)")
_NO_NHS_HEALTH_DATA = Finding("confidentiality", NOT_APPLICABLE, "No health information from an NHS body is requested.",
                              "Common law duty of confidentiality; Caldicott Principles")
_DIRECT_CARE = Finding("confidentiality", NOT_APPLICABLE, "Health information shared for direct care relies on "
                       "implied consent.", "Common law duty of confidentiality; Caldicott Principles")
_UNDER_PROTOCOL = Finding("ad_hoc", NOT_APPLICABLE, "The exchange is made under a protocol, not one-off.",
                          "K-MISA; ICO Data Sharing Code (DPA 2018 s121)")
_NO_ONWARD_SHARING = Finding("onward_sharing", PASS, "No onward sharing is proposed.",
                             "UK GDPR Art 5(1)(b); protocol onward-sharing rule")
_RECIPIENT_UNKNOWN = Finding("recipient_assurance", NOT_APPLICABLE, "The recipient is not on the register (see "
                             "org_active).", "Data Protection (Charges and Information) Regulations 2018; UK GDPR Art 37")
_NO_EMERGENCY = Finding("emergency", NOT_APPLICABLE, "No emergency is claimed.", "")


# =============================================================================================
# The rules, one function each, in RULE_CODES order
# =============================================================================================


def _org_active(ctx: _Context) -> Finding:
    rule, citation = "org_active", "UK GDPR Art 4(7); K-MISA register of signatories"
    sender, recipient, as_of = ctx.sender, ctx.recipient, ctx.as_of
    if sender is not None and recipient is not None and not sender.is_dissolved(as_of) \
            and not recipient.is_dissolved(as_of):
        found = ctx.memo.get((rule, sender.code, recipient.code))
        return found if found is not None else _remember(ctx, (rule, sender.code, recipient.code), lambda: Finding(
            rule, PASS, f"{sender.name} and {recipient.name} are active organisations.", citation,
            {"sender": "active", "recipient": "active"}))
    problems = []
    evidence: dict[str, Any] = {}
    for role, code, organisation in (("sender", ctx.request.from_org, sender),
                                     ("recipient", ctx.request.to_org, recipient)):
        if organisation is None:
            problems.append(f"'{code}' is not an organisation on the register")
            evidence[role] = {"code": code, "status": "unknown"}
        elif organisation.is_dissolved(as_of):
            when = f" on {_day(organisation.dissolved_on)}" if organisation.dissolved_on else ""
            if organisation.successor:
                problems.append(
                    f"{organisation.name} was dissolved{when}; its functions passed to "
                    f"{_name(ctx, organisation.successor)} ({organisation.successor}), which must act in its own right"
                )
            else:
                problems.append(f"{organisation.name} was dissolved{when} and no longer exists to share or receive data")
            evidence[role] = {"code": code, "status": "dissolved", "dissolved_on": organisation.dissolved_on,
                              "successor": organisation.successor}
        else:
            evidence[role] = {"code": code, "status": "active"}
    return Finding(rule, DENY, "; ".join(problems) + ".", citation, evidence)


def _kmisa_signatory(ctx: _Context) -> Finding:
    rule, citation = "kmisa_signatory", "Kent and Medway Information Sharing Agreement (K-MISA)"
    sender, recipient = ctx.sender_standing, ctx.recipient_standing
    if sender.current and recipient.current:
        key = (rule, ctx.request.from_org, sender.signature.signed_on, sender.status,  # type: ignore[union-attr]
               ctx.request.to_org, recipient.signature.signed_on, recipient.status)  # type: ignore[union-attr]
        found = ctx.memo.get(key)
        return found if found is not None else _remember(ctx, key, lambda: _kmisa_pass(ctx, sender, recipient, citation))
    problems = []
    evidence: dict[str, Any] = {}
    for role, code, standing in (("sender", ctx.request.from_org, sender), ("recipient", ctx.request.to_org, recipient)):
        signature = standing.signature
        if signature is None:
            problems.append(f"{_name(ctx, code)} has not signed the K-MISA")
            evidence[role + "_status"] = "none"
            continue
        evidence[role] = signature
        evidence[role + "_status"] = standing.status
        status = standing.status
        if standing.current:
            continue
        if status is SignatureStatus.WITHDRAWN:
            problems.append(f"{_name(ctx, code)} withdrew its K-MISA signature on {_day(signature.withdrawn_on)}")  # type: ignore[arg-type]
        elif status is SignatureStatus.EXPIRED:
            problems.append(f"{_name(ctx, code)}'s K-MISA signature expired on {_day(signature.expires_on)}")  # type: ignore[arg-type]
        elif status is SignatureStatus.SUPERSEDED:
            problems.append(f"{_name(ctx, code)} signed only the {signature.kmisa_version} K-MISA, "
                            "which is no longer valid: it must sign the current version")
        else:
            problems.append(f"{_name(ctx, code)} is not a current K-MISA signatory ({status.value})")  # type: ignore[union-attr]
    return Finding(rule, DENY, "; ".join(problems) + ".", citation, evidence)


def _kmisa_pass(ctx: _Context, sender: _Standing, recipient: _Standing, citation: str) -> Finding:
    message = "Both organisations hold a current K-MISA signature to a valid version."
    for standing in (sender, recipient):
        signature = standing.signature
        if standing.status is SignatureStatus.DUE_FOR_RENEWAL and signature is not None and signature.expires_on:
            message += (f" {_name(ctx, signature.organisation)}'s signature is due for renewal by "
                        f"{_day(signature.expires_on)}.")
    return Finding("kmisa_signatory", PASS, message, citation, {
        "sender": sender.signature, "sender_status": sender.status,
        "recipient": recipient.signature, "recipient_status": recipient.status,
    })


def _protocol_approved(ctx: _Context) -> Finding:
    rule, citation = "protocol_approved", "UK GDPR Art 5(2) (accountability); protocol sign-off by every party"
    ref = ctx.request.protocol
    if ref is None:
        return _ONE_OFF_PROTOCOL
    protocol = ctx.protocol
    if protocol is None:
        latest = ctx.snapshot.latest_version.get(ref.code)
        hint = f" The latest version of {ref.code} is {latest}." if latest else f" There is no protocol '{ref.code}'."
        return Finding(rule, DENY, f"{ref.code} v{ref.version} is not in the loaded policies.{hint}", citation,
                       {"protocol": f"{ref.code} v{ref.version}"})
    if protocol.awaiting_signoff:
        return Finding(
            rule, DENY,
            f"{protocol.label} is a draft: {_names(ctx, protocol.awaiting_signoff)} "
            f"{'has' if len(protocol.awaiting_signoff) == 1 else 'have'} not signed it off.",
            citation, {"protocol": protocol.label, "signed_off_by": protocol.signed_off_by,
                       "awaiting_signoff": protocol.awaiting_signoff},
        )
    found = ctx.memo.get((rule, ctx.protocol_key))
    return found if found is not None else _remember(ctx, (rule, ctx.protocol_key), lambda: Finding(
        rule, PASS, f"{protocol.label} has been signed off by every party.", citation,
        {"protocol": protocol.label, "signed_off_by": protocol.signed_off_by}))


def _protocol_current(ctx: _Context) -> Finding:
    rule, citation = "protocol_current", "UK GDPR Art 5(2); ICO Data Sharing Code (reviewing agreements)"
    missing = _no_protocol(rule, ctx, citation)
    if missing is not None:
        return missing
    protocol: ProtocolFacts = ctx.protocol  # type: ignore[assignment]
    as_of = ctx.as_of
    current = _current_version(ctx, protocol.code)
    superseded = current is not None and current.version > protocol.version
    if not (protocol.retired or superseded or protocol.effective_from > as_of or protocol.review_on < as_of
            or (protocol.ends_on is not None and protocol.ends_on < as_of)):
        found = ctx.memo.get((rule, ctx.protocol_key))
        return found if found is not None else _remember(ctx, (rule, ctx.protocol_key), lambda: Finding(
            rule, PASS, f"{protocol.label} is in effect and within its review date ({_day(protocol.review_on)}).",
            citation, _protocol_dates(protocol)))
    evidence = _protocol_dates(protocol)
    if protocol.retired:
        return Finding(rule, DENY, f"{protocol.label} has been retired.", citation, evidence)
    if superseded:
        evidence["current_version"] = current.version  # type: ignore[union-attr]
        return Finding(rule, DENY,
                       f"{protocol.label} has been superseded: use version {current.version}, in effect since "  # type: ignore[union-attr]
                       f"{_day(current.effective_from)}.", citation, evidence)  # type: ignore[union-attr]
    if protocol.effective_from > as_of:
        return Finding(rule, DENY, f"{protocol.label} does not take effect until {_day(protocol.effective_from)}.",
                       citation, evidence)
    if protocol.ends_on is not None and protocol.ends_on < as_of:
        return Finding(rule, DENY, f"{protocol.label} ended on {_day(protocol.ends_on)}.", citation, evidence)
    grace_ends = protocol.review_on + timedelta(days=ctx.snapshot.kmisa.grace_period_days)
    evidence["grace_ends_on"] = grace_ends
    if as_of <= grace_ends:
        return Finding(rule, REFER,
                       f"{protocol.label} was due for review on {_day(protocol.review_on)}; within the grace "
                       f"period, which ends on {_day(grace_ends)}, a DPO must approve each exchange.",
                       citation, evidence)
    return Finding(rule, DENY,
                   f"{protocol.label} was due for review on {_day(protocol.review_on)} and the grace period "
                   f"ended on {_day(grace_ends)}: a reviewed version must be signed off first.",
                   citation, evidence)


def _protocol_dates(protocol: ProtocolFacts) -> dict[str, Any]:
    return {"protocol": protocol.label, "effective_from": protocol.effective_from, "review_on": protocol.review_on,
            "ends_on": protocol.ends_on}


def _current_version(ctx: _Context, code: str) -> ProtocolFacts | None:
    """The newest version of ``code`` that is approved, in effect and not retired on the day."""
    as_of = ctx.as_of
    for version in ctx.snapshot.versions_by_code.get(code, ()):
        if version.approved and not version.retired and version.effective_from <= as_of:
            return version
    return None


def _parties(ctx: _Context) -> Finding:
    rule, citation = "parties", "UK GDPR Art 5(1)(a); protocol parties and tiers"
    missing = _no_protocol(rule, ctx, citation)
    if missing is not None:
        return missing
    protocol: ProtocolFacts = ctx.protocol  # type: ignore[assignment]
    request = ctx.request
    sender, recipient = ctx.sender_party, ctx.recipient_party
    problems = []
    if sender is None:
        problems.append(f"{_name(ctx, request.from_org)} is not a party to {protocol.label}")
    elif not sender.provider:
        problems.append(f"{_name(ctx, request.from_org)} is a party to {protocol.label} only as a recipient")
    if recipient is None:
        problems.append(f"{_name(ctx, request.to_org)} is not a party to {protocol.label}")
    elif not recipient.recipient:
        problems.append(f"{_name(ctx, request.to_org)} is a party to {protocol.label} only as a provider")
    elif recipient.tier == "depersonalised" and ctx.identifying:
        problems.append(f"{_name(ctx, request.to_org)} may receive only depersonalised information under "
                        f"{protocol.label}, and this request identifies people")

    def evidence() -> dict[str, Any]:
        return {"protocol": protocol.label,
                "sender_roles": sender.roles if sender is not None else (),
                "recipient_roles": recipient.roles if recipient is not None else (),
                "recipient_tier": recipient.tier if recipient is not None else None}

    if problems:
        return Finding(rule, DENY, "; ".join(problems) + ".", citation, evidence())
    found = ctx.memo.get((rule, ctx.protocol_key, request.from_org, request.to_org))
    return found if found is not None else _remember(ctx, (rule, ctx.protocol_key, request.from_org, request.to_org), lambda: Finding(
        rule, PASS, f"{_name(ctx, request.from_org)} provides and {_name(ctx, request.to_org)} receives "
                    f"({recipient.tier} tier) under {protocol.label}.", citation, evidence()))  # type: ignore[union-attr]


def _purpose(ctx: _Context) -> Finding:
    rule, citation = "purpose", "UK GDPR Art 5(1)(b) (purpose limitation)"
    code = ctx.request.purpose
    purpose = ctx.purpose
    if purpose is None:
        return Finding(rule, DENY, f"'{code}' is not a purpose in the taxonomy.", citation, {"purpose": code})
    protocol = ctx.protocol
    if protocol is None:
        return _no_protocol(rule, ctx, citation)  # type: ignore[return-value]
    if code not in protocol.purposes:
        return Finding(rule, DENY,
                       f"{protocol.label} does not cover the purpose '{purpose.label}': data collected for its "
                       "purposes may not be shared for another.", citation,
                       {"purpose": code, "protocol_purposes": protocol.purposes})
    found = ctx.memo.get((rule, ctx.protocol_key, code))
    return found if found is not None else _remember(ctx, (rule, ctx.protocol_key, code), lambda: Finding(
        rule, PASS, f"'{purpose.label}' is one of the purposes of {protocol.label}.", citation,
        {"purpose": code, "protocol_purposes": protocol.purposes}))


def _data_categories(ctx: _Context) -> Finding:
    rule, citation = "data_categories", "UK GDPR Art 5(1)(c) (data minimisation)"
    if ctx.unknown_categories:
        return Finding(rule, DENY, f"Not data categories in the taxonomy: {_quoted(ctx.unknown_categories)}.",
                       citation, {"unknown": ctx.unknown_categories})
    missing = _no_protocol(rule, ctx, citation)
    if missing is not None:
        return missing
    party = ctx.recipient_party
    protocol: ProtocolFacts = ctx.protocol  # type: ignore[assignment]
    to_org = ctx.request.to_org
    if party is None:
        return Finding(rule, NOT_APPLICABLE, f"{_name(ctx, to_org)} is not a party to {protocol.label}, so has no "
                                             "categories to check against (see parties).", citation)
    allowed = party.allowed_categories
    extra = [category.code for category in ctx.categories if allowed.isdisjoint(category.lineage)]
    if extra:
        return Finding(rule, DENY,
                       f"{_name(ctx, to_org)} may not receive {_quoted(extra)} under {protocol.label} "
                       f"({party.tier} tier): share only what the protocol allows.", citation,
                       {"protocol": protocol.label, "tier": party.tier, "allowed": allowed, "not_allowed": extra})
    found = ctx.memo.get((rule, ctx.protocol_key, to_org))
    return found if found is not None else _remember(ctx, (rule, ctx.protocol_key, to_org), lambda: Finding(
        rule, PASS, f"Every requested category is allowed for {_name(ctx, to_org)} under {protocol.label}.",
        citation, {"protocol": protocol.label, "tier": party.tier, "allowed": allowed}))


def _subject_types(ctx: _Context) -> Finding:
    rule, citation = "subject_types", "UK GDPR Art 5(1)(a), Arts 13 and 14 (transparency)"
    requested = ctx.request.subject_types
    known = ctx.taxonomy.subject_types
    if not known.issuperset(requested):
        unknown = [s for s in requested if s not in known]
        return Finding(rule, DENY, f"Not data subject types in the taxonomy: {_quoted(unknown)}.", citation,
                       {"unknown": unknown})
    missing = _no_protocol(rule, ctx, citation)
    if missing is not None:
        return missing
    protocol: ProtocolFacts = ctx.protocol  # type: ignore[assignment]
    covered = protocol.subject_types
    if not covered.issuperset(requested):
        uncovered = [s for s in requested if s not in covered]
        return Finding(rule, DENY,
                       f"{protocol.label} does not cover data about {_quoted(uncovered)}: those people were not told "
                       "their data would be shared this way.", citation,
                       {"protocol": protocol.label, "covered": covered, "not_covered": uncovered})
    found = ctx.memo.get((rule, ctx.protocol_key))
    return found if found is not None else _remember(ctx, (rule, ctx.protocol_key), lambda: Finding(
        rule, PASS, f"{protocol.label} covers every requested type of data subject.", citation,
        {"protocol": protocol.label, "covered": covered}))


def _lawful_basis(ctx: _Context) -> Finding:
    rule, citation = "lawful_basis", "UK GDPR Art 6(1)"
    if not ctx.identifying:
        return _DEPERSONALISED_ONLY
    code = ctx.request.lawful_basis
    if code is None:
        return Finding(rule, DENY, "No Article 6(1) lawful basis is given for the disclosure.", citation)
    basis = ctx.taxonomy.lawful_bases.get(code)
    if basis is None:
        return Finding(rule, DENY, f"'{code}' is not a UK GDPR Article 6(1) basis.", citation, {"lawful_basis": code})
    sender = ctx.sender
    if basis.unavailable_to_public_authorities and sender is not None and sender.is_public_authority:
        return Finding(rule, DENY,
                       f"{sender.name} is a public authority and may not rely on {basis.label.lower()} "
                       f"(Art 6(1)({code})) for its tasks: use public task (e) or another basis.",
                       "UK GDPR Art 6(1), final words", {"lawful_basis": code})
    party = ctx.sender_party
    listed = party.lawful_bases if ctx.protocol is not None and party is not None else None
    if listed is not None and code not in listed:
        return Finding(rule, DENY,
                       f"{ctx.protocol.label} does not list Art 6(1)({code}) for {_name(ctx, ctx.request.from_org)} "  # type: ignore[union-attr]
                       f"(listed: {', '.join(f'({b})' for b in sorted(listed)) or 'none'}).", basis.citation,
                       {"lawful_basis": code, "protocol_bases": listed})
    evidence = {"lawful_basis": code} if listed is None else {"lawful_basis": code, "protocol_bases": listed}
    found = ctx.memo.get((rule, ctx.protocol_key, ctx.request.from_org, code))
    return found if found is not None else _remember(ctx, (rule, ctx.protocol_key, ctx.request.from_org, code), lambda: Finding(
        rule, PASS, f"The disclosure relies on {basis.label.lower()}, {basis.citation}.", basis.citation, evidence))


def _special_category(ctx: _Context) -> Finding:
    rule = "special_category"
    if not ctx.any_special:
        return _NO_SPECIAL_CATEGORY
    request = ctx.request
    given = request.special_category_condition
    if given is None:
        return Finding(rule, DENY, "Special category data is requested but no Article 9(2) condition is given.",
                       "UK GDPR Art 9(1)")
    article9, paragraph = given.article9, given.schedule1_paragraph
    condition = ctx.taxonomy.special_conditions.get(article9)
    if condition is None:
        return Finding(rule, DENY, f"'{article9}' is not a UK GDPR Article 9(2) condition.", "UK GDPR Art 9(2)",
                       {"article9": article9})
    citation = condition.citation + (f"; DPA 2018 Sch 1 para {paragraph}" if paragraph is not None else "")
    if condition.paragraphs and paragraph not in condition.paragraphs:
        choices = ", ".join(map(str, sorted(condition.paragraphs)))
        return Finding(rule, DENY,
                       f"Art 9(2)({article9}) is met only through a DPA 2018 Schedule 1 condition: give one of "
                       f"paragraphs {choices}.", citation, {"article9": article9, "schedule1_paragraph": paragraph})
    if not condition.paragraphs and paragraph is not None:
        return Finding(rule, DENY, f"Art 9(2)({article9}) takes no Schedule 1 paragraph; remove paragraph "
                                   f"{paragraph} or choose the condition it belongs to.", citation,
                       {"article9": article9, "schedule1_paragraph": paragraph})

    problems = []
    protocol = ctx.protocol
    if protocol is not None and ctx.sender_party is not None \
            and (article9, paragraph) not in ctx.sender_party.special_category_conditions:
        problems.append(f"{protocol.label} does not list {_condition_text(article9, paragraph)} for "
                        f"{_name(ctx, request.from_org)}")
    sender = ctx.sender
    sender_needs_apd = sender is not None and paragraph is not None and _needs_apd(ctx, paragraph, disclosing=True)
    if sender_needs_apd and not sender.apd_covers(paragraph, ctx.as_of):  # type: ignore[union-attr, arg-type]
        problems.append(_apd_problem(sender, paragraph))  # type: ignore[arg-type]
    recipient_problem, recipient_condition = _special_recipient(ctx, article9, paragraph)
    if recipient_problem:
        problems.append(recipient_problem)

    def evidence() -> dict[str, Any]:
        found: dict[str, Any] = {"article9": article9, "schedule1_paragraph": paragraph}
        if sender_needs_apd:
            found["sender_apd"] = _apd_evidence(sender)  # type: ignore[arg-type]
        if recipient_condition is not None:
            found["recipient_condition"] = {"article9": recipient_condition[0],
                                            "schedule1_paragraph": recipient_condition[1]}
        elif ctx.recipient is not None:
            found["recipient_apd"] = _apd_evidence(ctx.recipient)
        return found

    if problems:
        return Finding(rule, DENY, "; ".join(problems) + ".", citation + "; DPA 2018 Sch 1 paras 5 and 39",
                       evidence())
    key = (rule, ctx.protocol_key, request.from_org, request.to_org, article9, paragraph, sender_needs_apd,
           recipient_condition)
    found = ctx.memo.get(key)
    return found if found is not None else _remember(ctx, key, lambda: Finding(
        rule, PASS, f"Special category data is shared under {_condition_text(article9, paragraph)}, with the policy "
                    "documents it needs.", citation, evidence()))


def _special_recipient(
    ctx: _Context, article9: str, paragraph: int | None
) -> tuple[str | None, tuple[str, int | None] | None]:
    """The recipient needs its own condition for holding the data, and its own APD where that needs one.

    Returns the problem, if any, and the condition the recipient relies on.
    """
    recipient = ctx.recipient
    if recipient is None:
        return None, None
    party = ctx.recipient_party
    if ctx.protocol is None:
        options: list[tuple[str, int | None]] = [(article9, paragraph)]
    elif party is None:
        return None, None  # not a party: the parties rule denies
    elif not party.special_category_conditions:
        return (f"{ctx.protocol.label} lists no Article 9 condition under which {recipient.name} may receive "
                "special category data"), None
    else:
        # Prefer the sender's own condition, then the others the recipient has listed.
        own = (article9, paragraph)
        if own in party.special_category_conditions and _usable_by_recipient(ctx, recipient, paragraph):
            return None, own
        options = sorted(party.special_category_conditions, key=lambda c: (c != own, c[0], c[1] or 0))
    for option in options:
        if _usable_by_recipient(ctx, recipient, option[1]):
            return None, option
    return _apd_problem(recipient, options[0][1]), None  # type: ignore[arg-type]


def _usable_by_recipient(ctx: _Context, recipient: OrganisationFacts, paragraph: int | None) -> bool:
    """A condition the recipient can hold data under: no paragraph, or one needing no APD, or one its APD covers."""
    return paragraph is None or not _needs_apd(ctx, paragraph, disclosing=False) \
        or recipient.apd_covers(paragraph, ctx.as_of)


def _condition_text(article9: str, paragraph: int | None) -> str:
    return f"Art 9(2)({article9})" + (f" with Schedule 1 paragraph {paragraph}" if paragraph is not None else "")


def _needs_apd(ctx: _Context, paragraph: int, *, disclosing: bool) -> bool:
    entry = ctx.taxonomy.schedule1.get(paragraph)
    if entry is None or not entry.apd_required:
        return False
    # Sch 1 para 10(2): disclosing to a competent authority needs no policy document.
    recipient = ctx.recipient
    if disclosing and entry.apd_exempt_when_recipient_competent_authority and recipient is not None \
            and recipient.is_competent_authority:
        return False
    return True


def _apd_problem(organisation: OrganisationFacts, paragraph: int) -> str:
    if paragraph not in organisation.apd_paragraphs:
        return f"{organisation.name}'s appropriate policy document does not cover Schedule 1 paragraph {paragraph}"
    return (f"{organisation.name}'s appropriate policy document was due for review on "
            f"{_day(organisation.apd_review_on)} and has lapsed")  # type: ignore[arg-type]


def _apd_evidence(organisation: OrganisationFacts) -> dict[str, Any]:
    return {"organisation": organisation.code, "paragraphs": organisation.apd_paragraphs,
            "review_on": organisation.apd_review_on}


def _criminal_offence(ctx: _Context) -> Finding:
    rule = "criminal_offence"
    base_citation = "UK GDPR Art 10; DPA 2018 s10(5) and s11(2)"
    if not ctx.any_criminal:
        return _NO_CRIMINAL_OFFENCE
    request = ctx.request
    given = request.criminal_offence_condition
    if given is None:
        return Finding(rule, DENY, "Criminal offence data is requested but no Article 10 route is given: official "
                                   "authority (public bodies) or a DPA 2018 Schedule 1 paragraph.", base_citation)
    route, paragraph = given.route, given.schedule1_paragraph
    sender, party, protocol = ctx.sender, ctx.sender_party, ctx.protocol
    citation = base_citation
    problems = []
    sender_needs_apd = exempt = False
    if route == "official_authority":
        if sender is not None and not sender.is_public_authority:
            return Finding(rule, DENY, f"{sender.name} is not a public body and cannot process criminal offence "
                                       "data under official authority: give a Schedule 1 paragraph.", citation,
                           {"route": route})
        if protocol is not None and party is not None and not party.criminal_official_authority:
            problems.append(f"{protocol.label} does not list official authority for {_name(ctx, request.from_org)}")
    elif route == "schedule1":
        entry = ctx.taxonomy.schedule1.get(paragraph) if paragraph is not None else None
        if entry is None or not entry.condition:
            return Finding(rule, DENY, f"Schedule 1 paragraph {paragraph} is not a processing condition.", citation,
                           {"route": route, "schedule1_paragraph": paragraph})
        citation = f"{base_citation}; DPA 2018 Sch 1 para {paragraph}"
        if protocol is not None and party is not None and paragraph not in party.criminal_paragraphs:
            problems.append(f"{protocol.label} does not list Schedule 1 paragraph {paragraph} for "
                            f"{_name(ctx, request.from_org)}")
        if sender is not None:
            sender_needs_apd = _needs_apd(ctx, paragraph, disclosing=True)  # type: ignore[arg-type]
            if sender_needs_apd and not sender.apd_covers(paragraph, ctx.as_of):  # type: ignore[arg-type]
                problems.append(_apd_problem(sender, paragraph))  # type: ignore[arg-type]
            exempt = not sender_needs_apd and entry.apd_required
            if exempt:
                # Sch 1 para 10(2): disclosing to a competent authority needs no policy document.
                citation = f"{base_citation}; DPA 2018 Sch 1 para {paragraph}(2)"
    else:
        return Finding(rule, DENY, f"'{route}' is not an Article 10 route: use official_authority or schedule1.",
                       citation, {"route": route})
    recipient_problem, recipient_route = _criminal_recipient(ctx, given)
    if recipient_problem:
        problems.append(recipient_problem)

    def evidence() -> dict[str, Any]:
        found: dict[str, Any] = {"route": route, "schedule1_paragraph": paragraph}
        if sender_needs_apd:
            found["sender_apd"] = _apd_evidence(sender)  # type: ignore[arg-type]
        if exempt:
            found["apd_exempt"] = "disclosure to a competent authority"
        if recipient_route is not None:
            found["recipient_route"] = recipient_route
        elif ctx.recipient is not None:
            found["recipient_apd"] = _apd_evidence(ctx.recipient)
        return found

    if problems:
        return Finding(rule, DENY, "; ".join(problems) + ".", citation, evidence())
    how = "under official authority" if route == "official_authority" else f"under Schedule 1 paragraph {paragraph}"
    note = " (paragraph 10(2): no policy document is needed to disclose to a competent authority)" if exempt else ""
    key = (rule, ctx.protocol_key, request.from_org, request.to_org, route, paragraph, sender_needs_apd, exempt,
           recipient_route)
    found = ctx.memo.get(key)
    return found if found is not None else _remember(ctx, key, lambda: Finding(
        rule, PASS, f"Criminal offence data is disclosed {how}{note}, and the recipient has a route to hold it.",
        citation, evidence()))


def _criminal_recipient(ctx: _Context, given: CriminalOffenceCondition) -> tuple[str | None, Any]:
    """The recipient needs its own Article 10 route; a private or voluntary body needs a Schedule 1 condition with an APD.

    Returns the problem, if any, and the route the recipient relies on.
    """
    recipient = ctx.recipient
    if recipient is None:
        return None, None
    protocol = ctx.protocol
    party = ctx.recipient_party
    if protocol is None:
        if recipient.is_public_authority:
            return None, "official_authority"
        paragraph = given.schedule1_paragraph if given.route == "schedule1" else None
        candidates = [paragraph] if paragraph is not None else sorted(recipient.apd_paragraphs)
    elif party is None:
        return None, None  # not a party: the parties rule denies
    else:
        if not party.criminal_official_authority and not party.criminal_paragraphs:
            return (f"{protocol.label} lists no Article 10 route under which {recipient.name} may receive criminal "
                    "offence data"), None
        if party.criminal_official_authority and recipient.is_public_authority:
            return None, "official_authority"
        candidates = sorted(party.criminal_paragraphs)
    schedule1 = ctx.taxonomy.schedule1
    for paragraph in candidates:
        entry = schedule1.get(paragraph)
        if entry is not None and entry.condition \
                and (not entry.apd_required or recipient.apd_covers(paragraph, ctx.as_of)):
            return None, ("schedule1", paragraph)
    if not candidates:
        return (f"{recipient.name} is not a public body, so it needs a Schedule 1 condition covered by its appropriate "
                "policy document to hold criminal offence data, and has none"), None
    problem = _apd_problem(recipient, candidates[0])
    if recipient.is_public_authority:
        return problem, None
    return f"{recipient.name} is not a public body, so it needs a Schedule 1 condition with a current APD: {problem}", None


def _legal_gateway(ctx: _Context) -> Finding:
    rule = "legal_gateway"
    sender = ctx.sender
    if sender is None or not sender.is_public_authority:
        return _PRIVATE_SENDER
    request = ctx.request
    code = request.legal_gateway
    if code is None:
        return Finding(rule, REFER, f"{sender.name} is a public authority and may share only under a statutory power: "
                                    "no gateway is given.", "Public law (vires)")
    gateway = ctx.taxonomy.gateways.get(code)
    if gateway is None:
        return Finding(rule, REFER, f"'{code}' is not a statutory gateway in the taxonomy.", "Public law (vires)",
                       {"gateway": code})
    protocol = ctx.protocol
    evidence: dict[str, Any] = {"gateway": code, "citation": gateway.citation}
    if protocol is not None:
        evidence["protocol_gateways"] = protocol.statutory_gateways
        if code not in protocol.statutory_gateways:
            return Finding(rule, REFER, f"{protocol.label} does not list {gateway.citation} as a gateway.",
                           gateway.citation, evidence)
    # s36(4): data collected for law enforcement may serve another purpose only where the law authorises it.
    purpose = ctx.purpose
    if sender.is_competent_authority and ctx.identifying and (purpose is None or not purpose.law_enforcement) \
            and not gateway.authorises_law_enforcement_reuse:
        purpose_label = purpose.label if purpose is not None else request.purpose
        evidence["law_enforcement_reuse"] = True
        return Finding(rule, REFER,
                       f"{sender.name} holds this data for law enforcement; using it for '{purpose_label}' needs a "
                       f"law that authorises it, and {gateway.citation} does not.", "DPA 2018 s36(4)", evidence)
    found = ctx.memo.get((rule, ctx.protocol_key, request.from_org, code))
    return found if found is not None else _remember(ctx, (rule, ctx.protocol_key, request.from_org, code), lambda: Finding(
        rule, PASS, f"{sender.name} shares under {gateway.citation}.", gateway.citation, evidence))


def _confidentiality(ctx: _Context) -> Finding:
    rule, citation = "confidentiality", "Common law duty of confidentiality; Caldicott Principles"
    sender = ctx.sender
    purpose = ctx.purpose
    if sender is None or sender.kind not in NHS_KINDS or not ctx.any_health:
        return _NO_NHS_HEALTH_DATA
    if purpose is not None and purpose.direct_care:
        return _DIRECT_CARE
    protocol = ctx.protocol
    if protocol is None:
        return Finding(rule, REFER, f"Health information from {sender.name} outside direct care needs Caldicott "
                                    "approval, and one-off sharing has none: refer to the DPO and Caldicott Guardian.",
                       citation)
    caldicott = protocol.caldicott
    if caldicott is None or not caldicott.approved:
        return Finding(rule, REFER, f"{protocol.label} records no Caldicott approval for sharing health information "
                                    "outside direct care: refer to the DPO and Caldicott Guardian.", citation)
    basis = ctx.request.confidentiality_basis
    bases = ctx.taxonomy.confidentiality_bases
    if caldicott.confidentiality_basis_required and (basis is None or basis not in bases):
        what = "no" if basis is None else f"an unknown ('{basis}')"
        return Finding(rule, REFER,
                       f"{protocol.label} requires each disclosure of health information to state its common law "
                       f"basis (consent, legal requirement or overriding public interest), and {what} basis is "
                       "given: refer to the DPO and Caldicott Guardian.", citation,
                       {"approved_by": caldicott.approved_by, "approved_on": caldicott.approved_on})

    def make() -> Finding:
        message = f"Caldicott approval by {caldicott.approved_by}"  # type: ignore[union-attr]
        if basis in bases:
            message += f"; confidentiality is set aside by {bases[basis].lower()}"  # type: ignore[index]
        return Finding(rule, PASS, message + ".", citation, {
            "approved_by": caldicott.approved_by, "approved_on": caldicott.approved_on,  # type: ignore[union-attr]
            "confidentiality_basis": basis})

    found = ctx.memo.get((rule, ctx.protocol_key, basis))
    return found if found is not None else _remember(ctx, (rule, ctx.protocol_key, basis), make)


def _ad_hoc(ctx: _Context) -> Finding:
    """One-off sharing under the K-MISA umbrella, without a protocol.

    The K-MISA lets its current signatories share case by case; what it does not allow is a
    pattern of "one-offs" standing in for a protocol (ICO Data Sharing Code: routine sharing
    needs an agreement), so regular sharing and the threshold-th one-off are referred.
    """
    rule, citation = "ad_hoc", "K-MISA; ICO Data Sharing Code (DPA 2018 s121)"
    request = ctx.request
    if request.protocol is not None:
        return _UNDER_PROTOCOL
    if not (ctx.sender_standing.current and ctx.recipient_standing.current):
        return Finding(rule, DENY, "One-off sharing outside a protocol is open only between current K-MISA "
                                   "signatories (see kmisa_signatory).", citation)
    prior = ctx.snapshot.ad_hoc_count(request.from_org, request.to_org, request.purpose)
    kmisa = ctx.snapshot.kmisa
    evidence = {"prior_one_off_requests": prior, "threshold": kmisa.ad_hoc_count,
                "window_days": kmisa.ad_hoc_window_days}
    if not request.one_off:
        return Finding(rule, REFER, "Regular sharing needs a protocol: a DPO must decide this exchange, and the "
                                    "partners should put a protocol in place.", citation,
                       {**evidence, "advice": "put a protocol in place"})
    if prior + 1 >= kmisa.ad_hoc_count:
        return Finding(rule, REFER,
                       f"This is one-off request {prior + 1} between {_name(ctx, request.from_org)} and "
                       f"{_name(ctx, request.to_org)} for this purpose in {kmisa.ad_hoc_window_days} days: a DPO must "
                       "decide it, and the partners should put a protocol in place.", citation,
                       {**evidence, "advice": "put a protocol in place"})
    return Finding(rule, PASS, f"One-off sharing between current K-MISA signatories (request {prior + 1} for this "
                               f"pair and purpose in {kmisa.ad_hoc_window_days} days; a pattern starts at "
                               f"{kmisa.ad_hoc_count}).", citation, evidence)


def _transfer_method(ctx: _Context) -> Finding:
    rule, citation = "transfer_method", "UK GDPR Art 5(1)(f) and Art 32 (security)"
    code = ctx.request.transfer_method
    method = ctx.taxonomy.transfer_methods.get(code)
    if method is None:
        return Finding(rule, DENY, f"'{code}' is not a transfer method in the taxonomy.", citation, {"method": code})
    if not method.secure:
        return Finding(rule, DENY, f"{method.label} is not secure: send it by a secure method.", citation,
                       {"method": code, "secure": False})
    protocol = ctx.protocol
    if protocol is not None and code not in protocol.transfer_methods:
        return Finding(rule, DENY, f"{protocol.label} does not permit {method.label}.", citation,
                       {"method": code, "secure": True, "protocol_methods": protocol.transfer_methods})
    found = ctx.memo.get((rule, ctx.protocol_key, code))
    return found if found is not None else _remember(ctx, (rule, ctx.protocol_key, code), lambda: Finding(
        rule, PASS, f"{method.label} is secure" + (f" and permitted by {protocol.label}." if protocol else "."),
        citation, {"method": code, "secure": True}))


def _retention(ctx: _Context) -> Finding:
    rule, citation = "retention", "UK GDPR Art 5(1)(e) (storage limitation)"
    missing = _no_protocol(rule, ctx, citation)
    if missing is not None:
        return missing
    protocol: ProtocolFacts = ctx.protocol  # type: ignore[assignment]
    party = ctx.recipient_party
    to_org = ctx.request.to_org
    if party is None:
        return Finding(rule, NOT_APPLICABLE, f"{_name(ctx, to_org)} is not a party to {protocol.label} (see parties).",
                       citation)
    requested = ctx.request.retention_months
    maximum = party.max_retention_months
    if requested is None:
        return Finding(rule, DENY, "Say how long the recipient will keep the data (retention_months).", citation,
                       {"maximum_months": maximum})
    if maximum is not None and requested > maximum:
        return Finding(rule, DENY, f"{_name(ctx, to_org)} may keep data under {protocol.label} for at most "
                                   f"{maximum} months, not {requested}.", citation,
                       {"requested_months": requested, "maximum_months": maximum})
    found = ctx.memo.get((rule, ctx.protocol_key, to_org, requested))
    return found if found is not None else _remember(ctx, (rule, ctx.protocol_key, to_org, requested), lambda: Finding(
        rule, PASS, f"{requested} months is within the {maximum}-month maximum." if maximum is not None
        else f"{protocol.label} sets no maximum for {_name(ctx, to_org)}.", citation,
        {"requested_months": requested, "maximum_months": maximum}))


def _dpia_scope(ctx: _Context) -> Finding:
    rule, citation = "dpia_scope", "UK GDPR Art 35 (data protection impact assessment)"
    request = ctx.request
    bulk = request.bulk_or_matching or request.subject_count >= ctx.snapshot.kmisa.bulk_subject_threshold
    protocol = ctx.protocol
    if protocol is None:
        if bulk and not ctx.protocol_missing:
            return Finding(rule, REFER, "Bulk sharing or data matching outside a protocol has no DPIA behind it.",
                           citation, {"bulk": True})
        return _no_protocol(rule, ctx, citation)  # type: ignore[return-value]
    dpia = protocol.dpia
    if dpia is None:
        return Finding(rule, REFER, f"{protocol.label} has no recorded DPIA.", citation, {"bulk": bulk})
    as_of = ctx.as_of
    purpose = request.purpose
    if dpia.completed_on <= as_of <= dpia.review_on and purpose in dpia.scope_purposes and (dpia.covers_bulk or not bulk):
        found = ctx.memo.get((rule, ctx.protocol_key, bulk))
        return found if found is not None else _remember(ctx, (rule, ctx.protocol_key, bulk), lambda: Finding(
            rule, PASS, f"DPIA {dpia.reference} covers this exchange.", citation, _dpia_evidence(dpia, bulk)))
    evidence = _dpia_evidence(dpia, bulk)
    if dpia.completed_on > as_of:
        message = f"DPIA {dpia.reference} was not completed until {_day(dpia.completed_on)}."
    elif dpia.review_on < as_of:
        message = f"DPIA {dpia.reference} was due for review on {_day(dpia.review_on)}."
    elif purpose not in dpia.scope_purposes:
        message = f"DPIA {dpia.reference} does not assess sharing for '{purpose}'."
    else:
        message = (f"This is bulk sharing or data matching ({request.subject_count} people) and DPIA {dpia.reference} "
                   "does not assess it.")
    return Finding(rule, REFER, message, citation, evidence)


def _dpia_evidence(dpia: DpiaFacts, bulk: bool) -> dict[str, Any]:
    return {"reference": dpia.reference, "completed_on": dpia.completed_on, "review_on": dpia.review_on,
            "covers_bulk": dpia.covers_bulk, "bulk": bulk}


def _onward_sharing(ctx: _Context) -> Finding:
    rule, citation = "onward_sharing", "UK GDPR Art 5(1)(b); protocol onward-sharing rule"
    onward = ctx.request.onward_recipient
    if onward is None:
        return _NO_ONWARD_SHARING
    protocol = ctx.protocol
    if protocol is None:
        return Finding(rule, DENY, f"One-off sharing gives no permission to pass the data on to {_name(ctx, onward)}.",
                       citation, {"onward_recipient": onward})
    evidence = {"onward_recipient": onward, "allowed": protocol.onward_recipients}
    if onward not in protocol.onward_recipients:
        return Finding(rule, DENY, f"{protocol.label} does not allow the data to be passed on to {_name(ctx, onward)}.",
                       citation, evidence)
    found = ctx.memo.get((rule, ctx.protocol_key, onward))
    return found if found is not None else _remember(ctx, (rule, ctx.protocol_key, onward), lambda: Finding(
        rule, PASS, f"{protocol.label} allows onward sharing with {_name(ctx, onward)}.", citation, evidence))


def _recipient_assurance(ctx: _Context) -> Finding:
    rule, citation = "recipient_assurance", "Data Protection (Charges and Information) Regulations 2018; UK GDPR Art 37"
    recipient = ctx.recipient
    if recipient is None:
        return _RECIPIENT_UNKNOWN
    expires = recipient.ico_registration_expires_on
    if expires is not None and expires >= ctx.as_of and recipient.dpo_email:
        found = ctx.memo.get((rule, recipient.code))
        return found if found is not None else _remember(ctx, (rule, recipient.code), lambda: Finding(
            rule, PASS, f"{recipient.name} is registered with the ICO until {_day(expires)} and has a data "
                        "protection contact.", citation,
            {"ico_registration_expires_on": expires, "dpo_email": recipient.dpo_email}))
    problems = []
    if expires is None:
        problems.append(f"{recipient.name} has no ICO registration on record")
    elif expires < ctx.as_of:
        problems.append(f"{recipient.name}'s ICO registration expired on {_day(expires)}")
    if not recipient.dpo_email:
        problems.append(f"{recipient.name} has no data protection contact on record")
    return Finding(rule, REFER, "; ".join(problems) + ".", citation,
                   {"ico_registration_expires_on": expires, "dpo_email": recipient.dpo_email})


def _emergency(ctx: _Context) -> Finding:
    rule = "emergency"
    emergency = ctx.request.emergency
    if emergency is None:
        return _NO_EMERGENCY
    taxonomy = ctx.taxonomy
    evidence: dict[str, Any] = {"category": emergency.category, "justification": emergency.justification}
    if ctx.emergency_accepted:
        due = ctx.as_of + timedelta(days=ctx.snapshot.kmisa.emergency_review_days)
        evidence.update(accepted=True, retrospective_review_due=due)
        return Finding(rule, PASS,
                       f"Emergency accepted ({taxonomy.emergency_categories[emergency.category].lower()}): the "
                       f"protocol and signatory rules are set aside; a DPO must review this sharing by {_day(due)}.",
                       "UK GDPR Art 6(1)(d), Art 9(2)(c); DPA 2018 Sch 1 para 18; ICO Data Sharing Code (emergencies)",
                       evidence)
    evidence["accepted"] = False
    if emergency.category in taxonomy.non_emergency_urgencies:
        why = taxonomy.non_emergency_urgencies[emergency.category]
        message = f"Urgency rejected as an emergency: {why} The request is judged under the normal rules."
    elif emergency.category in taxonomy.emergency_categories:
        message = "Emergency rejected: no justification is recorded. The request is judged under the normal rules."
    else:
        message = (f"Emergency rejected: '{emergency.category}' is not an emergency category. The request is judged "
                   "under the normal rules.")
    return Finding(rule, NOT_APPLICABLE, message, "ICO Data Sharing Code (emergencies)", evidence)


_RULES: tuple[Callable[[_Context], Finding], ...] = (
    _org_active,
    _kmisa_signatory,
    _protocol_approved,
    _protocol_current,
    _parties,
    _purpose,
    _data_categories,
    _subject_types,
    _lawful_basis,
    _special_category,
    _criminal_offence,
    _legal_gateway,
    _confidentiality,
    _ad_hoc,
    _transfer_method,
    _retention,
    _dpia_scope,
    _onward_sharing,
    _recipient_assurance,
    _emergency,
)

if tuple(rule.__name__.lstrip("_") for rule in _RULES) != RULE_CODES:  # pragma: no cover - a developer's slip
    raise RuntimeError("_RULES must list one function per rule code, in RULE_CODES order")


# =============================================================================================
# The request as JSON: the API, the CLI's `check` and request_from_dict share this model
# =============================================================================================

def _day_or_moment(value: Any) -> Any:
    """Parse ``as_of`` as a date when it is one, else a date-time; never a number of seconds."""
    if isinstance(value, (date, datetime)) or value is None:
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("use an ISO date (2026-11-22) or date-time (2026-11-22T14:30:00+00:00)") from None
    raise ValueError("use an ISO date (2026-11-22) or date-time (2026-11-22T14:30:00+00:00)")


_Code = Annotated[StrictStr, StringConstraints(pattern=r"^[a-z0-9]+(?:[-_.][a-z0-9]+)*$", max_length=100)]
_Text = Annotated[StrictStr, StringConstraints(max_length=4000)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProtocolRefIn(_In):
    code: _Code = Field(description="The protocol's code, e.g. vcs-safeguarding.")
    version: Annotated[StrictInt, Field(ge=1)] = Field(description="The protocol version relied on.")


class SpecialCategoryConditionIn(_In):
    article9: Annotated[StrictStr, StringConstraints(pattern=r"^[a-z]{1,2}$")] = Field(
        description="The UK GDPR Article 9(2) point, e.g. g.")
    schedule1_paragraph: Annotated[StrictInt, Field(ge=1, le=99)] | None = Field(
        default=None, description="The DPA 2018 Schedule 1 paragraph the condition needs, e.g. 18.")


class CriminalOffenceConditionIn(_In):
    route: Literal["official_authority", "schedule1"] = Field(
        description="official_authority (public bodies) or schedule1 (give schedule1_paragraph).")
    schedule1_paragraph: Annotated[StrictInt, Field(ge=1, le=99)] | None = Field(
        default=None, description="The DPA 2018 Schedule 1 paragraph, when route is schedule1.")

    @model_validator(mode="after")
    def _paragraph_matches_route(self) -> "CriminalOffenceConditionIn":
        if self.route == "schedule1" and self.schedule1_paragraph is None:
            raise ValueError("route schedule1 needs schedule1_paragraph")
        if self.route == "official_authority" and self.schedule1_paragraph is not None:
            raise ValueError("route official_authority takes no schedule1_paragraph")
        return self


class EmergencyIn(_In):
    category: _Code = Field(description="An emergency category, e.g. risk_to_life.")
    justification: Annotated[StrictStr, StringConstraints(min_length=1, max_length=4000)] = Field(
        description="Why this cannot wait for the normal process.")


class ExchangeRequestIn(_In):
    """A proposed exchange as a partner system or the web form sends it."""

    from_org: _Code = Field(description="Register code of the organisation disclosing the data.")
    to_org: _Code = Field(description="Register code of the organisation receiving it.")
    protocol: ProtocolRefIn | None = Field(default=None, description="The protocol relied on; omit for one-off sharing.")
    purpose: _Code = Field(description="A purpose code from the taxonomy.")
    data_categories: list[_Code] = Field(min_length=1, max_length=100, description="Data category codes.")
    subject_types: list[_Code] = Field(min_length=1, max_length=50, description="Data subject type codes.")
    subject_count: Annotated[StrictInt, Field(ge=1)] = Field(default=1, description="How many people the data is about.")
    bulk_or_matching: StrictBool = Field(default=False, description="Bulk extract or data matching.")
    lawful_basis: Annotated[StrictStr, StringConstraints(pattern=r"^[a-z]{1,2}$")] | None = Field(
        default=None, description="The discloser's UK GDPR Article 6(1) basis, e.g. e.")
    special_category_condition: SpecialCategoryConditionIn | None = Field(
        default=None, description="Needed when any category is special category data.")
    criminal_offence_condition: CriminalOffenceConditionIn | None = Field(
        default=None, description="Needed when any category is criminal offence data.")
    legal_gateway: _Code | None = Field(default=None, description="The statutory gateway a public authority relies on.")
    transfer_method: _Code = Field(description="A transfer method code from the taxonomy.")
    retention_months: Annotated[StrictInt, Field(ge=1, le=1200)] | None = Field(
        default=None, description="How long the recipient will keep the data.")
    one_off: StrictBool = Field(default=False, description="A single exchange rather than regular sharing.")
    emergency: EmergencyIn | None = Field(default=None, description="An emergency claimed for this exchange.")
    confidentiality_basis: _Code | None = Field(
        default=None, description="Common law basis for confidential health data: consent, legal_requirement or "
                                  "overriding_public_interest.")
    onward_recipient: _Code | None = Field(default=None, description="An organisation the recipient will pass it to.")
    justification: _Text = Field(default="", description="Why the exchange is necessary, in the officer's words.")
    as_of: Annotated[date | datetime | None, BeforeValidator(_day_or_moment)] = Field(
        default=None, description="Answer as of this date (dry run); the service fills in now when omitted.")

    @model_validator(mode="after")
    def _two_organisations(self) -> "ExchangeRequestIn":
        if self.from_org == self.to_org:
            raise ValueError("from_org and to_org must be different organisations")
        return self

    def to_request(self, *, default_as_of: date | datetime | None = None) -> ExchangeRequest:
        """The engine's request; ``default_as_of`` is the caller's "now" when the input gave no date."""
        as_of = self.as_of if self.as_of is not None else default_as_of
        if as_of is None:
            raise ValueError("as_of is required: the engine has no clock")
        return ExchangeRequest(
            from_org=self.from_org,
            to_org=self.to_org,
            purpose=self.purpose,
            data_categories=tuple(self.data_categories),
            subject_types=tuple(self.subject_types),
            transfer_method=self.transfer_method,
            as_of=as_of,
            protocol=None if self.protocol is None else ProtocolRef(self.protocol.code, self.protocol.version),
            subject_count=self.subject_count,
            bulk_or_matching=self.bulk_or_matching,
            lawful_basis=self.lawful_basis,
            special_category_condition=None if self.special_category_condition is None else SpecialCategoryCondition(
                self.special_category_condition.article9, self.special_category_condition.schedule1_paragraph),
            criminal_offence_condition=None if self.criminal_offence_condition is None else CriminalOffenceCondition(
                self.criminal_offence_condition.route, self.criminal_offence_condition.schedule1_paragraph),
            legal_gateway=self.legal_gateway,
            retention_months=self.retention_months,
            one_off=self.one_off,
            emergency=None if self.emergency is None else Emergency(
                self.emergency.category, self.emergency.justification),
            confidentiality_basis=self.confidentiality_basis,
            onward_recipient=self.onward_recipient,
            justification=self.justification,
        )
