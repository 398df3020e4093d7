"""The shipped Dartford policies, against the demo register, reach every rule.

Each row is a request a Dartford officer could make on 22 November 2026 and what the
engine must answer: the rule that is exercised, that rule's finding, and the decision.
Together the rows show every rule code both failing (deny or refer) and passing in the demo
data, so a coordinator exploring the demo sees every kind of answer.
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from app.decisions import RULE_CODES, build_snapshot, decide, demo_register_facts
from app.decisions.engine import (
    CriminalOffenceCondition,
    Emergency,
    ExchangeRequest,
    ProtocolRef,
    Snapshot,
    SpecialCategoryCondition,
)
from app.policies import check_policies, load_bundle, repository_policies_root
from app.registry.demo import demo_pending_signoffs, demo_register

TODAY = date(2026, 11, 22)

SHIPPED = repository_policies_root()


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    bundle = load_bundle(SHIPPED)
    organisations, signatures = demo_register_facts(demo_register(TODAY))
    pending = demo_pending_signoffs()
    signoffs = {
        loaded.key: {p.organisation for p in loaded.protocol.parties} - set(pending.get(loaded.key, ()))
        for loaded in bundle.protocols
    }
    # Two earlier one-off requests from the police to the council for crime prevention this quarter.
    ad_hoc = {("kent-police", "dartford-bc", "crime_prevention"): 1, ("dartford-bc", "kent-police", "crime_prevention"): 1}
    return build_snapshot(bundle, organisations, signatures, signoffs, ad_hoc_counts=ad_hoc)


# The safeguarding group's everyday exchange: the police tell the council about an adult at risk.
SAFEGUARDING = ExchangeRequest(
    from_org="kent-police",
    to_org="dartford-bc",
    protocol=ProtocolRef("vcs-safeguarding", 2),
    purpose="safeguarding_adults",
    data_categories=("identity.basic", "health.mental_health", "criminal_offence.allegations"),
    subject_types=("vulnerable_adult",),
    lawful_basis="e",
    special_category_condition=SpecialCategoryCondition("g", 18),
    criminal_offence_condition=CriminalOffenceCondition("official_authority"),
    legal_gateway="cda-1998-s115",
    transfer_method="egress_secure_email",
    retention_months=12,
    as_of=TODAY,
)

# The organised crime group's: the police give Land Securities' control room an exclusion.
EXCLUSION = ExchangeRequest(
    from_org="kent-police",
    to_org="landsec",
    protocol=ProtocolRef("ocg-disruption", 1),
    purpose="crime_prevention",
    data_categories=("identity.basic", "identity.photograph", "criminal_offence.site_exclusions"),
    subject_types=("offender",),
    lawful_basis="e",
    criminal_offence_condition=CriminalOffenceCondition("official_authority"),
    legal_gateway="cda-1998-s115",
    transfer_method="accord_transfer",
    retention_months=6,
    as_of=TODAY,
)

# The DHR panel: NHS Kent and Medway gives the panel the victim's mental health history.
DHR_HEALTH = ExchangeRequest(
    from_org="nhs-kent-medway",
    to_org="dartford-bc",
    protocol=ProtocolRef("dhr-2025-01-panel", 1),
    purpose="domestic_homicide_review",
    data_categories=("identity.basic", "health.mental_health"),
    subject_types=("deceased",),
    lawful_basis="e",
    special_category_condition=SpecialCategoryCondition("g", 6),
    legal_gateway="dvcva-2004-s9",
    confidentiality_basis="overriding_public_interest",
    transfer_method="accord_transfer",
    retention_months=24,
    as_of=TODAY,
)

STATISTICS = ExchangeRequest(
    from_org="kent-police",
    to_org="dartford-bc",
    protocol=ProtocolRef("csp-strategic-assessment", 1),
    purpose="strategic_assessment",
    data_categories=("statistics.crime",),
    subject_types=("victim", "offender"),
    legal_gateway="cda-1998-s17a",
    transfer_method="accord_transfer",
    retention_months=60,
    as_of=TODAY,
)

ONE_OFF = ExchangeRequest(
    from_org="kent-police",
    to_org="dartford-bc",
    purpose="crime_prevention",
    data_categories=("identity.basic", "contact.address"),
    subject_types=("suspect",),
    lawful_basis="e",
    legal_gateway="cda-1998-s115",
    transfer_method="accord_transfer",
    one_off=True,
    as_of=TODAY,
)


def change(request: ExchangeRequest, **changes: Any) -> ExchangeRequest:
    return replace(request, **changes)


# (case id, request, rule exercised, its finding, the decision)
CASES = [
    # org_active
    ("dissolved-ccg", change(DHR_HEALTH, from_org="dgs-ccg"), "org_active", "deny", "deny"),
    ("both-active", SAFEGUARDING, "org_active", "pass", "allow"),
    # kmisa_signatory
    ("fire-signature-expired", change(STATISTICS, from_org="kent-fire-rescue"), "kmisa_signatory", "deny", "deny"),
    ("nhw-signed-2013-only", change(STATISTICS, to_org="dartford-nhw"), "kmisa_signatory", "deny", "deny"),
    ("ebbsfleet-withdrew", change(ONE_OFF, to_org="ebbsfleet-intl"), "kmisa_signatory", "deny", "deny"),
    ("bluewater-never-signed", change(EXCLUSION, to_org="bluewater", data_categories=("statistics.crime",)),
     "kmisa_signatory", "deny", "deny"),
    ("council-due-for-renewal-still-current", STATISTICS, "kmisa_signatory", "pass", "allow"),
    # protocol_approved
    ("vcs-v3-awaiting-signoff", change(SAFEGUARDING, protocol=ProtocolRef("vcs-safeguarding", 3)),
     "protocol_approved", "deny", "deny"),
    ("no-such-version", change(SAFEGUARDING, protocol=ProtocolRef("vcs-safeguarding", 9)),
     "protocol_approved", "deny", "deny"),
    ("vcs-v2-approved", SAFEGUARDING, "protocol_approved", "pass", "allow"),
    # protocol_current
    ("vcs-v1-superseded", change(SAFEGUARDING, protocol=ProtocolRef("vcs-safeguarding", 1),
                                 transfer_method="cjsm"), "protocol_current", "deny", "deny"),
    ("asb-review-overdue-in-grace", change(SAFEGUARDING, protocol=ProtocolRef("asb-case-review", 1),
                                           purpose="asb_case_review", subject_types=("complainant",),
                                           transfer_method="accord_transfer"),
     "protocol_current", "refer", "refer"),
    ("asb-last-day-of-grace", change(SAFEGUARDING, protocol=ProtocolRef("asb-case-review", 1),
                                     purpose="asb_case_review", subject_types=("complainant",),
                                     transfer_method="accord_transfer", as_of=date(2026, 12, 29)),
     "protocol_current", "refer", "refer"),
    ("asb-beyond-grace", change(SAFEGUARDING, protocol=ProtocolRef("asb-case-review", 1),
                                purpose="asb_case_review", subject_types=("complainant",),
                                transfer_method="accord_transfer", as_of=date(2026, 12, 30)),
     "protocol_current", "deny", "deny"),
    ("vcs-v2-current", SAFEGUARDING, "protocol_current", "pass", "allow"),
    # parties
    ("personal-data-to-depersonalised-tier", change(EXCLUSION, to_org="bluewater"), "parties", "deny", "deny"),
    ("recipient-only-party-sends", change(EXCLUSION, from_org="landsec", to_org="kent-police"),
     "parties", "deny", "deny"),
    ("police-to-landsec", EXCLUSION, "parties", "pass", "allow"),
    # purpose
    ("safeguarding-protocol-for-ocg", change(SAFEGUARDING, purpose="ocg_disruption"), "purpose", "deny", "deny"),
    ("safeguarding-purpose", SAFEGUARDING, "purpose", "pass", "allow"),
    # data_categories
    ("health-data-to-landsec", change(EXCLUSION, data_categories=("identity.basic", "health.mental_health")),
     "data_categories", "deny", "deny"),
    ("intelligence-under-criminal-offence-parent",
     change(EXCLUSION, to_org="probation-kss", data_categories=("criminal_offence.intelligence",), retention_months=12),
     "data_categories", "pass", "allow"),
    # subject_types
    ("complainant-not-covered", change(SAFEGUARDING, subject_types=("complainant",)), "subject_types", "deny", "deny"),
    ("adult-at-risk-covered", SAFEGUARDING, "subject_types", "pass", "allow"),
    # lawful_basis
    ("police-on-legitimate-interests", change(SAFEGUARDING, lawful_basis="f"), "lawful_basis", "deny", "deny"),
    ("basis-not-listed", change(SAFEGUARDING, lawful_basis="c"), "lawful_basis", "deny", "deny"),
    ("public-task", SAFEGUARDING, "lawful_basis", "pass", "allow"),
    # special_category
    ("county-apd-lapsed", change(SAFEGUARDING, from_org="kent-cc", criminal_offence_condition=None,
                                 data_categories=("identity.basic", "health.mental_health"), legal_gateway="ca-2004-s11"),
     "special_category", "deny", "deny"),
    ("no-article-9-condition", change(SAFEGUARDING, special_category_condition=None), "special_category", "deny",
     "deny"),
    ("safeguarding-paragraph-18", SAFEGUARDING, "special_category", "pass", "allow"),
    # criminal_offence
    ("charity-claims-official-authority",
     change(SAFEGUARDING, from_org="victim-support", to_org="kent-police", lawful_basis="f", legal_gateway=None,
            data_categories=("identity.basic", "criminal_offence.victim_witness"), special_category_condition=None,
            purpose="victim_support_referral", subject_types=("victim",)),
     "criminal_offence", "deny", "deny"),
    ("charity-on-paragraph-18",
     change(SAFEGUARDING, from_org="victim-support", to_org="kent-police", lawful_basis="f", legal_gateway=None,
            data_categories=("identity.basic", "criminal_offence.victim_witness"), special_category_condition=None,
            purpose="victim_support_referral", subject_types=("victim",),
            criminal_offence_condition=CriminalOffenceCondition("schedule1", 18)),
     "criminal_offence", "pass", "allow"),
    ("landsec-holds-under-paragraph-10", EXCLUSION, "criminal_offence", "pass", "allow"),
    # legal_gateway
    ("police-data-for-dhr-under-s9", change(DHR_HEALTH, from_org="kent-police", special_category_condition=None,
                                            data_categories=("criminal_offence.convictions",),
                                            criminal_offence_condition=CriminalOffenceCondition("official_authority")),
     "legal_gateway", "refer", "refer"),
    ("no-gateway", change(SAFEGUARDING, legal_gateway=None), "legal_gateway", "refer", "refer"),
    ("police-data-for-dhr-under-s115",
     change(DHR_HEALTH, from_org="kent-police", special_category_condition=None, legal_gateway="cda-1998-s115",
            data_categories=("criminal_offence.convictions",),
            criminal_offence_condition=CriminalOffenceCondition("official_authority")),
     "legal_gateway", "pass", "allow"),
    # confidentiality
    ("nhs-health-data-without-basis", change(DHR_HEALTH, confidentiality_basis=None), "confidentiality", "refer",
     "refer"),
    ("nhs-health-data-overriding-public-interest", DHR_HEALTH, "confidentiality", "pass", "allow"),
    # ad_hoc
    ("one-off-between-signatories", change(ONE_OFF, purpose="safeguarding_adults", subject_types=("vulnerable_adult",)),
     "ad_hoc", "pass", "allow"),
    ("routine-sharing-without-protocol", change(ONE_OFF, one_off=False, purpose="safeguarding_adults"),
     "ad_hoc", "refer", "refer"),
    ("third-one-off-put-a-protocol-in-place", ONE_OFF, "ad_hoc", "refer", "refer"),
    ("one-off-with-expired-signatory", change(ONE_OFF, to_org="kent-fire-rescue"), "ad_hoc", "deny", "deny"),
    ("under-a-protocol", SAFEGUARDING, "ad_hoc", "not_applicable", "allow"),
    # transfer_method
    ("plain-email", change(SAFEGUARDING, transfer_method="unencrypted_email"), "transfer_method", "deny", "deny"),
    ("secure-but-not-permitted", change(EXCLUSION, transfer_method="nhs_mail"), "transfer_method", "deny", "deny"),
    ("egress", SAFEGUARDING, "transfer_method", "pass", "allow"),
    # retention
    ("landsec-keeps-two-years", change(EXCLUSION, retention_months=24), "retention", "deny", "deny"),
    ("retention-not-stated", change(EXCLUSION, retention_months=None), "retention", "deny", "deny"),
    ("landsec-six-months", EXCLUSION, "retention", "pass", "allow"),
    # dpia_scope
    ("bulk-matching-not-assessed", change(SAFEGUARDING, bulk_or_matching=True), "dpia_scope", "refer", "refer"),
    ("bulk-matching-assessed", change(EXCLUSION, subject_count=120), "dpia_scope", "pass", "allow"),
    # onward_sharing
    ("onward-to-bluewater", change(SAFEGUARDING, onward_recipient="bluewater"), "onward_sharing", "deny", "deny"),
    ("onward-to-social-care", change(SAFEGUARDING, onward_recipient="kent-cc"), "onward_sharing", "pass", "allow"),
    # recipient_assurance
    ("council-ico-registration-lapsed", change(STATISTICS, as_of=date(2026, 12, 20)), "recipient_assurance",
     "refer", "refer"),
    ("nhw-no-ico-registration", change(STATISTICS, to_org="dartford-nhw", data_categories=("statistics.asb",)),
     "recipient_assurance", "refer", "deny"),
    ("council-registered", STATISTICS, "recipient_assurance", "pass", "allow"),
    # emergency
    ("missing-person-to-withdrawn-signatory",
     change(ONE_OFF, to_org="ebbsfleet-intl", data_categories=("identity.basic", "identity.photograph"),
            subject_types=("vulnerable_adult",), purpose="safeguarding_adults",
            emergency=Emergency("risk_to_life", "High-risk missing person seen boarding at Ebbsfleet")),
     "emergency", "pass", "allow_emergency"),
    ("deadline-is-not-an-emergency",
     change(ONE_OFF, to_org="ebbsfleet-intl", emergency=Emergency("deadline", "Report due to the board tomorrow")),
     "emergency", "not_applicable", "deny"),
    ("emergency-by-messaging-app",
     change(ONE_OFF, to_org="ebbsfleet-intl", transfer_method="messaging_app",
            emergency=Emergency("risk_to_life", "High-risk missing person")),
     "transfer_method", "deny", "deny"),
]


@pytest.mark.parametrize(("request_", "rule", "finding", "decision"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_demo_request(snapshot: Snapshot, request_: ExchangeRequest, rule: str, finding: str, decision: str) -> None:
    result = decide(request_, snapshot)
    assert result.finding(rule).outcome.value == finding, result.finding(rule).message
    assert result.outcome.value == decision, [f"{f.rule}: {f.message}" for f in result.reasons]
    assert [f.rule for f in result.findings] == list(RULE_CODES)


def test_every_rule_fails_and_passes_somewhere_in_the_demo() -> None:
    failing = {rule for _, _, rule, finding, _ in CASES if finding in ("deny", "refer")}
    passing = {rule for _, _, rule, finding, _ in CASES if finding == "pass"}
    # An emergency is either accepted or rejected: a rejected urgency is recorded and judged normally,
    # so its non-passing answer is "not_applicable" by design (DESIGN §4).
    assert failing == set(RULE_CODES) - {"emergency"}
    assert passing == set(RULE_CODES)
    assert {finding for _, _, rule, finding, _ in CASES if rule == "emergency"} == {"pass", "not_applicable"}


def test_messages_name_what_a_dpo_needs(snapshot: Snapshot) -> None:
    dissolved = decide(change(DHR_HEALTH, from_org="dgs-ccg"), snapshot).finding("org_active")
    assert "NHS Kent and Medway" in dissolved.message and "1 July 2022" in dissolved.message

    superseded = decide(change(SAFEGUARDING, protocol=ProtocolRef("vcs-safeguarding", 1)), snapshot)
    assert "use version 2" in superseded.finding("protocol_current").message

    draft = decide(change(SAFEGUARDING, protocol=ProtocolRef("vcs-safeguarding", 3)), snapshot)
    message = draft.finding("protocol_approved").message
    assert all(name in message for name in ("Kent County Council", "Kent Fire and Rescue Service",
                                            "NHS Kent and Medway"))

    grace = decide(change(SAFEGUARDING, protocol=ProtocolRef("asb-case-review", 1), purpose="asb_case_review",
                          subject_types=("complainant",)), snapshot).finding("protocol_current")
    assert "30 September 2026" in grace.message and "29 December 2026" in grace.message

    gateway = decide(change(DHR_HEALTH, from_org="kent-police", special_category_condition=None,
                            data_categories=("criminal_offence.convictions",),
                            criminal_offence_condition=CriminalOffenceCondition("official_authority")),
                     snapshot).finding("legal_gateway")
    assert gateway.citation == "DPA 2018 s36(4)"

    advice = decide(ONE_OFF, snapshot).finding("ad_hoc")
    assert "put a protocol in place" in advice.message and advice.evidence["prior_one_off_requests"] == 2

    statuses = {
        "kent-fire-rescue": "expired", "dartford-nhw": "no longer valid", "ebbsfleet-intl": "withdrew",
        "bluewater": "has not signed",
    }
    for organisation, words in statuses.items():
        finding = decide(change(ONE_OFF, to_org=organisation), snapshot).finding("kmisa_signatory")
        assert words in finding.message, finding.message


def test_emergency_sets_aside_protocol_and_signatory_rules(snapshot: Snapshot) -> None:
    request = change(SAFEGUARDING, protocol=ProtocolRef("vcs-safeguarding", 3),
                     emergency=Emergency("immediate_safeguarding", "Child at immediate risk tonight"))
    decision = decide(request, snapshot)
    assert decision.outcome.value == "allow_emergency"
    assert decision.retrospective_review_due == date(2026, 11, 29)
    approved = decision.finding("protocol_approved")
    assert approved.outcome.value == "not_applicable"
    assert approved.evidence["would_have_been"] == "deny" and "Set aside" in approved.message
    assert decision.finding("org_active").outcome.value == "pass"


def test_decision_serialises_to_json(snapshot: Snapshot) -> None:
    import json

    decision = decide(SAFEGUARDING, snapshot)
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["outcome"] == "allow"
    assert data["protocol"]["code"] == "vcs-safeguarding" and len(data["protocol"]["sha256"]) == 64
    assert data["kmisa_versions"] == ["2018", "2024"]
    assert [f["rule"] for f in data["findings"]] == list(RULE_CODES)
    assert data["findings"][1]["evidence"]["sender"]["kmisa_version"] == "2024"


def test_demo_pending_signoffs_are_parties_of_shipped_versions() -> None:
    bundle = load_bundle(SHIPPED)
    for key, organisations in demo_pending_signoffs().items():
        loaded = bundle.protocol(*key)
        assert loaded is not None
        assert set(organisations) <= {p.organisation for p in loaded.protocol.parties}


def test_shipped_policies_have_no_problems() -> None:
    assert check_policies(SHIPPED) == []


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    shutil.copytree(SHIPPED, root)
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_broken_copy_names_file_line_and_field(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    protocol = root / "protocols" / "ocg-group" / "ocg-disruption-v1.yaml"
    _edit(protocol, "    tier: depersonalised\n", "    tier: anonymous\n")
    problems = check_policies(root)
    assert len(problems) == 1
    problem = problems[0]
    assert problem.file == "protocols/ocg-group/ocg-disruption-v1.yaml"
    assert problem.field == "parties.4.tier"
    line = protocol.read_text().splitlines()[problem.line - 1]
    assert line.strip() == "tier: anonymous"
    assert "'personal' or 'depersonalised'" in problem.message


def test_unknown_taxonomy_code_names_file_line_and_field(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    protocol = root / "protocols" / "community-trigger" / "asb-case-review-v1.yaml"
    _edit(protocol, "statutory_gateways: [asbcpa-2014-s104,", "statutory_gateways: [asbcpa-2014-s105,")
    [problem] = check_policies(root)
    assert (problem.file, problem.field) == ("protocols/community-trigger/asb-case-review-v1.yaml",
                                             "statutory_gateways.0")
    assert "asbcpa-2014-s105" in problem.message
    assert protocol.read_text().splitlines()[problem.line - 1].startswith("statutory_gateways:")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    kmisa = root / "kmisa.yaml"
    _edit(kmisa, "grace_period_days: 90", "grace_period_days: [90")
    [problem] = check_policies(root)
    assert problem.file == "kmisa.yaml" and problem.line is not None
    assert "YAML syntax error" in problem.message


def test_file_name_must_match_version(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    folder = root / "protocols" / "vcs-group"
    (folder / "vcs-safeguarding-v3.yaml").rename(folder / "vcs-safeguarding-v4.yaml")
    [problem] = check_policies(root)
    assert (problem.file, problem.field, problem.line) == ("protocols/vcs-group/vcs-safeguarding-v4.yaml",
                                                           "version", 5)
