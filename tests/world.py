"""A register with something of every kind, owned by one organisation or by others, for the tests
that try every route: the authorisation matrix and the CSRF check.

The actors are one user of each role at Kent County Council (``kent-cc``); what is "own" involves
Kent County Council, what is "other" involves neither it nor anyone the actors act for. Built
through the services, on top of the Dartford demo, so every row is one the app itself would write.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from app.audit.models import AuditEvent
from app.auth import service as auth_service
from app.auth import tokens
from app.auth.models import User
from app.clock import today, utcnow
from app.decisions import service as decisions
from app.registry import service as registry
from app.reminders import service as reminders
from app.reminders import bulk
from app.transfers import service as transfers
from app.transfers.keys import keyring_for

ROLES = ("admin", "coordinator", "dpo", "officer", "auditor")
HOME = "kent-cc"
PASSWORD = "matrix-password-not-secret"

ALLOWED = {  # approved safeguarding protocol; kent-police, dartford-bc and kent-cc are all parties
    "protocol": {"code": "vcs-safeguarding", "version": 2}, "purpose": "safeguarding_children",
    "data_categories": ["identity", "contact"], "subject_types": ["child"], "transfer_method": "accord_transfer",
    "lawful_basis": "e", "legal_gateway": "cda-1998-s115", "retention_months": 12,
}
ONE_OFF = {  # a public authority sharing one-off without a statutory gateway: referred to a DPO
    "purpose": "safeguarding_children", "data_categories": ["identity"], "subject_types": ["child"],
    "transfer_method": "accord_transfer", "lawful_basis": "e", "one_off": True, "retention_months": 6,
}
EMERGENCY = {
    "purpose": "crime_prevention", "data_categories": ["identity"], "subject_types": ["offender"],
    "transfer_method": "accord_transfer", "lawful_basis": "e", "one_off": True, "retention_months": 6,
    "emergency": {"category": "risk_to_life", "justification": "A man has threatened to kill a shop worker today"},
}


def actor_email(role: str) -> str:
    return f"{role}@{HOME}.example"


@dataclass
class World:
    #: Path parameter name -> {"own": value, "other": value}.
    params: dict[str, dict[str, object]] = field(default_factory=dict)
    #: Endpoint -> parameter name -> {"own": value, "other": value}, where one route needs a special instance.
    endpoint_params: dict[str, dict[str, dict[str, object]]] = field(default_factory=dict)
    #: Role -> the id of a spare API token of that actor (theirs to revoke).
    spare_tokens: dict[str, int] = field(default_factory=dict)
    #: Role -> the id of a reminder claim told to that actor alone (the notification routes take it).
    notifications: dict[str, int] = field(default_factory=dict)
    #: A sample transfer payload and the exchange ids it can be sent under.
    payload: bytes = b"name,date of birth\nA Person,2010-01-01\n"

    def value(self, endpoint: str, param: str, scope: str, role: str | None = None) -> object:
        if param == "token_id" and scope == "own" and role in self.spare_tokens:
            return self.spare_tokens[role]
        if param == "claim_id" and scope == "own" and role in self.notifications:
            return self.notifications[role]
        if param in self.endpoint_params.get(endpoint, {}):
            return self.endpoint_params[endpoint][param][scope]
        if param not in self.params:
            raise LookupError(f"no sample value for the path parameter {param!r} of {endpoint}: add one in tests/world.py")
        return self.params[param][scope]


def _user(session, email: str, role: str, organisation: str) -> User:
    return auth_service.create_user(session, "test", email=email, name=f"{role.capitalize()} of {organisation}",
                                    organisation_code=organisation, roles=[role], password=PASSWORD)


def _record(session, actor: User, body: dict, now) -> int:
    return decisions.record(session, actor, body, now=now).id


def _send(session, app, actor: User, exchange_id: int, payload: bytes, now) -> str:
    exchange = decisions.get_exchange(session, actor, exchange_id)
    transfer = transfers.send(session, actor, exchange, io.BytesIO(payload), filename="cases.csv",
                              media_type="text/csv", now=now, keyring=keyring_for(app.config),
                              max_bytes=app.config["MAX_PAYLOAD_BYTES"])
    return transfer.id


def build(app, session) -> World:
    """Everything the routes take an id of, once for Kent County Council and once for others."""
    now = utcnow()
    world = World()
    actors = {role: _user(session, actor_email(role), role, HOME) for role in ROLES}
    own_target = _user(session, "target@kent-cc.example", "officer", HOME)
    other_target = _user(session, "target@dartford.example", "officer", "dartford-bc")
    police = auth_service.find_user_by_email(session, "officer@kent-police.example")
    dartford_dpo = auth_service.find_user_by_email(session, "dpo@dartford.example")
    session.flush()

    own_allowed = _record(session, actors["officer"], {**ALLOWED, "from_org": HOME, "to_org": "kent-police"}, now)
    own_incoming = _record(session, police, {**ALLOWED, "from_org": "kent-police", "to_org": HOME}, now)
    own_referred = _record(session, police, {**ONE_OFF, "from_org": "kent-police", "to_org": HOME}, now)
    own_emergency = _record(session, actors["officer"], {**EMERGENCY, "from_org": HOME, "to_org": "bluewater"}, now)
    other_allowed = _record(session, police, {**ALLOWED, "from_org": "kent-police", "to_org": "dartford-bc"}, now)
    other_referred = _record(session, police, {**ONE_OFF, "from_org": "kent-police", "to_org": "dartford-bc"}, now)
    other_emergency = _record(session, police, {**EMERGENCY, "from_org": "kent-police", "to_org": "bluewater"}, now)
    own_transfer = _send(session, app, police, own_incoming, world.payload, now)
    other_transfer = _send(session, app, police, other_allowed, world.payload, now)

    for role, actor in actors.items():
        issued = tokens.create_token(session, "test", actor, name="spare", scopes=["read"], lifetime=timedelta(days=1),
                                     now=now, pepper=app.config["TOKEN_PEPPER"])
        world.spare_tokens[role] = issued.token.id
    other_token = tokens.create_token(session, "test", other_target, name="theirs", scopes=["read"],
                                      lifetime=timedelta(days=1), now=now, pepper=app.config["TOKEN_PEPPER"])

    # A reminder told to each actor alone, and one told to someone else: the notification routes
    # take the claim's id.
    told = {role: bulk.claim_and_fan_out(
        session, [bulk.PlannedClaim("signature_renewal", "organisation", f"{HOME}-{role}", today(), "before:0",
                                    "Kent County Council's K-MISA signature", False, 0)],
        [bulk.Audience((), (user.id,))], as_of=today(), now=now).first_claim_id
        for role, user in {**actors, "other": other_target}.items()}
    other_note = told.pop("other")
    # A live calendar secret of someone who is not an actor, so no actor's own revocation spoils it.
    feed_secret = reminders.create_feed_token(session, dartford_dpo, now=now, pepper=app.config["TOKEN_PEPPER"])
    session.flush()
    world.notifications = told

    def recorded_event(exchange_id: int) -> int:
        return session.scalar(select(AuditEvent.seq).where(AuditEvent.action == "exchange.recorded",
                                                           AuditEvent.subject_id == str(exchange_id)))

    own_org = registry.get_organisation(session, HOME)
    other_org = registry.get_organisation(session, "dartford-bc")
    world.params = {
        "code": {"own": HOME, "other": "dartford-bc"},
        "subgroup": {"own": "vcs-group", "other": "community-trigger"},
        "exchange_id": {"own": own_allowed, "other": other_allowed},
        "transfer_id": {"own": own_transfer, "other": other_transfer},
        "user_id": {"own": own_target.id, "other": other_target.id},
        "signature_id": {"own": own_org.signatures[0].id, "other": other_org.signatures[0].id},
        "token_id": {"own": None, "other": other_token.token.id},
        "claim_id": {"own": None, "other": other_note},
        "token": {"own": feed_secret, "other": feed_secret},
        "filename": {"own": "favicon.svg", "other": "favicon.svg"},
        "version": {"own": 2, "other": 1},
        # The audit workspace: an event about Kent County Council's exchange, and one about others'.
        "seq": {"own": recorded_event(own_allowed), "other": recorded_event(other_allowed)},
        "subject_type": {"own": "organisation", "other": "organisation"},
        "subject_id": {"own": HOME, "other": "dartford-bc"},
        "format": {"own": "csv", "other": "json"},
    }
    referred = {"exchange_id": {"own": own_referred, "other": other_referred}}
    emergency = {"exchange_id": {"own": own_emergency, "other": other_emergency}}
    world.endpoint_params = {
        "decisions.resolve": referred, "decisions_api.resolve_exchange": referred,
        "decisions.emergency_review": emergency, "decisions_api.review_emergency": emergency,
        # Kent County Council is a party to version 2 of the safeguarding protocol, not to the OCG one.
        "protocols.version": {"code": {"own": "vcs-safeguarding", "other": "ocg-disruption"}},
        "registry.subgroup": {"code": {"own": "vcs-group", "other": "community-trigger"}},
        "registry.subgroup_edit": {"code": {"own": "vcs-group", "other": "community-trigger"}},
        "swagger.static": {"filename": {"own": "css/swagger-ui.css", "other": "css/swagger-ui.css"}},
    }
    session.commit()
    return world
