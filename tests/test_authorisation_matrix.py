"""Every UI route and API operation, as every role and as nobody, on their own organisation's
things and on another's: nothing succeeds that the rules do not allow (DESIGN §8).

The routes come from ``app.url_map`` when the test runs. Who may use each one is said once, in
``RULES`` below, from the rules in DESIGN §8 and the services that enforce them; a route missing
from the table fails the test, so a new route has to be classified before it ships.

"Own" means a thing of Kent County Council, where every actor works (see ``tests/world.py``);
"other" means one of organisations the actor does not act for. A request is a success when it
answers 2xx or redirects anywhere but the sign-in page. A refused request must also leave the
audit trail as it was: every change the app makes is audited in the same transaction.
"""
from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from datetime import date, timedelta

from sqlalchemy import func, select

from app.audit.models import AuditEvent
from tests import world as world_module
from tests.clients import isolated_client
from tests.routes import all_routes
from tests.summary import report

ANONYMOUS = "anonymous"
ACTORS = (*world_module.ROLES, ANONYMOUS)

OVERSEERS = {"admin", "coordinator", "auditor"}  # see every exchange (decisions.service.OVERSEERS)
KEEPERS = {"admin", "coordinator"}  # change the register (auth.permissions.REGISTER_KEEPERS)
REQUESTERS = {"officer", "dpo", "coordinator", "admin"}  # ask to share (decisions.service.REQUESTERS)
HANDLERS = {"officer", "dpo"}  # send and download payloads (transfers.service.HANDLERS)
DUE_READERS = {"admin", "coordinator", "dpo"}  # what is due and its calendar (reminders.service)
OUTBOX_READERS = {"admin", "coordinator"}
AUDIT_READERS = {"dpo", "auditor", "coordinator", "admin"}  # the audit workspace (audit.workspace)

Allowed = Callable[[str, str], bool]  # (role, scope) -> may it succeed?


def anyone(role: str, scope: str) -> bool:
    return True


def nobody(role: str, scope: str) -> bool:
    return False


def signed_in(role: str, scope: str) -> bool:
    return role != ANONYMOUS


def roles(group: set[str]) -> Allowed:
    return lambda role, scope: role in group


def own(rule: Allowed) -> Allowed:
    """Only on the actor's own organisation's things; another's are not found."""
    return lambda role, scope: scope == "own" and rule(role, scope)


def own_or(group: set[str]) -> Allowed:
    """Anyone signed in on their own organisation's things; ``group`` on anyone's."""
    return lambda role, scope: role != ANONYMOUS and (scope == "own" or role in group)


def own_or_overseen_by(readers: set[str]) -> Allowed:
    """``readers`` on their own organisation's things; those of them who oversee, on anyone's."""
    return lambda role, scope: role in readers and (scope == "own" or role in OVERSEERS)


ADMIN = roles({"admin"})

#: Who may use each endpoint: a rule for all its methods, or one per method.
RULES: dict[str, Allowed | dict[str, Allowed]] = {
    # Public: the start page redirects, the health check, assets, the API document and explorer.
    "web.index": anyone,
    "web.healthz": anyone,
    "web.livez": anyone,
    "web.readyz": anyone,
    "static": anyone,
    "openapi.doc_url": anyone,
    "swagger.swagger": anyone,
    "swagger.static": anyone,
    # flask-openapi3's own pages under /api/v1 are not public paths, so they want a token;
    # its static route points at a folder it does not ship, so nothing is ever served there.
    "openapi.openapi": signed_in,
    "swagger.oauth2-redirect": signed_in,
    "openapi.static": nobody,
    "auth.sign_in": anyone,
    # The calendar feed is read by calendar programs with the secret in its address.
    "reminders.calendar_feed": anyone,

    # Every signed-in user, for themselves.
    "web.home": signed_in,
    "auth.sign_out": signed_in,
    "auth.change_password": signed_in,
    "auth.tokens_page": signed_in,
    "auth.token_new": signed_in,
    "auth.token_revoke": own_or({"admin"}),
    "reminders.notifications": signed_in,
    "reminders.acknowledge": own(signed_in),
    "reminders.snooze": own(signed_in),
    "reminders.calendar_revoke": signed_in,
    "reminders.calendar_page": roles(DUE_READERS),
    "reminders.calendar_create": roles(DUE_READERS),
    "reminders.due": roles(DUE_READERS),
    "reminders.outbox": roles(OUTBOX_READERS),
    "reminders.outbox_retry": roles(OUTBOX_READERS),

    # Users: administrators only, of any organisation.
    "auth.users": ADMIN,
    "auth.user_new": ADMIN,
    "auth.user": ADMIN,
    "auth.user_unlock": ADMIN,
    "auth.users_tokens": ADMIN,
    "auth_api.me": signed_in,
    "auth_api.list_users": ADMIN,
    "auth_api.create_user": ADMIN,
    "auth_api.get_user": ADMIN,
    "auth_api.set_roles": ADMIN,

    # The register: everyone reads, coordinators and administrators change (the CSP's, not one partner's).
    "registry.organisations": signed_in,
    "registry.organisation": signed_in,
    "registry.subgroups": signed_in,
    "registry.subgroup": signed_in,
    "registry.organisation_new": roles(KEEPERS),
    "registry.organisation_edit": roles(KEEPERS),
    "registry.signature_new": roles(KEEPERS),
    "registry.signature_withdraw": roles(KEEPERS),
    "registry.subgroup_new": roles(KEEPERS),
    "registry.subgroup_edit": roles(KEEPERS),
    "registry_api.list_organisations": signed_in,
    "registry_api.get_organisation": signed_in,
    "registry_api.list_subgroups": signed_in,
    "registry_api.get_subgroup": signed_in,
    "registry_api.create_organisation": roles(KEEPERS),
    "registry_api.update_organisation": roles(KEEPERS),
    "registry_api.record_signature": roles(KEEPERS),
    "registry_api.withdraw_signature": roles(KEEPERS),
    "registry_api.create_subgroup": roles(KEEPERS),
    "registry_api.update_subgroup": roles(KEEPERS),

    # Protocols: everyone reads; a DPO of a party signs off; the impact replay is for those who decide.
    "protocols.index": signed_in,
    "protocols.version": {"GET": signed_in, "POST": own(roles({"dpo"}))},
    "protocols.impact": roles({"dpo", "coordinator", "admin"}),

    # Exchanges: requesters ask for their own organisation (administrators for any); parties see
    # their own, overseers everyone's; a DPO of a party decides referrals and reviews emergencies.
    "decisions.exchanges": signed_in,
    "decisions.exchange": own_or(OVERSEERS),
    "decisions.exchange_new": roles(REQUESTERS),
    "decisions.resolve": own(roles({"dpo"})),
    "decisions.emergency_review": own(roles({"dpo"})),
    "decisions.referrals": roles({"dpo"}),
    "decisions.patterns": roles({"coordinator", "dpo", "auditor", "admin"}),
    "decisions_api.check_exchange": roles(REQUESTERS),
    "decisions_api.record_exchange": lambda role, scope: role in REQUESTERS and (scope == "own" or role == "admin"),
    "decisions_api.list_exchanges": signed_in,
    "decisions_api.get_exchange": own_or(OVERSEERS),
    "decisions_api.resolve_exchange": own(roles({"dpo"})),
    "decisions_api.review_emergency": own(roles({"dpo"})),

    # Transfers: only the two organisations see one, whatever the role; officers and DPOs of the
    # sender send, of the recipient download and confirm destruction.
    "transfers.index": signed_in,
    "transfers.transfer": own(signed_in),
    "transfers.download": own(roles(HANDLERS)),
    "transfers.confirm_destruction": own(roles(HANDLERS)),
    "transfers.upload": own(roles(HANDLERS)),
    "transfers_api.list_transfers": signed_in,
    "transfers_api.get_transfer": own(signed_in),
    "transfers_api.download_payload": own(roles(HANDLERS)),
    "transfers_api.confirm_destruction": own(roles(HANDLERS)),
    "transfers_api.send_transfer": own(roles(HANDLERS)),

    # The audit workspace: DPOs, auditors, coordinators and administrators; a DPO sees what
    # concerns their own organisation, the others everything. The public key is public. Through
    # the API, auditors and DPOs only. (A DPO asking for another organisation's timeline by
    # subject gets an empty one, which is still a page.)
    "audit.public_key": anyone,
    "audit.events": roles(AUDIT_READERS),
    "audit.event": own_or_overseen_by(AUDIT_READERS),
    "audit.exchange": own_or_overseen_by(AUDIT_READERS),
    "audit.transfer": own_or_overseen_by(AUDIT_READERS),
    "audit.subject": roles(AUDIT_READERS),
    "audit.verification": roles(AUDIT_READERS),
    "audit.run_verification": roles(AUDIT_READERS),
    "audit.checkpoint": roles(AUDIT_READERS),
    "audit.export_events": roles(AUDIT_READERS),
    "audit.processing_register": roles(AUDIT_READERS),
    "audit.processing_csv": roles(AUDIT_READERS),
    "audit.dashboard_page": roles(AUDIT_READERS),
    "audit_api.list_events": roles({"auditor", "dpo"}),
    "audit_api.verify": roles({"auditor", "dpo"}),
    "audit_api.latest_checkpoint": roles({"auditor", "dpo"}),
}

#: Endpoints without path parameters whose request body names an organisation: tried for both.
BODY_SCOPED = {"decisions_api.check_exchange", "decisions_api.record_exchange", "auth_api.create_user"}

_serial = itertools.count(1)


def _date_parts(value: date) -> list[str]:
    return [str(value.day), str(value.month), str(value.year)]


def _exchange_body(scope: str) -> dict:
    pair = {"from_org": "kent-cc", "to_org": "kent-police"} if scope == "own" else \
        {"from_org": "kent-police", "to_org": "dartford-bc"}
    return {**world_module.ALLOWED, **pair}


#: Valid JSON bodies, so that what stops a request is the permission, not the shape of its body.
API_BODIES: dict[str, Callable[[str], dict]] = {
    "auth_api.create_user": lambda scope: {"json": {
        "email": f"new{next(_serial)}@example.org", "name": "New Person",
        "organisation": "kent-cc" if scope == "own" else "dartford-bc", "roles": ["officer"],
        "password": "a-long-enough-password"}},
    "auth_api.set_roles": lambda scope: {"json": {"roles": ["officer"]}},
    "registry_api.create_organisation": lambda scope: {"json": {
        "code": f"new-body-{next(_serial)}", "name": "A New Body", "kind": "voluntary", "is_public_authority": False}},
    "registry_api.update_organisation": lambda scope: {"json": {"dpo_name": "Data Protection Officer"}},
    "registry_api.record_signature": lambda scope: {"json": {
        "kmisa_version": "2024", "signed_on": date.today().isoformat(), "signed_by_name": "Chief Executive",
        "signed_by_role": "chief_officer"}},
    "registry_api.withdraw_signature": lambda scope: {"json": {
        "withdrawn_on": date.today().isoformat(), "reason": "Left the partnership"}},
    "registry_api.create_subgroup": lambda scope: {"json": {
        "code": f"new-group-{next(_serial)}", "name": "A New Group", "lead_organisation": "kent-cc"}},
    "registry_api.update_subgroup": lambda scope: {"json": {
        "name": "Renamed group", "lead_organisation": "dartford-bc", "parent": "csp-board"}},
    "decisions_api.check_exchange": lambda scope: {"json": _exchange_body(scope)},
    "decisions_api.record_exchange": lambda scope: {"json": _exchange_body(scope)},
    "decisions_api.resolve_exchange": lambda scope: {"json": {"decision": "refused", "reasons": "Not necessary."}},
    "decisions_api.review_emergency": lambda scope: {"json": {"conclusion": "justified", "notes": "It was."}},
    "transfers_api.send_transfer": lambda scope: {"data": b"a,b\n1,2\n", "headers": {
        "Content-Type": "text/csv", "X-Accord-Filename": "cases.csv"}},
}

#: Valid form posts for the pages whose permission is checked with the form's data.
UI_FORMS: dict[str, Callable[[str], dict]] = {
    "auth.user": lambda scope: {"roles": "officer"},
    "auth.user_new": lambda scope: {"email": f"new{next(_serial)}@example.org", "name": "New Person",
                                    "organisation": "kent-cc", "roles": "officer",
                                    "password": "a-long-enough-password"},
    "auth.token_new": lambda scope: {"name": "Case system", "scopes": "read", "expires_in_days": "30"},
    # A wrong current password: allowed to try, and nothing changes for the rest of the matrix.
    "auth.change_password": lambda scope: {"current_password": "not-the-password",
                                           "new_password": "another-long-password"},
    "decisions.resolve": lambda scope: {"decision": "refused", "reasons": "Not necessary."},
    "decisions.emergency_review": lambda scope: {"conclusion": "justified", "notes": "It was."},
    "protocols.version": lambda scope: {"confirm": "y"},
    "reminders.snooze": lambda scope: {"until": _date_parts(date.today() + timedelta(days=7))},
    "registry.signature_withdraw": lambda scope: {"withdrawn_on": _date_parts(date.today()),
                                                  "reason": "Left the partnership"},
    "registry.subgroup_new": lambda scope: {"code": f"new-group-{next(_serial)}", "name": "A New Group",
                                            "lead_organisation": "kent-cc"},
    "transfers.upload": lambda scope: {"payload": (io.BytesIO(b"a,b\n1,2\n"), "cases.csv")},
}

#: Sign-out ends the session, so each actor's requests to it come last.
LAST = {"auth.sign_out"}


def sent_to_sign_in(response) -> bool:
    """Flask-Login's answer to a signed-out request for a page that needs a user."""
    return 300 <= response.status_code < 400 and "/sign-in?next=" in response.headers.get("Location", "")


def is_success(response) -> bool:
    return 200 <= response.status_code < 300 or (300 <= response.status_code < 400 and not sent_to_sign_in(response))


def audit_length(session) -> int:
    session.rollback()  # a fresh snapshot: the requests commit on their own sessions
    length = session.scalar(select(func.count()).select_from(AuditEvent))
    session.rollback()  # and hold no lock (outside a request, SQLite transactions begin IMMEDIATE)
    return length


def rule_for(endpoint: str, method: str) -> Allowed:
    rule = RULES[endpoint]
    return rule[method] if isinstance(rule, dict) else rule


def test_every_route_is_classified(app):
    missing = sorted({r.endpoint for r in all_routes(app)} - set(RULES))
    assert not missing, f"classify these endpoints in RULES (tests/test_authorisation_matrix.py): {missing}"
    stale = sorted(set(RULES) - {r.endpoint for r in all_routes(app)})
    assert not stale, f"RULES names endpoints that no longer exist: {stale}"


def _sign_in(app, role: str):
    client = isolated_client(app)  # each request in its own app context: nothing carries over
    if role != ANONYMOUS:
        response = client.post("/sign-in", data={"email": world_module.actor_email(role),
                                                 "password": world_module.PASSWORD})
        assert response.status_code == 302, f"{role} could not sign in"
    return client


def _api_headers(app, session, role: str) -> dict[str, str]:
    if role == ANONYMOUS:
        return {}
    from app.auth import service, tokens
    from app.clock import utcnow

    user = service.find_user_by_email(session, world_module.actor_email(role))
    issued = tokens.create_token(session, "test", user, name="matrix", scopes=list(tokens.SCOPES),
                                 lifetime=timedelta(days=1), now=utcnow(), pepper=app.config["TOKEN_PEPPER"])
    session.commit()
    return {"Authorization": f"Bearer {issued.plaintext}"}


def test_nothing_succeeds_that_the_rules_do_not_allow(app, session, demo, request):
    app.config["API_RATE_LIMIT"] = None
    from app.api import ratelimit

    ratelimit.init_app(app)  # the matrix sends hundreds of requests a minute with each token
    world = world_module.build(app, session)
    routes = [r for r in all_routes(app) if r.endpoint in RULES]
    routes.sort(key=lambda r: r.endpoint in LAST)
    tried, failures = 0, []

    for role in ACTORS:
        client = _sign_in(app, role)
        headers = _api_headers(app, session, role)
        for route in routes:
            scoped = route.params or route.endpoint in BODY_SCOPED
            for method, scope in itertools.product(route.methods, ("own", "other") if scoped else ("own",)):
                values = {p: world.value(route.endpoint, p, scope, role) for p in route.params}
                url = route.url(values)
                allowed = rule_for(route.endpoint, method)(role, scope)
                before = audit_length(session)
                if route.is_api:
                    extra = API_BODIES.get(route.endpoint, lambda s: {})(scope) if method != "GET" else {}
                    response = client.open(url, method=method, headers={**headers, **extra.pop("headers", {})},
                                           **extra)
                else:
                    data = UI_FORMS.get(route.endpoint, lambda s: {})(scope) if method != "GET" else None
                    response = client.open(url, method=method, data=data)
                tried += 1
                where = f"{method} {url} ({route.endpoint}) as {role}, {scope}: {response.status_code}"
                if allowed:
                    if response.status_code in (401, 403, 404) or sent_to_sign_in(response):
                        failures.append(f"refused but allowed: {where}")
                else:
                    if is_success(response):
                        failures.append(f"SUCCEEDED but not allowed: {where}")
                    elif route.endpoint != "auth.sign_in" and audit_length(session) != before:
                        failures.append(f"refused yet audited a change: {where}")
                    if route.is_api and not response.is_json:
                        failures.append(f"API refusal not in the JSON envelope: {where}")
                response.close()

    message = f"authorisation matrix: {tried} requests"
    print(message)
    report(request.config, f"{message} ({request.node.callspec.params.get('backend', '')})")
    assert not failures, "\n".join(failures)
    assert tried >= len(routes) * len(ACTORS)
