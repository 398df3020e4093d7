"""The Dartford CSP demo register, as plain data relative to the day it is loaded.

Dates are offsets from ``today`` so that the mix of signature states (current, due for
renewal, expired, pre-2018 only, never signed, withdrawn, a dissolved body with its
successor) holds whenever the demo is loaded. The seed command turns this into rows; tests
use the same data so that what they prove is what a coordinator sees.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta


@dataclass(frozen=True)
class DemoOrganisation:
    code: str
    name: str
    kind: str
    is_public_authority: bool
    is_competent_authority: bool
    dpo_name: str | None
    dpo_email: str | None
    ico_registration_number: str | None
    ico_registration_expires_on: date | None
    apd_paragraphs: tuple[int, ...] = ()
    apd_review_on: date | None = None
    dissolved_on: date | None = None
    successor: str | None = None


@dataclass(frozen=True)
class DemoSignature:
    organisation: str
    kmisa_version: str
    signed_on: date
    signed_by_name: str
    signed_by_role: str
    expires_on: date | None
    withdrawn_on: date | None = None


@dataclass(frozen=True)
class DemoSubgroup:
    code: str
    name: str
    lead_organisation: str
    description: str
    parent: str | None = None


@dataclass(frozen=True)
class DemoUser:
    email: str
    name: str
    organisation: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class DemoRegister:
    organisations: tuple[DemoOrganisation, ...]
    signatures: tuple[DemoSignature, ...]
    subgroups: tuple[DemoSubgroup, ...]
    users: tuple[DemoUser, ...] = field(default=())


#: Printed by ``make run``; demo accounts only ever exist in a database seeded with ``seed demo``.
DEMO_PASSWORD = "accord-demo-2026"

# Schedule 1 paragraphs a police force's or council's APD typically covers: 6 statutory and
# government purposes, 10 preventing or detecting unlawful acts, 18 safeguarding children and
# individuals at risk, plus 36 for the extension of conditions to criminal offence data.
_PUBLIC_BODY_APD = (6, 10, 18)


def demo_register(today: date) -> DemoRegister:
    """The Dartford register as it should look on ``today``."""

    def days(n: int) -> date:
        return today + timedelta(days=n)

    organisations = (
        DemoOrganisation("kent-police", "Kent Police", "police", True, True,
                         "Data Protection Officer, Kent Police", "dpo@kent-police.example",
                         "Z4881512", days(240), _PUBLIC_BODY_APD + (7,), days(300)),
        DemoOrganisation("dartford-bc", "Dartford Borough Council", "district_council", True, False,
                         "Information Governance Manager", "dpo@dartford.example",
                         "Z5603317", days(25), _PUBLIC_BODY_APD, days(120)),
        DemoOrganisation("kent-cc", "Kent County Council", "county_council", True, False,
                         "Data Protection Officer, KCC", "dpo@kent-cc.example",
                         "Z4830813", days(180), _PUBLIC_BODY_APD, days(-10)),
        DemoOrganisation("nhs-kent-medway", "NHS Kent and Medway", "nhs_body", True, False,
                         "Data Protection Officer, NHS Kent and Medway", "dpo@nhs-kent-medway.example",
                         "ZB350617", days(300), (6, 18), days(200)),
        DemoOrganisation("dgs-ccg", "NHS Dartford, Gravesham and Swanley CCG", "nhs_body", True, False,
                         None, None, "Z2769013", days(-1300), (6,), None,
                         dissolved_on=date(2022, 7, 1), successor="nhs-kent-medway"),
        DemoOrganisation("probation-kss", "The Probation Service (Kent, Surrey and Sussex)", "probation",
                         True, True, "Data Protection Officer, HMPPS", "dpo@probation.example",
                         "Z5679019", days(150), _PUBLIC_BODY_APD, days(250)),
        DemoOrganisation("kent-fire-rescue", "Kent Fire and Rescue Service", "fire_and_rescue", True, False,
                         "Information Governance Lead, KFRS", "dpo@kent-fire-rescue.example",
                         "Z6153024", days(90), (6,), days(100)),
        DemoOrganisation("victim-support", "Victim Support", "voluntary", False, False,
                         "Data Protection Officer, Victim Support", "dpo@victim-support.example",
                         "Z5729853", days(60), (18,), days(160)),
        DemoOrganisation("dartford-nhw", "Dartford Neighbourhood Watch", "voluntary", False, False,
                         None, "secretary@dartford-nhw.example", None, None),
        DemoOrganisation("bluewater", "Bluewater Shopping Centre", "private", False, False,
                         "Data Protection Officer, Bluewater", "privacy@bluewater.example",
                         "Z8811274", days(200), (10,), days(200)),
        DemoOrganisation("ebbsfleet-intl", "Ebbsfleet International Station", "private", False, False,
                         "Privacy Office", "privacy@ebbsfleet-intl.example", "Z9013356", days(120)),
        DemoOrganisation("landsec", "Land Securities", "private", False, False,
                         "Group Data Protection Officer", "dpo@landsec.example",
                         "Z6820211", days(270), (10,), days(220)),
    )

    signatures = (
        # Current signatures to the 2024 version.
        DemoSignature("kent-police", "2024", days(-400), "Chief Constable", "chief_officer", days(695)),
        DemoSignature("kent-cc", "2024", days(-300), "Senior Information Risk Owner", "siro", days(795)),
        DemoSignature("nhs-kent-medway", "2024", days(-200), "Caldicott Guardian", "caldicott_guardian", days(895)),
        DemoSignature("probation-kss", "2024", days(-250), "Head of Public Protection", "chief_officer", days(845)),
        DemoSignature("victim-support", "2024", days(-150), "Chief Executive", "chief_officer", days(945)),
        DemoSignature("landsec", "2024", days(-120), "Group Data Protection Officer", "siro", days(975)),
        # Signed the 2018 version, now due for renewal within 90 days.
        DemoSignature("dartford-bc", "2018", days(-1050), "Chief Executive", "chief_officer", days(45)),
        # Expired three weeks ago.
        DemoSignature("kent-fire-rescue", "2018", days(-1115), "Chief Fire Officer", "chief_officer", days(-20)),
        # Only ever signed the pre-2018 version, which is no longer valid.
        DemoSignature("dartford-nhw", "2013", date(2016, 3, 14), "Chairman", "chief_officer", None),
        # Signed, then withdrew.
        DemoSignature("ebbsfleet-intl", "2024", days(-220), "Station Manager", "chief_officer", days(875),
                      withdrawn_on=days(-30)),
        # The dissolved CCG's signature lapsed with it; its successor signed in its own right.
        DemoSignature("dgs-ccg", "2018", date(2019, 2, 1), "Accountable Officer", "chief_officer",
                      date(2022, 6, 30)),
        # Bluewater has never signed.
    )

    subgroups = (
        DemoSubgroup("csp-board", "Dartford Community Safety Partnership Board", "dartford-bc",
                     "The statutory partnership under the Crime and Disorder Act 1998 s5."),
        DemoSubgroup("vcs-group", "Dartford Vulnerability and Contextual Safeguarding Group", "kent-police",
                     "Case management of vulnerable people and places at risk of exploitation.",
                     parent="csp-board"),
        DemoSubgroup("ocg-group", "Organised Criminal Gangs Group", "kent-police",
                     "Disruption of organised crime groups and county lines in Dartford.",
                     parent="csp-board"),
        DemoSubgroup("community-trigger", "Community Trigger / ASB Case Review Panel", "dartford-bc",
                     "Anti-social Behaviour, Crime and Policing Act 2014 s104 case reviews.",
                     parent="csp-board"),
        DemoSubgroup("dhr-2025-01", "Domestic Homicide Review panel DHR 2025/01", "dartford-bc",
                     "Domestic Violence, Crime and Victims Act 2004 s9 review panel.",
                     parent="csp-board"),
    )

    users = (
        DemoUser("admin@dartford.example", "Alex Admin", "dartford-bc", ("admin",)),
        DemoUser("coordinator@dartford.example", "Chris Coordinator", "dartford-bc", ("coordinator",)),
        DemoUser("dpo@kent-police.example", "Dana DPO", "kent-police", ("dpo",)),
        DemoUser("dpo@dartford.example", "Devi DPO", "dartford-bc", ("dpo",)),
        DemoUser("officer@kent-police.example", "Owen Officer", "kent-police", ("officer",)),
        DemoUser("officer@dartford.example", "Olu Officer", "dartford-bc", ("officer",)),
        DemoUser("auditor@dartford.example", "Ari Auditor", "dartford-bc", ("auditor",)),
    )
    return DemoRegister(organisations, signatures, subgroups, users)


def demo_pending_signoffs() -> dict[tuple[str, int], tuple[str, ...]]:
    """(protocol code, version) to the parties that have not yet signed that version off.

    The seed signs off every other party of every shipped protocol version, so only these stay
    drafts: version 3 of the safeguarding protocol, which adds Kent Fire and Rescue Service, is
    still with the county council, the NHS and the fire service.
    """
    return {("vcs-safeguarding", 3): ("kent-cc", "kent-fire-rescue", "nhs-kent-medway")}
