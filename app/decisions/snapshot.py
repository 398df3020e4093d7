"""Building the engine's :class:`~app.decisions.engine.Snapshot` from policies and register facts.

The snapshot is built once and reused until the register or the policies change, so all the
work a decision would otherwise repeat happens here: resolving each category's lineage and
inherited flags, each party's allowed categories (tier list narrowed by any limit), each
protocol's approval from its sign-offs, the newest version of each protocol, and each
organisation's signatures in signing order. The service reads the register rows, turns them
into the plain facts below and calls :func:`build_snapshot`; the engine never sees a model
or a session.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from datetime import date, datetime
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from app.decisions.engine import (
    CaldicottFacts,
    CategoryFacts,
    DpiaFacts,
    ExchangeRequest,
    ExchangeRequestIn,
    GatewayFacts,
    KmisaFacts,
    LawfulBasisFacts,
    OrganisationFacts,
    PartyFacts,
    ProtocolFacts,
    PurposeFacts,
    Schedule1Facts,
    Snapshot,
    SpecialConditionFacts,
    TaxonomyFacts,
    TransferMethodFacts,
)
from app.policies.loader import LoadedProtocol, PolicyBundle, allowed_paragraphs
from app.policies.schema import Party, Protocol, Taxonomy, category_lineage, effective_category_flags
from app.registry.demo import DemoRegister
from app.registry.status import SignatureFacts

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


def build_snapshot(
    bundle: PolicyBundle,
    organisations: Iterable[OrganisationFacts],
    signatures: Iterable[SignatureFacts],
    signoffs: Mapping[tuple[str, int], Collection[str]],
    retired: Collection[tuple[str, int]] = frozenset(),
    ad_hoc_counts: Mapping[tuple[str, str, str], int] = _EMPTY,
) -> Snapshot:
    """An immutable, indexed snapshot of ``bundle`` and the register.

    ``signoffs`` maps (protocol code, version) to the organisation codes that have signed that
    version off; ``retired`` adds versions retired in the register to those the files retire;
    ``ad_hoc_counts`` gives one-off requests within the K-MISA ad hoc window by
    (from organisation, to organisation, purpose) - either direction counts towards the pair.
    """
    taxonomy = taxonomy_facts(bundle.taxonomy)
    retired_keys = frozenset(retired)
    shared = _Shared()
    protocols = {
        loaded.key: protocol_facts(
            loaded, bundle.taxonomy, frozenset(signoffs.get(loaded.key, ())), loaded.key in retired_keys, shared=shared
        )
        for loaded in bundle.protocols
    }
    by_code: dict[str, list[ProtocolFacts]] = defaultdict(list)
    for facts in protocols.values():
        by_code[facts.code].append(facts)
    versions_by_code = {code: tuple(sorted(v, key=lambda p: -p.version)) for code, v in by_code.items()}

    signed: dict[str, list[SignatureFacts]] = defaultdict(list)
    for signature in signatures:
        signed[signature.organisation].append(signature)

    pairs: dict[tuple[str, str, str], int] = defaultdict(int)
    for (first, second, purpose), count in ad_hoc_counts.items():
        low, high = sorted((first, second))
        pairs[(low, high, purpose)] += count

    kmisa = bundle.kmisa
    return Snapshot(
        organisations=MappingProxyType({o.code: o for o in organisations}),
        signatures=MappingProxyType(
            {code: tuple(sorted(items, key=lambda s: s.signed_on, reverse=True)) for code, items in signed.items()}
        ),
        protocols=MappingProxyType(protocols),
        versions_by_code=MappingProxyType(versions_by_code),
        latest_version=MappingProxyType({code: versions[0].version for code, versions in versions_by_code.items()}),
        taxonomy=taxonomy,
        kmisa=KmisaFacts(
            versions=MappingProxyType({v.label: v.valid for v in kmisa.versions}),
            grace_period_days=kmisa.grace_period_days,
            ad_hoc_count=kmisa.ad_hoc_threshold.count,
            ad_hoc_window_days=kmisa.ad_hoc_threshold.window_days,
            emergency_review_days=kmisa.emergency_review_days,
            renewal_window_days=kmisa.signature_renewal_window_days,
            bulk_subject_threshold=kmisa.bulk_subject_threshold,
        ),
        ad_hoc_counts=MappingProxyType(dict(pairs)),
        bundle_hash=bundle.sha256,
    )


def taxonomy_facts(taxonomy: Taxonomy) -> TaxonomyFacts:
    """The taxonomy with every category's lineage and inherited flags worked out once."""
    flags = effective_category_flags(taxonomy)
    categories = {
        code: CategoryFacts(
            code=code,
            label=category.label,
            lineage=frozenset(category_lineage(code)),
            special_category=flags[code]["special_category"],
            criminal_offence=flags[code]["criminal_offence"],
            health=flags[code]["health"],
            depersonalised=flags[code]["depersonalised"],
        )
        for code, category in taxonomy.data_categories.items()
    }
    return TaxonomyFacts(
        categories=MappingProxyType(categories),
        purposes=MappingProxyType({
            code: PurposeFacts(code, p.label, p.law_enforcement, p.direct_care) for code, p in taxonomy.purposes.items()
        }),
        subject_types=frozenset(taxonomy.subject_types),
        transfer_methods=MappingProxyType({
            code: TransferMethodFacts(code, m.label, m.security == "secure")
            for code, m in taxonomy.transfer_methods.items()
        }),
        lawful_bases=MappingProxyType({
            code: LawfulBasisFacts(code, b.label, b.citation, b.unavailable_to_public_authorities)
            for code, b in taxonomy.lawful_bases.items()
        }),
        special_conditions=MappingProxyType({
            code: SpecialConditionFacts(code, c.label, c.citation, allowed_paragraphs(taxonomy, code))
            for code, c in taxonomy.special_category_conditions.items()
        }),
        schedule1=MappingProxyType({
            number: Schedule1Facts(number, p.title, p.part, p.condition, p.apd_required,
                                   p.apd_exempt_when_recipient_competent_authority)
            for number, p in taxonomy.schedule1_paragraphs.items()
        }),
        gateways=MappingProxyType({
            code: GatewayFacts(code, g.title, g.citation, g.authorises_law_enforcement_reuse)
            for code, g in taxonomy.statutory_gateways.items()
        }),
        emergency_categories=MappingProxyType({code: e.label for code, e in taxonomy.emergency_categories.items()}),
        non_emergency_urgencies=MappingProxyType({
            code: u.why_not_an_emergency for code, u in taxonomy.non_emergency_urgencies.items()
        }),
        confidentiality_bases=MappingProxyType({code: b.label for code, b in taxonomy.confidentiality_bases.items()}),
    )


class _Shared:
    """One object for each distinct set or fact, shared by every protocol that has an equal one.

    Protocols repeat each other (the same purposes, methods, bases and conditions), so sharing
    equal values keeps a register of thousands of protocols small, and keeps what ``decide``
    reads in the processor's cache.
    """

    def __init__(self) -> None:
        self._seen: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        return self._seen.setdefault(value, value)


def protocol_facts(
    loaded: LoadedProtocol, taxonomy: Taxonomy, signed_off_by: frozenset[str], retired: bool = False,
    *, shared: _Shared | None = None,
) -> ProtocolFacts:
    """One protocol version as the rules see it; approval is every party having signed it off."""
    same = shared if shared is not None else _Shared()
    protocol = loaded.protocol
    parties = {party.organisation: _party_facts(party, protocol, same) for party in protocol.parties}
    dpia = protocol.dpia
    caldicott = protocol.caldicott
    return ProtocolFacts(
        code=protocol.code,
        version=protocol.version,
        title=protocol.title,
        subgroup=protocol.subgroup,
        content_hash=loaded.sha256,
        path=loaded.path,
        effective_from=protocol.effective_from,
        review_on=protocol.review_on,
        ends_on=protocol.ends_on,
        supersedes=protocol.supersedes,
        retired=retired or protocol.status == "retired",
        parties=MappingProxyType(parties),
        purposes=same(frozenset(protocol.purposes)),
        subject_types=same(frozenset(protocol.subject_types)),
        statutory_gateways=same(frozenset(protocol.statutory_gateways)),
        transfer_methods=same(frozenset(protocol.transfer_methods)),
        dpia=None if dpia is None else DpiaFacts(
            dpia.reference, dpia.completed_on, dpia.review_on, dpia.covers_bulk, same(frozenset(dpia.scope_purposes))
        ),
        caldicott=None if caldicott is None else same(CaldicottFacts(
            caldicott.approved, caldicott.approved_by, caldicott.approved_on, caldicott.confidentiality_basis_required
        )),
        onward_recipients=same(frozenset(protocol.onward_sharing.allowed_recipients)),
        signed_off_by=same(signed_off_by),
        awaiting_signoff=tuple(sorted(set(parties) - signed_off_by)),
        label=f"{protocol.code} v{protocol.version}",
    )


def _party_facts(party: Party, protocol: Protocol, same: _Shared) -> PartyFacts:
    tiers = protocol.data_categories
    # A personal-tier party may also receive the protocol's depersonalised statistics.
    allowed = set(tiers.depersonalised) if party.tier == "depersonalised" else set(tiers.personal) | set(tiers.depersonalised)
    if party.limited_to_categories is not None:
        # The loader has checked every limit lies under an allowed category, so the limit is the set.
        allowed = set(party.limited_to_categories)
    criminal = party.criminal_offence
    return PartyFacts(
        organisation=party.organisation,
        provider="provider" in party.roles,
        recipient="recipient" in party.roles,
        tier=party.tier,
        allowed_categories=same(frozenset(allowed)),
        lawful_bases=same(frozenset(party.lawful_bases)),
        special_category_conditions=same(frozenset((c.article9, c.schedule1_paragraph)
                                                   for c in party.special_category_conditions)),
        criminal_official_authority=criminal is not None and criminal.official_authority,
        criminal_paragraphs=same(frozenset(criminal.schedule1_paragraphs) if criminal is not None else frozenset()),
        max_retention_months=party.max_retention_months,
        roles=same(tuple(party.roles)),
    )


# ---------------------------------------------------------------------------------------------
# Register facts from the demo data (the seed and the tests use the same register)
# ---------------------------------------------------------------------------------------------


def demo_register_facts(register: DemoRegister) -> tuple[list[OrganisationFacts], list[SignatureFacts]]:
    """Organisation and signature facts from :class:`app.registry.demo.DemoRegister`."""
    organisations = [
        OrganisationFacts(
            code=o.code,
            name=o.name,
            kind=o.kind,
            is_public_authority=o.is_public_authority,
            is_competent_authority=o.is_competent_authority,
            status="dissolved" if o.dissolved_on is not None else "active",
            dissolved_on=o.dissolved_on,
            successor=o.successor,
            ico_registration_expires_on=o.ico_registration_expires_on,
            dpo_email=o.dpo_email,
            apd_paragraphs=frozenset(o.apd_paragraphs),
            apd_review_on=o.apd_review_on,
        )
        for o in register.organisations
    ]
    signatures = [
        SignatureFacts(s.organisation, s.kmisa_version, s.signed_on, s.expires_on, s.withdrawn_on)
        for s in register.signatures
    ]
    return organisations, signatures


# ---------------------------------------------------------------------------------------------
# Requests from JSON
# ---------------------------------------------------------------------------------------------


class InvalidRequest(ValueError):
    """The request could not be read; ``problems`` holds (field, message) pairs naming each field."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in problems))


def request_from_dict(data: Mapping[str, Any], *, default_as_of: date | datetime | None = None) -> ExchangeRequest:
    """Validate a JSON request and convert it for the engine.

    ``default_as_of`` is the caller's "now" for a request that gives no ``as_of``; the engine
    itself never reads the clock.
    """
    try:
        parsed = ExchangeRequestIn.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False):
            field = ".".join(str(p) for p in item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "not a field of an exchange request"
            problems.append((field, message))
        raise InvalidRequest(problems) from None
    try:
        return parsed.to_request(default_as_of=default_as_of)
    except ValueError as error:
        raise InvalidRequest([("as_of", str(error))]) from None
