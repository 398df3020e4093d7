"""How fast is ``decide`` and does it stay flat as the register grows?

The answer is given while an officer waits and impact replays run it over whole periods, so
the target is a median of at most 50 µs per decision at every register size, and the median
at 10,000 organisations at most 1.5 times the median at 10. Registers of 10, 100, 1,000 and
10,000 organisations are generated with proportionate protocols (one per ten organisations,
eight parties each) through the real loader and snapshot builder, and a fixed mix of requests
- allowed, in the grace period, broken in one way, one-off, emergency, depersonalised, unknown - is timed one
call at a time with ``time.perf_counter_ns``.

Rounds alternate between sizes so that drift in the machine's speed (other work, frequency
scaling) lands on every size alike rather than on whichever ran last. Every request is decided
once before timing (a snapshot serves many requests, and remembers the pass findings it has
made), then the snapshots are moved out of the garbage collector's view with ``gc.freeze()``,
as a long-running service would after loading them; collections during timing still happen.

Run: ``python -m benchmarks.bench_engine`` (prints JSON).
"""
from __future__ import annotations

import gc
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import yaml

from app.decisions.engine import (
    CriminalOffenceCondition,
    Emergency,
    ExchangeRequest,
    OrganisationFacts,
    ProtocolRef,
    Snapshot,
    SpecialCategoryCondition,
    decide,
)
from app.decisions.snapshot import build_snapshot
from app.policies.loader import KMISA_FILE, TAXONOMY_FILE, bundle_from_sources, collect_sources, repository_policies_root
from app.registry.status import SignatureFacts

SIZES = (10, 100, 1_000, 10_000)
TARGET_MEDIAN_US = 50.0
TARGET_RATIO = 1.5
AS_OF = date(2026, 11, 22)
REVIEW_ON = date(2027, 6, 30)

_KINDS: tuple[tuple[str, bool, bool], ...] = (
    # (kind, is_public_authority, is_competent_authority)
    ("police", True, True),
    ("district_council", True, False),
    ("county_council", True, False),
    ("nhs_body", True, False),
    ("probation", True, True),
    ("fire_and_rescue", True, False),
    ("voluntary", False, False),
    ("private", False, False),
)

_PURPOSES = ("safeguarding_children", "safeguarding_adults", "exploitation_disruption", "crime_prevention")
_PERSONAL = ("identity", "contact", "housing", "vulnerability", "health.mental_health", "criminal_offence")
_SUBJECTS = ("child", "vulnerable_adult", "victim", "suspect", "offender")


def synthetic_register(size: int) -> tuple[list[OrganisationFacts], list[SignatureFacts]]:
    """``size`` organisations of every kind in turn; every tenth has let its signature expire.

    The register's make-up is the same at every size (kinds in rotation, one in ten expired),
    so that the sizes differ only in how many organisations and protocols there are; the
    requests, not chance, decide which paths through the rules are timed.
    """
    organisations = []
    signatures = []
    for index in range(size):
        kind, public, competent = _KINDS[index % len(_KINDS)]
        code = f"org-{index:05d}"
        organisations.append(OrganisationFacts(
            code=code, name=f"Organisation {index:05d}", kind=kind, is_public_authority=public,
            is_competent_authority=competent, ico_registration_expires_on=date(2028, 3, 31),
            dpo_email=f"dpo@{code}.example", apd_paragraphs=frozenset({6, 10, 18}), apd_review_on=date(2028, 3, 31),
        ))
        expires_on = AS_OF - timedelta(days=10) if index % 10 == 9 else date(2028, 1, 1)
        signatures.append(SignatureFacts(code, "2024", date(2025, 1, 1), expires_on))
    return organisations, signatures


def synthetic_protocols(organisations: Sequence[OrganisationFacts], seed: int = 2026) -> dict[str, bytes]:
    """One protocol per ten organisations (at least two), eight parties each, as protocol files.

    The last party of each receives depersonalised data only, and every other protocol's DPIA
    covers bulk sharing.
    """
    rng = random.Random(seed)
    count = max(2, len(organisations) // 10)
    files = {}
    for index in range(count):
        parties = rng.sample(list(organisations), min(8, len(organisations)))
        code = f"fsp-{index:05d}"
        document = {
            "code": code,
            "title": f"Synthetic protocol {index}",
            "subgroup": f"group-{index % 20:02d}",
            "version": 1,
            "effective_from": date(2025, 1, 1),
            "review_on": REVIEW_ON,
            "purposes": list(_PURPOSES),
            "subject_types": list(_SUBJECTS),
            "data_categories": {"personal": list(_PERSONAL), "depersonalised": ["statistics"]},
            "statutory_gateways": ["cda-1998-s115", "ca-2004-s11"],
            "transfer_methods": ["accord_transfer", "egress_secure_email"],
            "parties": [_party(o, last=o is parties[-1]) for o in parties],
            "dpia": {"reference": f"DPIA-{index}", "completed_on": date(2024, 12, 1), "review_on": date(2027, 12, 1),
                     "covers_bulk": index % 2 == 0, "scope_purposes": list(_PURPOSES)},
            "caldicott": {"approved": True, "approved_by": "Caldicott Guardian", "approved_on": date(2024, 12, 1),
                          "confidentiality_basis_required": True},
            "onward_sharing": {"allowed_recipients": [parties[0].code]},
        }
        files[f"protocols/{document['subgroup']}/{code}-v1.yaml"] = yaml.safe_dump(document, sort_keys=False).encode()
    return files


def _party(organisation: OrganisationFacts, *, last: bool) -> dict[str, Any]:
    public = organisation.is_public_authority
    return {
        "organisation": organisation.code,
        "roles": ["provider", "recipient"],
        "tier": "depersonalised" if last else "personal",
        "lawful_bases": ["e"] if public else ["a", "f"],
        "special_category_conditions": [{"article9": "g", "schedule1_paragraph": 18}],
        "criminal_offence": {"official_authority": True} if public else {"schedule1_paragraphs": [10]},
        "max_retention_months": 24,
    }


def synthetic_snapshot(size: int) -> tuple[Snapshot, list[ExchangeRequest]]:
    organisations, signatures = synthetic_register(size)
    sources = {k: v for k, v in collect_sources(repository_policies_root()).items() if k in (TAXONOMY_FILE, KMISA_FILE)}
    sources.update(synthetic_protocols(organisations))
    bundle = bundle_from_sources(sources)
    signoffs = {loaded.key: {p.organisation for p in loaded.protocol.parties} for loaded in bundle.protocols}
    ad_hoc = {(o.code, organisations[(i + 1) % size].code, "crime_prevention"): i % 4
              for i, o in enumerate(organisations[: size // 2])}
    snapshot = build_snapshot(bundle, organisations, signatures, signoffs, ad_hoc_counts=ad_hoc)
    return snapshot, request_mix(snapshot, bundle.protocols, organisations, random.Random(size))


def request_mix(snapshot: Snapshot, protocols: Sequence[Any], organisations: Sequence[OrganisationFacts],
                rng: random.Random, count: int = 1000) -> list[ExchangeRequest]:
    """A fixed mix: allowed, one thing wrong, one-off, emergency, depersonalised and unknown requests."""
    requests = []
    for index in range(count):
        loaded = rng.choice(protocols)
        sender, recipient = rng.sample([p.organisation for p in loaded.protocol.parties], 2)
        sender_public = snapshot.organisations[sender].is_public_authority
        base = ExchangeRequest(
            from_org=sender, to_org=recipient, purpose=rng.choice(_PURPOSES),
            data_categories=("identity.basic", "health.mental_health", "criminal_offence.allegations"),
            subject_types=("vulnerable_adult", "suspect"), transfer_method="accord_transfer",
            as_of=AS_OF, protocol=ProtocolRef(loaded.protocol.code, 1), subject_count=rng.randint(1, 80),
            lawful_basis="e" if sender_public else "f",
            special_category_condition=SpecialCategoryCondition("g", 18),
            criminal_offence_condition=CriminalOffenceCondition("official_authority") if sender_public
            else CriminalOffenceCondition("schedule1", 10),
            legal_gateway="cda-1998-s115" if sender_public else None, retention_months=12,
            confidentiality_basis="overriding_public_interest",
        )
        kind = index % 20
        if kind < 7:
            requests.append(base)
        elif kind == 7:  # a dry run after the review date, inside the grace period
            requests.append(_replace(base, as_of=REVIEW_ON + timedelta(days=20)))
        elif kind < 12:
            broken = (
                {"purpose": "asb_case_review"}, {"transfer_method": "unencrypted_email"}, {"retention_months": 60},
                {"data_categories": ("identity.basic", "education")},
            )[kind - 8]
            requests.append(_replace(base, **broken))
        elif kind < 15:
            requests.append(_replace(base, protocol=None, one_off=True, purpose="crime_prevention",
                                     to_org=rng.choice(organisations).code))
        elif kind < 17:
            requests.append(_replace(base, emergency=Emergency("risk_to_life", "Missing person, high risk")))
        elif kind < 19:
            requests.append(_replace(base, data_categories=("statistics.crime",), special_category_condition=None,
                                     criminal_offence_condition=None, lawful_basis=None))
        else:
            requests.append(_replace(base, to_org="no-such-org", protocol=ProtocolRef("no-such-protocol", 1)))
    return requests


def _replace(request: ExchangeRequest, **changes: Any) -> ExchangeRequest:
    return replace(request, **changes)


def run(rounds: int = 40, sizes: Sequence[int] = SIZES) -> dict[str, Any]:
    """Time ``decide`` at every size and report median and p99 (µs) and the size ratio."""
    built = {size: synthetic_snapshot(size) for size in sizes}
    for size in sizes:  # warm up every path once, as a service has by its second request
        snapshot, requests = built[size]
        for request in requests:
            decide(request, snapshot)
    gc.collect()
    gc.freeze()
    try:
        samples: dict[int, list[int]] = {size: [] for size in sizes}
        clock = time.perf_counter_ns
        for _ in range(rounds):
            for size in sizes:
                snapshot, requests = built[size]
                record = samples[size].append
                for request in requests:
                    start = clock()
                    decide(request, snapshot)
                    record(clock() - start)
    finally:
        gc.unfreeze()

    # Keyed by size (not a list) so that `python -m benchmarks` can flatten it into its summary.
    results: dict[str, dict[str, Any]] = {}
    for size in sizes:
        ordered = sorted(samples[size])
        results[str(size)] = {
            "organisations": size,
            "protocols": len(built[size][0].protocols),
            "decisions_timed": len(ordered),
            "median_us": round(statistics.median(ordered) / 1000, 2),
            "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] / 1000, 2),
        }
    ratio = results[str(sizes[-1])]["median_us"] / results[str(sizes[0])]["median_us"]
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "sizes": results,
        "ratio_largest_to_smallest_median": round(ratio, 3),
        "targets": {"median_us_at_most": TARGET_MEDIAN_US, "ratio_at_most": TARGET_RATIO},
        "met": all(r["median_us"] <= TARGET_MEDIAN_US for r in results.values()) and ratio <= TARGET_RATIO,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
