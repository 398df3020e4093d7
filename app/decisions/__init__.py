"""Exchange decisions: the pure engine (``engine``) and the snapshot it reads (``snapshot``)."""
from app.decisions.engine import (
    RULE_CODES,
    Decision,
    DecisionOutcome,
    ExchangeRequest,
    ExchangeRequestIn,
    Finding,
    FindingOutcome,
    OrganisationFacts,
    Snapshot,
    combine_outcomes,
    decide,
)
from app.decisions.snapshot import InvalidRequest, build_snapshot, demo_register_facts, request_from_dict

__all__ = [
    "RULE_CODES",
    "Decision",
    "DecisionOutcome",
    "ExchangeRequest",
    "ExchangeRequestIn",
    "Finding",
    "FindingOutcome",
    "InvalidRequest",
    "OrganisationFacts",
    "Snapshot",
    "build_snapshot",
    "combine_outcomes",
    "decide",
    "demo_register_facts",
    "request_from_dict",
]
