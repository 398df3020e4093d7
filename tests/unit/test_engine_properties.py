"""Properties of the engine that must hold for any request, not only the ones we thought of.

- ``decide`` is deterministic, and what the snapshot remembers between decisions never changes
  an answer: a request decided on a fresh snapshot and on a well-used one gets the same decision.
- Breaking one more rule never makes the outcome more permissive.
- The outcome combination is monotone: adding a finding never improves it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.decisions import build_snapshot, combine_outcomes, decide, demo_register_facts
from app.decisions.engine import (
    RULE_CODES,
    CriminalOffenceCondition,
    DecisionOutcome,
    Emergency,
    ExchangeRequest,
    FindingOutcome,
    ProtocolRef,
    SpecialCategoryCondition,
)
from app.policies import load_bundle, repository_policies_root
from app.registry.demo import demo_pending_signoffs, demo_register

TODAY = date(2026, 11, 22)
BUNDLE = load_bundle(repository_policies_root())
ORGANISATIONS, SIGNATURES = demo_register_facts(demo_register(TODAY))
PENDING = demo_pending_signoffs()
SIGNOFFS = {
    loaded.key: {p.organisation for p in loaded.protocol.parties} - set(PENDING.get(loaded.key, ()))
    for loaded in BUNDLE.protocols
}


def fresh_snapshot():
    return build_snapshot(BUNDLE, ORGANISATIONS, SIGNATURES, SIGNOFFS,
                          ad_hoc_counts={("kent-police", "dartford-bc", "crime_prevention"): 2})


SHARED = fresh_snapshot()
TAXONOMY = BUNDLE.taxonomy

org_codes = st.sampled_from([o.code for o in ORGANISATIONS] + ["nobody"])
protocol_refs = st.one_of(
    st.none(),
    st.sampled_from([ProtocolRef(*loaded.key) for loaded in BUNDLE.protocols] + [ProtocolRef("vcs-safeguarding", 9)]),
)
category_codes = st.sampled_from(sorted(TAXONOMY.data_categories) + ["identity.shoe_size"])
emergencies = st.one_of(
    st.none(),
    st.builds(Emergency, st.sampled_from(sorted(TAXONOMY.emergency_categories) + sorted(TAXONOMY.non_emergency_urgencies)
                                         + ["boredom"]),
              st.sampled_from(["", "  ", "Threat to life reported at 02:10"])),
)
requests = st.builds(
    ExchangeRequest,
    from_org=org_codes,
    to_org=org_codes,
    purpose=st.sampled_from(sorted(TAXONOMY.purposes) + ["golf"]),
    data_categories=st.lists(category_codes, min_size=1, max_size=4).map(tuple),
    subject_types=st.lists(st.sampled_from(sorted(TAXONOMY.subject_types) + ["martian"]), min_size=1,
                           max_size=3).map(tuple),
    transfer_method=st.sampled_from(sorted(TAXONOMY.transfer_methods)),
    as_of=st.dates(min_value=date(2021, 1, 1), max_value=date(2028, 12, 31)),
    protocol=protocol_refs,
    subject_count=st.integers(min_value=1, max_value=200),
    bulk_or_matching=st.booleans(),
    lawful_basis=st.one_of(st.none(), st.sampled_from(sorted(TAXONOMY.lawful_bases) + ["z"])),
    special_category_condition=st.one_of(st.none(), st.builds(
        SpecialCategoryCondition, st.sampled_from(sorted(TAXONOMY.special_category_conditions)),
        st.one_of(st.none(), st.sampled_from([2, 5, 6, 10, 18, 36])))),
    criminal_offence_condition=st.one_of(
        st.none(), st.just(CriminalOffenceCondition("official_authority")),
        st.builds(CriminalOffenceCondition, st.just("schedule1"), st.sampled_from([5, 6, 10, 18, 29]))),
    legal_gateway=st.one_of(st.none(), st.sampled_from(sorted(TAXONOMY.statutory_gateways))),
    retention_months=st.one_of(st.none(), st.integers(min_value=1, max_value=120)),
    one_off=st.booleans(),
    emergency=emergencies,
    confidentiality_basis=st.one_of(st.none(), st.sampled_from(sorted(TAXONOMY.confidentiality_bases))),
    onward_recipient=st.one_of(st.none(), org_codes),
)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(requests)
def test_decide_is_deterministic_and_memo_free(request: ExchangeRequest) -> None:
    first = decide(request, SHARED)
    again = decide(request, SHARED)
    fresh = decide(request, fresh_snapshot())
    assert first == again
    assert first.to_dict() == fresh.to_dict()
    assert [f.rule for f in first.findings] == list(RULE_CODES)


@PROPERTY_SETTINGS
@given(requests)
def test_outcome_follows_the_findings(request: ExchangeRequest) -> None:
    decision = decide(request, SHARED)
    outcomes = {f.outcome for f in decision.findings}
    if FindingOutcome.DENY in outcomes:
        assert decision.outcome is DecisionOutcome.DENY
    elif FindingOutcome.REFER in outcomes:
        assert decision.outcome is DecisionOutcome.REFER
    else:
        assert decision.outcome in (DecisionOutcome.ALLOW, DecisionOutcome.ALLOW_EMERGENCY)
    assert (decision.outcome is DecisionOutcome.ALLOW_EMERGENCY) <= decision.emergency_accepted
    assert (decision.retrospective_review_due is not None) == decision.emergency_accepted


# A request that passes every rule, and ways to break one more rule each.
ALLOWED = ExchangeRequest(
    from_org="kent-police", to_org="dartford-bc", protocol=ProtocolRef("vcs-safeguarding", 2),
    purpose="safeguarding_adults",
    data_categories=("identity.basic", "health.mental_health", "criminal_offence.allegations"),
    subject_types=("vulnerable_adult",), lawful_basis="e", special_category_condition=SpecialCategoryCondition("g", 18),
    criminal_offence_condition=CriminalOffenceCondition("official_authority"), legal_gateway="cda-1998-s115",
    transfer_method="egress_secure_email", retention_months=12, as_of=TODAY,
)

#: Ways to break one more rule, grouped by the field they change: a later change to the same
#: field would undo an earlier one, so a sequence takes at most one breaker per field.
BREAKERS: dict[str, dict[str, Callable[[ExchangeRequest], ExchangeRequest]]] = {
    "from_org": {"dissolved_sender": lambda r: replace(r, from_org="dgs-ccg")},
    "to_org": {"unknown_recipient": lambda r: replace(r, to_org="nobody"),
               "expired_signatory": lambda r: replace(r, to_org="kent-fire-rescue")},
    "protocol": {"draft_protocol": lambda r: replace(r, protocol=ProtocolRef("vcs-safeguarding", 3)),
                 "superseded_protocol": lambda r: replace(r, protocol=ProtocolRef("vcs-safeguarding", 1))},
    "purpose": {"foreign_purpose": lambda r: replace(r, purpose="ocg_disruption")},
    "data_categories": {"extra_category": lambda r: replace(r, data_categories=r.data_categories + ("employment",))},
    "subject_types": {"extra_subject": lambda r: replace(r, subject_types=r.subject_types + ("complainant",))},
    "lawful_basis": {"legitimate_interests": lambda r: replace(r, lawful_basis="f"),
                     "no_basis": lambda r: replace(r, lawful_basis=None)},
    "special_category_condition": {"no_article9": lambda r: replace(r, special_category_condition=None)},
    "criminal_offence_condition": {"no_article10": lambda r: replace(r, criminal_offence_condition=None)},
    "legal_gateway": {"no_gateway": lambda r: replace(r, legal_gateway=None)},
    "transfer_method": {"insecure": lambda r: replace(r, transfer_method="unencrypted_email")},
    "retention_months": {"too_long": lambda r: replace(r, retention_months=120)},
    "bulk_or_matching": {"bulk": lambda r: replace(r, bulk_or_matching=True)},
    "onward_recipient": {"onward": lambda r: replace(r, onward_recipient="bluewater")},
    "as_of": {"late": lambda r: replace(r, as_of=date(2027, 4, 30))},
}

breaker_sequences = st.lists(st.sampled_from(sorted(BREAKERS)), min_size=1, max_size=6, unique=True).flatmap(
    lambda fields: st.tuples(*(st.sampled_from(sorted(BREAKERS[f])).map(lambda name, f=f: (f, name))
                               for f in fields)))


@PROPERTY_SETTINGS
@given(breaker_sequences, st.one_of(st.none(), st.just(Emergency("risk_to_life", "Threat to life"))))
def test_breaking_one_more_rule_never_improves_the_outcome(
    sequence: tuple[tuple[str, str], ...], emergency: Emergency | None
) -> None:
    current = replace(ALLOWED, emergency=emergency)
    rank = decide(current, SHARED).outcome.rank
    for field, name in sequence:
        current = BREAKERS[field][name](current)
        new_rank = decide(current, SHARED).outcome.rank
        assert new_rank <= rank, (name, sequence)
        rank = new_rank


def test_each_breaker_breaks_something() -> None:
    allowed = decide(ALLOWED, SHARED)
    assert allowed.outcome is DecisionOutcome.ALLOW
    for breakers in BREAKERS.values():
        for name, breaker in breakers.items():
            assert decide(breaker(ALLOWED), SHARED).outcome.rank < allowed.outcome.rank, name


finding_outcomes = st.sampled_from(list(FindingOutcome))


@given(st.lists(finding_outcomes, max_size=25), finding_outcomes, st.booleans())
def test_adding_a_finding_never_improves_the_combined_outcome(
    outcomes: list[FindingOutcome], extra: FindingOutcome, emergency: bool
) -> None:
    before = combine_outcomes(outcomes, emergency)
    after = combine_outcomes(outcomes + [extra], emergency)
    assert after.rank <= before.rank
    if extra is FindingOutcome.DENY:
        assert after is DecisionOutcome.DENY


@given(st.lists(finding_outcomes, max_size=25), st.booleans())
def test_combined_outcome_ignores_order_and_passes(outcomes: list[FindingOutcome], emergency: bool) -> None:
    expected = combine_outcomes(outcomes, emergency)
    assert combine_outcomes(list(reversed(outcomes)), emergency) is expected
    assert combine_outcomes(outcomes + [FindingOutcome.PASS, FindingOutcome.NOT_APPLICABLE], emergency) is expected
    assert (expected is DecisionOutcome.ALLOW_EMERGENCY) == (
        emergency and not {FindingOutcome.DENY, FindingOutcome.REFER} & set(outcomes))


def test_memo_stays_bounded() -> None:
    from app.decisions import engine

    snapshot = fresh_snapshot()
    day = date(2021, 1, 1)
    for offset in range(200):
        decide(replace(ALLOWED, as_of=day + timedelta(days=offset)), snapshot)
    assert 0 < len(snapshot.memo) <= engine._MEMO_LIMIT
