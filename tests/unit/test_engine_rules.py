"""Every rule of DESIGN §4, case by case, against a small register built in a line.

Each row is: a request (the default one, changed as the row says), optionally a register or
protocol changed as the row says, the rule it exercises, that rule's finding, and the overall
decision. The default request passes every rule, so a row's change is the whole story.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import pytest
import yaml

from app.decisions import build_snapshot, combine_outcomes, decide
from app.decisions.engine import (
    RULE_CODES,
    CriminalOffenceCondition,
    DecisionOutcome,
    Emergency,
    ExchangeRequest,
    FindingOutcome,
    OrganisationFacts,
    ProtocolRef,
    Snapshot,
    SpecialCategoryCondition,
)
from app.policies import bundle_from_sources, collect_sources, repository_policies_root
from app.registry.status import SignatureFacts

TODAY = date(2026, 11, 22)


# ---------------------------------------------------------------------------------------------
# A register of six organisations and one protocol, built in a line
# ---------------------------------------------------------------------------------------------


def org(code: str, kind: str, public: bool, competent: bool = False, apd: Iterable[int] = (6, 10, 18),
        **changes: Any) -> OrganisationFacts:
    facts = OrganisationFacts(
        code=code, name=code.replace("-", " ").title(), kind=kind, is_public_authority=public,
        is_competent_authority=competent, ico_registration_expires_on=date(2028, 12, 31),
        dpo_email=f"dpo@{code}.example", apd_paragraphs=frozenset(apd), apd_review_on=date(2028, 12, 31),
    )
    return replace(facts, **changes)


ORGANISATIONS = {
    o.code: o for o in (
        org("police", "police", True, competent=True),
        org("council", "district_council", True),
        org("nhs", "nhs_body", True, apd=(6, 18)),
        org("charity", "voluntary", False, apd=(18,)),
        org("shop", "private", False, apd=()),
        org("fire", "fire_and_rescue", True, apd=(6,)),
        org("old-ccg", "nhs_body", True, apd=(6,), status="dissolved", dissolved_on=date(2022, 7, 1),
            successor="nhs"),
    )
}


def signature(code: str, version: str = "2024", signed_on: date = date(2025, 1, 1),
              expires_on: date | None = date(2029, 1, 1), withdrawn_on: date | None = None) -> SignatureFacts:
    return SignatureFacts(code, version, signed_on, expires_on, withdrawn_on)


SIGNATURES = {code: [signature(code)] for code in ORGANISATIONS if code != "old-ccg"} | {
    "old-ccg": [signature("old-ccg", "2018", date(2019, 2, 1), date(2022, 6, 30))],
}


def party(organisation: str, roles: tuple[str, ...] = ("provider", "recipient"), tier: str = "personal",
          **fields: Any) -> dict[str, Any]:
    return {"organisation": organisation, "roles": list(roles), "tier": tier, **fields}


PARTIES = {
    "police": party("police", lawful_bases=["e"], special_category_conditions=[{"article9": "g",
                                                                               "schedule1_paragraph": 18}],
                    criminal_offence={"official_authority": True, "schedule1_paragraphs": [10]},
                    max_retention_months=24),
    "council": party("council", lawful_bases=["e"], special_category_conditions=[{"article9": "g",
                                                                                 "schedule1_paragraph": 18}],
                     criminal_offence={"official_authority": True}, max_retention_months=24),
    "nhs": party("nhs", lawful_bases=["e"], special_category_conditions=[
        {"article9": "g", "schedule1_paragraph": 18}, {"article9": "h", "schedule1_paragraph": 2}],
        criminal_offence={"schedule1_paragraphs": [18]}, max_retention_months=24),
    "charity": party("charity", lawful_bases=["a", "f"],
                     limited_to_categories=["identity", "contact", "health.mental_health",
                                            "criminal_offence.victim_witness"],
                     special_category_conditions=[{"article9": "g", "schedule1_paragraph": 18}],
                     criminal_offence={"schedule1_paragraphs": [18]}, max_retention_months=12),
    # A shopping centre reports shoplifting to the police and receives only crime statistics back.
    "shop": party("shop", tier="depersonalised", lawful_bases=["f"],
                  criminal_offence={"schedule1_paragraphs": [10]}, max_retention_months=6),
}


def protocol(version: int = 1, parties: Mapping[str, dict[str, Any]] | None = None, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "code": "fsp",
        "title": "Test frequent sharing protocol",
        "subgroup": "group",
        "version": version,
        "effective_from": date(2026, 1, 1),
        "review_on": date(2027, 12, 31),
        "purposes": ["safeguarding_adults", "crime_prevention", "domestic_homicide_review"],
        "subject_types": ["vulnerable_adult", "suspect", "victim", "deceased"],
        "data_categories": {"personal": ["identity", "contact", "health", "criminal_offence"],
                            "depersonalised": ["statistics"]},
        "statutory_gateways": ["cda-1998-s115", "ca-2004-s11", "dvcva-2004-s9"],
        "transfer_methods": ["accord_transfer", "egress_secure_email"],
        "parties": list((parties if parties is not None else PARTIES).values()),
        "dpia": {"reference": "DPIA-1", "completed_on": date(2025, 12, 1), "review_on": date(2028, 12, 1),
                 "covers_bulk": False, "scope_purposes": ["safeguarding_adults", "crime_prevention",
                                                          "domestic_homicide_review"]},
        "caldicott": {"approved": True, "approved_by": "Caldicott Guardian", "approved_on": date(2025, 12, 1),
                      "confidentiality_basis_required": True},
        "onward_sharing": {"allowed_recipients": ["council"]},
    }
    document.update(changes)
    if version > 1:
        document["supersedes"] = version - 1
    return document


def parties_with(code: str, **fields: Any) -> dict[str, dict[str, Any]]:
    """The default parties with one party's entry changed (a field set to None is removed)."""
    changed = {k: v for k, v in {**PARTIES[code], **fields}.items() if v is not None}
    return {**PARTIES, code: changed}


@lru_cache(maxsize=1)
def _umbrella_sources() -> dict[str, bytes]:
    sources = collect_sources(repository_policies_root())
    return {name: sources[name] for name in ("taxonomy.yaml", "kmisa.yaml")}


def build(*protocols: dict[str, Any], organisations: Mapping[str, OrganisationFacts] = ORGANISATIONS,
          signatures: Mapping[str, list[SignatureFacts]] = SIGNATURES,
          unsigned: Mapping[int, Iterable[str]] = {}, retired: Iterable[tuple[str, int]] = (),
          ad_hoc: Mapping[tuple[str, str, str], int] = {}) -> Snapshot:
    """A snapshot of the shipped taxonomy and K-MISA settings with these protocols and this register."""
    documents = protocols or (protocol(),)
    sources = dict(_umbrella_sources())
    for document in documents:
        path = f"protocols/{document['subgroup']}/{document['code']}-v{document['version']}.yaml"
        sources[path] = yaml.safe_dump(document, sort_keys=False).encode()
    bundle = bundle_from_sources(sources)
    signoffs = {
        loaded.key: {p.organisation for p in loaded.protocol.parties} - set(unsigned.get(loaded.key[1], ()))
        for loaded in bundle.protocols
    }
    return build_snapshot(bundle, organisations.values(), [s for ss in signatures.values() for s in ss],
                          signoffs, retired=set(retired), ad_hoc_counts=ad_hoc)


DEFAULT = build()


def request(**changes: Any) -> ExchangeRequest:
    """The police tell the council about an adult at risk: passes every rule on TODAY."""
    base = ExchangeRequest(
        from_org="police", to_org="council", protocol=ProtocolRef("fsp", 1), purpose="safeguarding_adults",
        data_categories=("identity.basic", "health.mental_health", "criminal_offence.allegations"),
        subject_types=("vulnerable_adult",), lawful_basis="e",
        special_category_condition=SpecialCategoryCondition("g", 18),
        criminal_offence_condition=CriminalOffenceCondition("official_authority"),
        legal_gateway="cda-1998-s115", transfer_method="accord_transfer", retention_months=12, as_of=TODAY,
    )
    return replace(base, **changes)


def one_off(**changes: Any) -> ExchangeRequest:
    return request(protocol=None, one_off=True, data_categories=("identity.basic", "contact.address"),
                   special_category_condition=None, criminal_offence_condition=None, **changes)


NHS_HEALTH = dict(from_org="nhs", data_categories=("health.mental_health",), criminal_offence_condition=None,
                  confidentiality_basis="overriding_public_interest")
SHOP_REPORT = dict(from_org="shop", to_org="police", lawful_basis="f", purpose="crime_prevention",
                   subject_types=("suspect",), data_categories=("identity.photograph", "criminal_offence.allegations"),
                   special_category_condition=None, criminal_offence_condition=CriminalOffenceCondition("schedule1", 10),
                   legal_gateway=None)
STATISTICS = dict(data_categories=("statistics.crime",), special_category_condition=None,
                  criminal_offence_condition=None, lawful_basis=None, to_org="shop", retention_months=6)
GRACE_ENDS = date(2026, 10, 1) + timedelta(days=90)


# (id, request, snapshot or None for the default, rule, the rule's finding, the decision)
Case = tuple[str, ExchangeRequest, Callable[[], Snapshot] | None, str, str, str]

CASES: list[Case] = [
    # org_active
    ("both-active", request(), None, "org_active", "pass", "allow"),
    ("unknown-recipient", request(to_org="nobody"), None, "org_active", "deny", "deny"),
    ("dissolved-sender", request(from_org="old-ccg"), None, "org_active", "deny", "deny"),
    ("dissolved-later-than-as-of", request(from_org="old-ccg", as_of=date(2022, 3, 1)), None, "org_active", "pass",
     "deny"),
    # kmisa_signatory
    ("both-signed", request(), None, "kmisa_signatory", "pass", "allow"),
    ("due-for-renewal-still-current", request(),
     lambda: build(signatures={**SIGNATURES, "council": [signature("council", expires_on=date(2027, 1, 10))]}),
     "kmisa_signatory", "pass", "allow"),
    ("expired", request(),
     lambda: build(signatures={**SIGNATURES, "council": [signature("council", expires_on=date(2026, 11, 21))]}),
     "kmisa_signatory", "deny", "deny"),
    ("withdrawn", request(),
     lambda: build(signatures={**SIGNATURES, "council": [signature("council", withdrawn_on=date(2026, 11, 1))]}),
     "kmisa_signatory", "deny", "deny"),
    ("pre-2018-version", request(),
     lambda: build(signatures={**SIGNATURES, "council": [signature("council", "2013", date(2016, 1, 1), None)]}),
     "kmisa_signatory", "deny", "deny"),
    ("never-signed", request(), lambda: build(signatures={k: v for k, v in SIGNATURES.items() if k != "council"}),
     "kmisa_signatory", "deny", "deny"),
    ("re-signed-after-withdrawal", request(),
     lambda: build(signatures={**SIGNATURES, "council": [
         signature("council", signed_on=date(2024, 1, 1), withdrawn_on=date(2025, 6, 1)),
         signature("council", signed_on=date(2025, 9, 1))]}),
     "kmisa_signatory", "pass", "allow"),
    # protocol_approved
    ("every-party-signed-off", request(), None, "protocol_approved", "pass", "allow"),
    ("charity-has-not-signed-off", request(), lambda: build(unsigned={1: ["charity"]}), "protocol_approved", "deny",
     "deny"),
    ("unknown-version", request(protocol=ProtocolRef("fsp", 7)), None, "protocol_approved", "deny", "deny"),
    ("one-off-has-no-protocol", one_off(), None, "protocol_approved", "not_applicable", "allow"),
    # protocol_current
    ("within-review-date", request(), None, "protocol_current", "pass", "allow"),
    ("on-the-review-date", request(as_of=date(2027, 12, 31)), None, "protocol_current", "pass", "allow"),
    ("review-overdue-in-grace", request(), lambda: build(protocol(review_on=date(2026, 10, 1))),
     "protocol_current", "refer", "refer"),
    ("last-day-of-grace", request(as_of=GRACE_ENDS), lambda: build(protocol(review_on=date(2026, 10, 1))),
     "protocol_current", "refer", "refer"),
    ("day-after-grace", request(as_of=GRACE_ENDS + timedelta(days=1)),
     lambda: build(protocol(review_on=date(2026, 10, 1))), "protocol_current", "deny", "deny"),
    ("superseded-by-approved-v2", request(), lambda: build(protocol(), protocol(2, effective_from=date(2026, 11, 1))),
     "protocol_current", "deny", "deny"),
    ("draft-v2-does-not-supersede", request(),
     lambda: build(protocol(), protocol(2, effective_from=date(2026, 11, 1)), unsigned={2: ["nhs"]}),
     "protocol_current", "pass", "allow"),
    ("retired", request(), lambda: build(retired=[("fsp", 1)]), "protocol_current", "deny", "deny"),
    ("not-yet-in-effect", request(as_of=date(2025, 12, 31)), None, "protocol_current", "deny", "deny"),
    ("ended", request(), lambda: build(protocol(ends_on=date(2026, 11, 21))), "protocol_current", "deny", "deny"),
    # parties
    ("provider-to-recipient", request(), None, "parties", "pass", "allow"),
    ("statistics-to-depersonalised-tier", request(**STATISTICS), None, "parties", "pass", "allow"),
    ("personal-data-to-depersonalised-tier", request(to_org="shop", special_category_condition=None,
                                                     data_categories=("identity.basic",), retention_months=6),
     None, "parties", "deny", "deny"),
    ("recipient-not-a-party", request(to_org="fire"), None, "parties", "deny", "deny"),
    ("sender-only-a-recipient", request(from_org="nhs", to_org="council", **{k: v for k, v in NHS_HEALTH.items()
                                                                           if k != "from_org"}),
     lambda: build(protocol(parties=parties_with("nhs", roles=["recipient"]))), "parties", "deny", "deny"),
    # purpose
    ("purpose-in-protocol", request(), None, "purpose", "pass", "allow"),
    ("purpose-not-in-protocol", request(purpose="asb_case_review"), None, "purpose", "deny", "deny"),
    ("purpose-unknown", request(purpose="golf"), None, "purpose", "deny", "deny"),
    # data_categories
    ("child-covered-by-allowed-parent", request(), None, "data_categories", "pass", "allow"),
    ("category-not-in-protocol", request(data_categories=("identity.basic", "education")), None,
     "data_categories", "deny", "deny"),
    ("outside-recipients-limit", request(to_org="charity", criminal_offence_condition=None,
                                         data_categories=("identity.basic", "criminal_offence.allegations")),
     None, "data_categories", "deny", "deny"),
    ("inside-recipients-limit", request(to_org="charity", data_categories=("identity.basic",
                                                                           "criminal_offence.victim_witness")),
     None, "data_categories", "pass", "allow"),
    ("category-unknown", request(data_categories=("identity.shoe_size",)), None, "data_categories", "deny", "deny"),
    # subject_types
    ("subject-type-covered", request(), None, "subject_types", "pass", "allow"),
    ("subject-type-not-covered", request(subject_types=("vulnerable_adult", "complainant")), None, "subject_types",
     "deny", "deny"),
    ("subject-type-unknown", request(subject_types=("martian",)), None, "subject_types", "deny", "deny"),
    # lawful_basis
    ("public-task", request(), None, "lawful_basis", "pass", "allow"),
    ("charity-on-legitimate-interests", request(from_org="charity", to_org="council", lawful_basis="f",
                                                legal_gateway=None, data_categories=("identity.basic",),
                                                special_category_condition=None, criminal_offence_condition=None),
     None, "lawful_basis", "pass", "allow"),
    ("public-authority-on-legitimate-interests", request(lawful_basis="f"), None, "lawful_basis", "deny", "deny"),
    ("public-authority-on-recognised-interests", request(lawful_basis="ea"), None, "lawful_basis", "deny", "deny"),
    ("basis-not-listed-for-sender", request(lawful_basis="c"), None, "lawful_basis", "deny", "deny"),
    ("no-basis", request(lawful_basis=None), None, "lawful_basis", "deny", "deny"),
    ("depersonalised-needs-none", request(**STATISTICS), None, "lawful_basis", "not_applicable", "allow"),
    # special_category
    ("safeguarding-paragraph-18", request(), None, "special_category", "pass", "allow"),
    ("health-care-paragraph-2-needs-no-apd", request(**NHS_HEALTH, special_category_condition=SpecialCategoryCondition(
        "h", 2)), lambda: build(organisations={**ORGANISATIONS, "nhs": replace(ORGANISATIONS["nhs"],
                                                                               apd_paragraphs=frozenset())}),
     "special_category", "pass", "allow"),
    ("no-condition", request(special_category_condition=None), None, "special_category", "deny", "deny"),
    ("g-without-paragraph", request(special_category_condition=SpecialCategoryCondition("g")), None,
     "special_category", "deny", "deny"),
    ("h-with-wrong-paragraph", request(special_category_condition=SpecialCategoryCondition("h", 18)), None,
     "special_category", "deny", "deny"),
    ("condition-not-listed-for-sender", request(special_category_condition=SpecialCategoryCondition("g", 6)), None,
     "special_category", "deny", "deny"),
    ("sender-apd-lapsed", request(),
     lambda: build(organisations={**ORGANISATIONS, "police": replace(ORGANISATIONS["police"],
                                                                     apd_review_on=date(2026, 11, 21))}),
     "special_category", "deny", "deny"),
    ("recipient-apd-lacks-paragraph", request(),
     lambda: build(organisations={**ORGANISATIONS, "council": replace(ORGANISATIONS["council"],
                                                                      apd_paragraphs=frozenset({6, 10}))}),
     "special_category", "deny", "deny"),
    ("no-special-category-data", request(data_categories=("identity.basic",), special_category_condition=None,
                                         criminal_offence_condition=None), None, "special_category",
     "not_applicable", "allow"),
    # criminal_offence
    ("official-authority", request(), None, "criminal_offence", "pass", "allow"),
    ("no-route", request(criminal_offence_condition=None), None, "criminal_offence", "deny", "deny"),
    ("charity-claims-official-authority",
     request(from_org="charity", to_org="police", lawful_basis="f", legal_gateway=None, special_category_condition=None,
             data_categories=("criminal_offence.victim_witness",), subject_types=("victim",)),
     None, "criminal_offence", "deny", "deny"),
    ("paragraph-10-to-competent-authority-needs-no-apd", request(**SHOP_REPORT),
     lambda: build(protocol(parties=parties_with("shop", roles=["provider", "recipient"]))),
     "criminal_offence", "pass", "allow"),
    ("paragraph-10-to-council-needs-apd", request(**{**SHOP_REPORT, "to_org": "council"}),
     lambda: build(protocol(parties=parties_with("shop", roles=["provider", "recipient"]))),
     "criminal_offence", "deny", "deny"),
    ("private-recipient-apd-lapsed", request(to_org="charity", data_categories=("criminal_offence.victim_witness",),
                                             special_category_condition=None),
     lambda: build(organisations={**ORGANISATIONS, "charity": replace(ORGANISATIONS["charity"],
                                                                      apd_review_on=date(2026, 1, 1))}),
     "criminal_offence", "deny", "deny"),
    ("recipient-lists-no-route", request(),
     lambda: build(protocol(parties=parties_with("council", criminal_offence=None))),
     "criminal_offence", "deny", "deny"),
    # legal_gateway
    ("listed-gateway", request(), None, "legal_gateway", "pass", "allow"),
    ("law-enforcement-purpose-any-listed-gateway", request(purpose="crime_prevention", subject_types=("suspect",),
                                                           legal_gateway="dvcva-2004-s9"),
     None, "legal_gateway", "pass", "allow"),
    ("no-gateway", request(legal_gateway=None), None, "legal_gateway", "refer", "refer"),
    ("gateway-not-listed", request(legal_gateway="asbcpa-2014-s104"), None, "legal_gateway", "refer", "refer"),
    ("police-data-for-another-purpose-s36-4", request(purpose="domestic_homicide_review", subject_types=("deceased",),
                                                      legal_gateway="dvcva-2004-s9"),
     None, "legal_gateway", "refer", "refer"),
    ("private-sender-needs-no-gateway", request(**SHOP_REPORT),
     lambda: build(protocol(parties=parties_with("shop", roles=["provider", "recipient"]))),
     "legal_gateway", "not_applicable", "allow"),
    # confidentiality
    ("not-nhs", request(), None, "confidentiality", "not_applicable", "allow"),
    ("nhs-health-with-basis", request(**NHS_HEALTH), None, "confidentiality", "pass", "allow"),
    ("nhs-non-health-data", request(**{**NHS_HEALTH, "data_categories": ("identity.basic",),
                                       "special_category_condition": None}),
     None, "confidentiality", "not_applicable", "allow"),
    ("nhs-health-without-basis", request(**{**NHS_HEALTH, "confidentiality_basis": None}), None, "confidentiality",
     "refer", "refer"),
    ("nhs-health-unknown-basis", request(**{**NHS_HEALTH, "confidentiality_basis": "because"}), None,
     "confidentiality", "refer", "refer"),
    ("no-caldicott-approval", request(**NHS_HEALTH), lambda: build(protocol(caldicott=None)), "confidentiality",
     "refer", "refer"),
    ("direct-care", request(**NHS_HEALTH, purpose="direct_care"),
     lambda: build(protocol(purposes=["safeguarding_adults", "crime_prevention", "domestic_homicide_review",
                                      "direct_care"])),
     "confidentiality", "not_applicable", "refer"),
    # ad_hoc
    ("under-protocol", request(), None, "ad_hoc", "not_applicable", "allow"),
    ("one-off-between-signatories", one_off(), None, "ad_hoc", "pass", "allow"),
    ("third-one-off-in-window", one_off(), lambda: build(ad_hoc={("police", "council", "safeguarding_adults"): 2}),
     "ad_hoc", "refer", "refer"),
    ("either-direction-counts", one_off(),
     lambda: build(ad_hoc={("police", "council", "safeguarding_adults"): 1,
                           ("council", "police", "safeguarding_adults"): 1}),
     "ad_hoc", "refer", "refer"),
    ("other-purposes-do-not-count", one_off(), lambda: build(ad_hoc={("police", "council", "crime_prevention"): 5}),
     "ad_hoc", "pass", "allow"),
    ("routine-without-protocol", replace(one_off(), one_off=False), None, "ad_hoc", "refer", "refer"),
    ("one-off-with-non-signatory", one_off(),
     lambda: build(signatures={**SIGNATURES, "council": [signature("council", expires_on=date(2026, 1, 1))]}),
     "ad_hoc", "deny", "deny"),
    # transfer_method
    ("permitted-secure-method", request(), None, "transfer_method", "pass", "allow"),
    ("insecure-method", request(transfer_method="unencrypted_email"), None, "transfer_method", "deny", "deny"),
    ("secure-but-not-permitted", request(transfer_method="cjsm"), None, "transfer_method", "deny", "deny"),
    ("unknown-method", request(transfer_method="carrier_pigeon"), None, "transfer_method", "deny", "deny"),
    ("insecure-even-in-an-emergency", request(transfer_method="messaging_app",
                                              emergency=Emergency("risk_to_life", "Missing person")),
     None, "transfer_method", "deny", "deny"),
    # retention
    ("within-maximum", request(), None, "retention", "pass", "allow"),
    ("exactly-the-maximum", request(retention_months=24), None, "retention", "pass", "allow"),
    ("beyond-maximum", request(retention_months=25), None, "retention", "deny", "deny"),
    ("not-stated", request(retention_months=None), None, "retention", "deny", "deny"),
    ("one-off-has-no-maximum", one_off(), None, "retention", "not_applicable", "allow"),
    # dpia_scope
    ("dpia-covers", request(), None, "dpia_scope", "pass", "allow"),
    ("just-below-bulk", request(subject_count=49), None, "dpia_scope", "pass", "allow"),
    ("bulk-threshold-reached", request(subject_count=50), None, "dpia_scope", "refer", "refer"),
    ("matching-not-assessed", request(bulk_or_matching=True), None, "dpia_scope", "refer", "refer"),
    ("dpia-review-overdue", request(),
     lambda: build(protocol(dpia={"reference": "DPIA-1", "completed_on": date(2024, 11, 1),
                                  "review_on": date(2026, 11, 21), "covers_bulk": False,
                                  "scope_purposes": ["safeguarding_adults"]})),
     "dpia_scope", "refer", "refer"),
    ("purpose-outside-dpia-scope", request(),
     lambda: build(protocol(dpia={"reference": "DPIA-2", "completed_on": date(2025, 12, 1),
                                  "review_on": date(2027, 12, 1), "covers_bulk": True,
                                  "scope_purposes": ["crime_prevention"]})),
     "dpia_scope", "refer", "refer"),
    ("no-dpia", request(), lambda: build(protocol(dpia=None)), "dpia_scope", "refer", "refer"),
    # onward_sharing
    ("no-onward-recipient", request(), None, "onward_sharing", "pass", "allow"),
    ("allowed-onward-recipient", request(to_org="nhs", onward_recipient="council", special_category_condition=(
        SpecialCategoryCondition("g", 18)), data_categories=("identity.basic", "health.mental_health"),
        criminal_offence_condition=None), None, "onward_sharing", "pass", "allow"),
    ("onward-recipient-not-allowed", request(onward_recipient="shop"), None, "onward_sharing", "deny", "deny"),
    ("one-off-gives-no-onward-permission", one_off(onward_recipient="fire"), None, "onward_sharing", "deny", "deny"),
    # recipient_assurance
    ("registered-with-dpo", request(), None, "recipient_assurance", "pass", "allow"),
    ("registration-ends-today", request(),
     lambda: build(organisations={**ORGANISATIONS, "council": replace(ORGANISATIONS["council"],
                                                                      ico_registration_expires_on=TODAY)}),
     "recipient_assurance", "pass", "allow"),
    ("registration-lapsed", request(),
     lambda: build(organisations={**ORGANISATIONS, "council": replace(ORGANISATIONS["council"],
                                                                      ico_registration_expires_on=TODAY
                                                                      - timedelta(days=1))}),
     "recipient_assurance", "refer", "refer"),
    ("no-dpo-contact", request(),
     lambda: build(organisations={**ORGANISATIONS, "council": replace(ORGANISATIONS["council"], dpo_email=None)}),
     "recipient_assurance", "refer", "refer"),
    # emergency
    ("no-emergency", request(), None, "emergency", "not_applicable", "allow"),
    ("risk-to-life-sets-aside-draft-protocol", request(emergency=Emergency("risk_to_life", "Threat to kill tonight")),
     lambda: build(unsigned={1: ["charity"]}), "emergency", "pass", "allow_emergency"),
    ("emergency-with-non-signatory", one_off(emergency=Emergency("immediate_safeguarding", "Child left alone")),
     lambda: build(signatures={k: v for k, v in SIGNATURES.items() if k != "council"}),
     "emergency", "pass", "allow_emergency"),
    ("deadline-rejected-judged-normally", request(emergency=Emergency("deadline", "Board meets tomorrow")),
     lambda: build(unsigned={1: ["charity"]}), "emergency", "not_applicable", "deny"),
    ("no-justification-rejected", request(emergency=Emergency("risk_to_life", "   ")),
     lambda: build(unsigned={1: ["charity"]}), "emergency", "not_applicable", "deny"),
    ("emergency-cannot-revive-dissolved-body", request(from_org="old-ccg",
                                                       emergency=Emergency("risk_to_life", "Threat to kill")),
     None, "org_active", "deny", "deny"),
]


@lru_cache(maxsize=None)
def _snapshot_for(case_id: str) -> Snapshot:
    factory = next(case[2] for case in CASES if case[0] == case_id)
    return factory() if factory is not None else DEFAULT


@pytest.mark.parametrize(("case_id", "request_", "rule", "finding", "outcome"),
                         [pytest.param(c[0], c[1], c[3], c[4], c[5], id=c[0]) for c in CASES])
def test_rule(case_id: str, request_: ExchangeRequest, rule: str, finding: str, outcome: str) -> None:
    decision = decide(request_, _snapshot_for(case_id))
    found = decision.finding(rule)
    assert found.outcome.value == finding, found.message
    assert decision.outcome.value == outcome, [f"{f.rule}: {f.message}" for f in decision.reasons]
    assert found.message and (found.citation or found.outcome is FindingOutcome.NOT_APPLICABLE)


def test_every_rule_has_at_least_three_cases() -> None:
    counts = {rule: sum(1 for c in CASES if c[3] == rule) for rule in RULE_CODES}
    assert all(count >= 3 for count in counts.values()), counts


def test_default_request_passes_every_rule() -> None:
    decision = decide(request(), DEFAULT)
    assert decision.outcome is DecisionOutcome.ALLOW
    assert decision.rules_with(FindingOutcome.DENY, FindingOutcome.REFER) == ()
    assert [f.rule for f in decision.findings] == list(RULE_CODES)


def test_deny_names_every_failing_rule() -> None:
    decision = decide(request(transfer_method="unencrypted_email", purpose="asb_case_review", legal_gateway=None),
                      DEFAULT)
    assert decision.outcome is DecisionOutcome.DENY
    assert decision.rules_with(FindingOutcome.DENY) == ("purpose", "transfer_method")
    # The DPIA assessed the protocol's purposes only, so it refers the stray purpose too.
    assert decision.rules_with(FindingOutcome.REFER) == ("legal_gateway", "dpia_scope")


def test_dissolved_message_names_the_successor() -> None:
    message = decide(request(from_org="old-ccg"), DEFAULT).finding("org_active").message
    assert "Nhs" in message and "(nhs)" in message and "1 July 2022" in message


def test_superseded_message_names_the_current_version() -> None:
    snapshot = build(protocol(), protocol(2, effective_from=date(2026, 11, 1)))
    assert "use version 2" in decide(request(), snapshot).finding("protocol_current").message


def test_draft_message_names_who_has_not_signed_off() -> None:
    snapshot = build(unsigned={1: ["charity", "shop"]})
    message = decide(request(), snapshot).finding("protocol_approved").message
    assert "Charity and Shop have not signed it off" in message


def test_kmisa_message_says_which_problem() -> None:
    variants = {
        "expired on": signature("council", expires_on=date(2026, 11, 1)),
        "withdrew": signature("council", withdrawn_on=date(2026, 11, 1)),
        "no longer valid": signature("council", "2013", date(2016, 1, 1), None),
    }
    for words, council in variants.items():
        snapshot = build(signatures={**SIGNATURES, "council": [council]})
        assert words in decide(request(), snapshot).finding("kmisa_signatory").message
    snapshot = build(signatures={k: v for k, v in SIGNATURES.items() if k != "council"})
    assert "has not signed" in decide(request(), snapshot).finding("kmisa_signatory").message


def test_paragraph_10_exemption_is_cited() -> None:
    snapshot = build(protocol(parties=parties_with("shop", roles=["provider", "recipient"])))
    finding = decide(request(**SHOP_REPORT), snapshot).finding("criminal_offence")
    assert finding.citation.endswith("Sch 1 para 10(2)")
    assert finding.evidence["apd_exempt"] == "disclosure to a competent authority"


def test_s36_4_is_cited_for_law_enforcement_data_used_otherwise() -> None:
    finding = decide(request(purpose="domestic_homicide_review", subject_types=("deceased",),
                             legal_gateway="dvcva-2004-s9"), DEFAULT).finding("legal_gateway")
    assert finding.citation == "DPA 2018 s36(4)"
    assert finding.evidence["law_enforcement_reuse"] is True


def test_accepted_emergency_carries_review_date_and_set_aside_findings() -> None:
    snapshot = build(unsigned={1: ["charity"]})
    decision = decide(request(emergency=Emergency("risk_to_life", "Threat to kill tonight")), snapshot)
    assert decision.emergency_accepted
    assert decision.retrospective_review_due == TODAY + timedelta(days=7)
    approved = decision.finding("protocol_approved")
    assert approved.outcome is FindingOutcome.NOT_APPLICABLE
    assert approved.evidence["would_have_been"] == "deny" and approved.evidence["set_aside_for_emergency"]
    assert decision.finding("purpose").outcome is FindingOutcome.PASS
    assert decision.finding("org_active").message == decide(request(), DEFAULT).finding("org_active").message


def test_rejected_urgency_is_recorded() -> None:
    decision = decide(request(emergency=Emergency("deadline", "Board meets tomorrow")), DEFAULT)
    finding = decision.finding("emergency")
    assert finding.evidence["accepted"] is False and "deadline" in finding.message.lower()
    assert decision.outcome is DecisionOutcome.ALLOW and not decision.emergency_accepted
    assert decision.retrospective_review_due is None


def test_datetime_as_of_is_judged_on_its_day() -> None:
    from datetime import datetime, timezone

    moment = datetime(2026, 11, 22, 23, 59, tzinfo=timezone.utc)
    decision = decide(request(as_of=moment), DEFAULT)
    assert decision.outcome is DecisionOutcome.ALLOW and decision.as_of == moment


def test_combine_outcomes_table() -> None:
    P, R, D, N = (FindingOutcome.PASS, FindingOutcome.REFER, FindingOutcome.DENY, FindingOutcome.NOT_APPLICABLE)
    assert combine_outcomes([P, N], False) is DecisionOutcome.ALLOW
    assert combine_outcomes([P, N], True) is DecisionOutcome.ALLOW_EMERGENCY
    assert combine_outcomes([P, R], True) is DecisionOutcome.REFER
    assert combine_outcomes([R, D, P], False) is DecisionOutcome.DENY


# --- the request as JSON ----------------------------------------------------------------------


def test_request_from_dict_round_trips() -> None:
    from app.decisions import request_from_dict

    original = request(emergency=Emergency("risk_to_life", "Threat to kill"), onward_recipient="council")
    assert request_from_dict(original.to_dict()) == original
    moment = request_from_dict({**original.to_dict(), "as_of": "2026-11-22T14:30:00+00:00"}).as_of
    assert moment.hour == 14 and moment.tzinfo is not None


def test_request_from_dict_uses_the_callers_now() -> None:
    from app.decisions import InvalidRequest, request_from_dict

    data = {k: v for k, v in request().to_dict().items() if k != "as_of"}
    assert request_from_dict(data, default_as_of=TODAY).as_of == TODAY
    with pytest.raises(InvalidRequest) as caught:
        request_from_dict(data)
    assert caught.value.problems[0][0] == "as_of"


@pytest.mark.parametrize(("change", "field"), [
    ({"retention_months": True}, "retention_months"),
    ({"subject_count": "5"}, "subject_count"),
    ({"one_off": 1}, "one_off"),
    ({"colour": "blue"}, "colour"),
    ({"as_of": 1700000000}, "as_of"),
    ({"as_of": "22/11/2026"}, "as_of"),
    ({"data_categories": []}, "data_categories"),
    ({"to_org": "police"}, ""),  # a check across two fields, reported for the whole request
    ({"criminal_offence_condition": {"route": "schedule1"}}, "criminal_offence_condition"),
    ({"protocol": {"code": "fsp", "version": 0}}, "protocol.version"),
    ({"emergency": {"category": "risk_to_life", "justification": ""}}, "emergency.justification"),
])
def test_request_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    from app.decisions import InvalidRequest, request_from_dict

    with pytest.raises(InvalidRequest) as caught:
        request_from_dict({**request().to_dict(), **change})
    fields = [f for f, _ in caught.value.problems]
    assert fields == [field], caught.value.problems
    if not field:
        assert "different organisations" in caught.value.problems[0][1]
