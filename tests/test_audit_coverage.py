"""Every kind of change the DPO must be able to account for leaves an event in the audit trail.

The issue names them: each decision, resolution, sign-off, register change, transfer, download,
destruction, sign-in (failed ones too) and role change. Each is made here the way people make
it (the forms, the API, the scheduled purge), and the test then finds its event: the action,
who acted and what it concerns. The chain still verifies at the end.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.auth import service as auth_service
from app.clock import as_utc, today
from app.transfers import service as transfers
from app.transfers.models import Transfer
from tests.transfers_support import ALLOWED_REQUEST

OFFICER = "officer@kent-police.example"
POLICE_DPO = "dpo@kent-police.example"
COUNCIL_OFFICER = "officer@dartford.example"
COORDINATOR = "coordinator@dartford.example"
ADMIN = "admin@dartford.example"
COUNTY_DPO = "dpo@kent-cc.example"

#: What the issue asks to be recorded, and the actions that record it.
KINDS = {
    "decision": {"exchange.recorded"},
    "resolution": {"exchange.referral_approved", "exchange.referral_refused", "exchange.emergency_reviewed"},
    "sign-off": {"protocol.signed_off"},
    "register change": {"organisation.created", "organisation.updated", "signature.recorded",
                        "signature.withdrawn", "subgroup.created", "subgroup.updated"},
    "transfer": {"transfer.sent"},
    "download": {"transfer.downloaded"},
    "destruction": {"transfer.destroyed"},
    "sign-in": {"auth.signed_in"},
    "failed sign-in": {"auth.sign_in_failed"},
    "role change": {"user.roles_changed"},
}

ALLOWED = {**ALLOWED_REQUEST, "from_org": "kent-police", "to_org": "dartford-bc"}
#: One-off sharing naming no statutory gateway: referred to a DPO.
REFERRED = {"from_org": "kent-police", "to_org": "kent-cc", "purpose": "safeguarding_children",
            "data_categories": ["identity"], "subject_types": ["child"], "transfer_method": "accord_transfer",
            "lawful_basis": "e", "one_off": True, "retention_months": 6}
#: To a non-signatory, justified by a risk to life: allowed now, reviewed by a DPO afterwards.
EMERGENCY = {**REFERRED, "to_org": "bluewater", "purpose": "crime_prevention", "subject_types": ["offender"],
             "emergency": {"category": "risk_to_life", "justification": "A threat to kill a shop worker today"}}


class Trail:
    """The events appended since the last look, so each step is checked against its own events."""

    def __init__(self, session):
        self.session = session
        self.seen = self._head()
        self.found: list[AuditEvent] = []

    def _head(self) -> int:
        head = audit.head(self.session)
        self.session.rollback()
        return 0 if head is None else head[0]

    def expect(self, action: str, *, actor: str, subject: tuple[str, object] | None = None) -> AuditEvent:
        """The single new event with this action, by this actor, about this subject."""
        self.session.expire_all()
        new = list(self.session.scalars(select(AuditEvent).where(AuditEvent.seq > self.seen)
                                        .order_by(AuditEvent.seq)))
        self.session.rollback()
        assert new, f"nothing was recorded, expected {action}"
        self.seen = new[-1].seq
        self.found.extend(new)
        matching = [e for e in new if e.action == action]
        assert len(matching) == 1, (action, [(e.action, e.actor) for e in new])
        event = matching[0]
        assert event.actor == actor, (action, event.actor)
        if subject is not None:
            assert (event.subject_type, event.subject_id) == (subject[0], str(subject[1])), action
        return event


def _ok(response, status: int = 200):
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    return response


def test_every_kind_of_change_the_issue_names_is_recorded(app, client, session, auth, api_token):
    trail = Trail(session)
    officer = auth_service.find_user_by_email(session, OFFICER)

    # Sign-in, failed and successful, through the real form.
    auth.sign_in(OFFICER, "not-the-password")
    trail.expect("auth.sign_in_failed", actor=OFFICER, subject=("user", officer.id))
    auth.sign_in("nobody@example.org", "not-the-password")
    failed = trail.expect("auth.sign_in_failed", actor="nobody@example.org")
    assert failed.details == {"reason": "unknown_account"}
    _ok(auth.sign_in(OFFICER), 302)
    trail.expect("auth.signed_in", actor=OFFICER, subject=("user", officer.id))
    auth.sign_out()
    trail.expect("auth.signed_out", actor=OFFICER)

    # Decisions, and a DPO's resolution of a referral and review of emergency sharing.
    police, police_dpo = api_token(OFFICER, "submit", "transfer"), api_token(POLICE_DPO, "submit", "read")
    trail.seen = audit.head(session)[0]  # the tokens' own events are not what is checked here
    session.rollback()
    allowed = _ok(client.post("/api/v1/exchanges", json=ALLOWED, headers=police), 201).json
    event = trail.expect("exchange.recorded", actor=OFFICER, subject=("exchange", allowed["id"]))
    assert (event.outcome, event.protocol, event.counterparty) == ("allow", "vcs-safeguarding", "dartford-bc")
    referred = _ok(client.post("/api/v1/exchanges", json=REFERRED, headers=police), 201).json
    assert trail.expect("exchange.recorded", actor=OFFICER).outcome == "refer"
    _ok(client.post(f"/api/v1/exchanges/{referred['id']}/resolution", headers=police_dpo,
                    json={"decision": "approved", "reasons": "Necessary to safeguard a child",
                          "valid_until": (today() + timedelta(days=30)).isoformat()}), 201)
    trail.expect("exchange.referral_approved", actor=POLICE_DPO, subject=("exchange", referred["id"]))
    refused = _ok(client.post("/api/v1/exchanges", json=REFERRED, headers=police), 201).json
    trail.expect("exchange.recorded", actor=OFFICER, subject=("exchange", refused["id"]))
    _ok(client.post(f"/api/v1/exchanges/{refused['id']}/resolution", headers=police_dpo,
                    json={"decision": "refused", "reasons": "Not necessary for the purpose"}), 201)
    trail.expect("exchange.referral_refused", actor=POLICE_DPO, subject=("exchange", refused["id"]))
    emergency = _ok(client.post("/api/v1/exchanges", json=EMERGENCY, headers=police), 201).json
    assert trail.expect("exchange.recorded", actor=OFFICER).outcome == "allow_emergency"
    _ok(client.post(f"/api/v1/exchanges/{emergency['id']}/emergency-review", headers=police_dpo,
                    json={"conclusion": "justified", "notes": "The threat was credible"}), 201)
    trail.expect("exchange.emergency_reviewed", actor=POLICE_DPO, subject=("exchange", emergency["id"]))

    # Register changes, by the coordinator through the API.
    coordinator = api_token(COORDINATOR, "submit")
    trail.seen = audit.head(session)[0]
    session.rollback()
    _ok(client.post("/api/v1/organisations", headers=coordinator, json={
        "code": "dartford-food-bank", "name": "Dartford Food Bank", "kind": "voluntary",
        "is_public_authority": False}), 201)
    trail.expect("organisation.created", actor=COORDINATOR, subject=("organisation", "dartford-food-bank"))
    _ok(client.patch("/api/v1/organisations/dartford-food-bank", headers=coordinator,
                     json={"dpo_name": "Data Protection Lead"}))
    changed = trail.expect("organisation.updated", actor=COORDINATOR, subject=("organisation", "dartford-food-bank"))
    assert "dpo_name" in changed.details["changes"]
    signed = _ok(client.post("/api/v1/organisations/dartford-food-bank/signatures", headers=coordinator, json={
        "kmisa_version": "2024", "signed_on": today().isoformat(), "signed_by_name": "Chair of Trustees",
        "signed_by_role": "chief_officer"}), 201).json
    trail.expect("signature.recorded", actor=COORDINATOR)
    signature_id = signed["signatures"][0]["id"]
    _ok(client.post(f"/api/v1/signatures/{signature_id}/withdrawal", headers=coordinator,
                    json={"withdrawn_on": today().isoformat(), "reason": "Left the partnership"}))
    trail.expect("signature.withdrawn", actor=COORDINATOR)
    _ok(client.post("/api/v1/subgroups", headers=coordinator, json={
        "code": "food-poverty", "name": "Food poverty group", "lead_organisation": "kent-cc"}), 201)
    trail.expect("subgroup.created", actor=COORDINATOR, subject=("subgroup", "food-poverty"))
    _ok(client.put("/api/v1/subgroups/food-poverty", headers=coordinator, json={
        "name": "Food poverty working group", "lead_organisation": "dartford-bc", "parent": "csp-board"}))
    trail.expect("subgroup.updated", actor=COORDINATOR, subject=("subgroup", "food-poverty"))

    # A role change by an administrator, and a sign-off by a party's DPO through the form.
    county_dpo = auth_service.create_user(session, ADMIN, email=COUNTY_DPO, name="County DPO",
                                          organisation_code="kent-cc", roles=["officer"],
                                          password="a-long-enough-password")
    session.commit()
    trail.expect("user.created", actor=ADMIN, subject=("user", county_dpo.id))
    _ok(client.put(f"/api/v1/users/{county_dpo.id}/roles", headers=api_token(ADMIN, "submit"),
                   json={"roles": ["dpo"]}))
    roles = trail.expect("user.roles_changed", actor=ADMIN, subject=("user", county_dpo.id))
    assert (roles.details["before"], roles.details["after"]) == (["officer"], ["dpo"])
    _ok(auth.sign_in(COUNTY_DPO, "a-long-enough-password"), 302)
    _ok(client.post("/protocols/vcs-safeguarding/v3", data={"confirm": "y"}), 302)
    trail.expect("protocol.signed_off", actor=COUNTY_DPO, subject=("protocol_version", "vcs-safeguarding:v3"))
    auth.sign_out()

    # A transfer, its download by the recipient, and its destruction at the end of its retention.
    sent = _ok(client.post(f"/api/v1/exchanges/{allowed['id']}/transfer", data=b"case,note\n1,visit\n",
                           headers={**police, "Content-Type": "text/csv", "X-Accord-Filename": "cases.csv"}),
               201).json
    trail.seen = audit.head(session)[0] - 1  # the sending is the newest event
    session.rollback()
    trail.expect("transfer.sent", actor=OFFICER, subject=("transfer", sent["id"]))
    recipient = api_token(COUNCIL_OFFICER, "transfer")
    trail.seen = audit.head(session)[0]
    session.rollback()
    _ok(client.get(f"/api/v1/transfers/{sent['id']}/payload", headers=recipient))
    trail.expect("transfer.downloaded", actor=COUNCIL_OFFICER, subject=("transfer", sent["id"]))
    deadline = as_utc(session.get(Transfer, sent["id"]).retention_until)
    session.rollback()
    transfers.purge_expired(session, now=deadline + timedelta(minutes=1))
    session.commit()
    trail.expect("transfer.destroyed", actor=transfers.SYSTEM_ACTOR, subject=("transfer", sent["id"]))

    recorded = {e.action for e in trail.found}
    missing = {kind: actions - recorded for kind, actions in KINDS.items() if actions - recorded}
    assert not missing, missing
    assert audit.verify_current(session).ok


def test_a_change_and_its_event_commit_or_roll_back_together(app, session, demo, monkeypatch):
    """A change whose event cannot be appended is not made: no unrecorded change can exist."""
    admin = auth_service.find_user_by_email(session, ADMIN)
    officer = auth_service.find_user_by_email(session, OFFICER)
    before = audit.head(session)
    session.rollback()

    def refuse(*args, **kwargs):
        raise RuntimeError("the audit trail cannot be written")

    monkeypatch.setattr(audit, "record", refuse)
    try:
        auth_service.set_roles(session, admin, officer, ["dpo"])
        session.commit()
    except RuntimeError:
        session.rollback()
    else:  # pragma: no cover - the failure is the point
        raise AssertionError("the role change was made without its audit event")
    monkeypatch.undo()
    session.expire_all()
    assert sorted(auth_service.find_user_by_email(session, OFFICER).roles) == ["officer"]
    assert audit.head(session) == before
