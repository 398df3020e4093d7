"""Checking and recording exchanges through the API, the UI and the CLI; referrals and emergencies."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.decisions.models import EmergencyReview, Exchange

OFFICER = "officer@kent-police.example"
POLICE_DPO = "dpo@kent-police.example"
COUNCIL_DPO = "dpo@dartford.example"

ALLOWED = {  # Kent Police to Dartford Borough Council under the approved safeguarding protocol
    "from_org": "kent-police", "to_org": "dartford-bc", "protocol": {"code": "vcs-safeguarding", "version": 2},
    "purpose": "safeguarding_children", "data_categories": ["identity", "contact"], "subject_types": ["child"],
    "transfer_method": "accord_transfer", "lawful_basis": "e", "legal_gateway": "cda-1998-s115",
    "retention_months": 12,
}
ONE_OFF = {  # one-off sharing by a public authority that names no statutory gateway: a DPO must decide
    "from_org": "kent-police", "to_org": "kent-cc", "purpose": "safeguarding_children",
    "data_categories": ["identity"], "subject_types": ["child"], "transfer_method": "accord_transfer",
    "lawful_basis": "e", "one_off": True, "retention_months": 6,
}
TO_NON_SIGNATORY = {**ONE_OFF, "to_org": "bluewater", "purpose": "crime_prevention", "subject_types": ["offender"]}
EMERGENCY = {**TO_NON_SIGNATORY, "emergency": {"category": "risk_to_life",
                                                "justification": "A man has threatened to kill a shop worker today"}}


def count(session, model) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize(("request_body", "outcome", "reasons"), [
    (ALLOWED, "allow", set()),
    (ONE_OFF, "refer", {"legal_gateway"}),
    ({**ONE_OFF, "legal_gateway": "cda-1998-s115"}, "allow", set()),  # one-off between signatories, gateway given
    (TO_NON_SIGNATORY, "deny", {"kmisa_signatory", "ad_hoc"}),
    (EMERGENCY, "allow_emergency", set()),
    ({**ALLOWED, "purpose": "crime_prevention"}, "deny", {"purpose"}),
    ({**ALLOWED, "transfer_method": "unencrypted_email"}, "deny", {"transfer_method"}),
])
def test_check_returns_every_finding_and_records_nothing(client, api_token, session, request_body, outcome, reasons):
    headers = api_token(OFFICER, "check")
    before = (count(session, Exchange), count(session, AuditEvent))
    response = client.post("/api/v1/exchanges/check", json=request_body, headers=headers)
    assert response.status_code == 200, response.json
    decision = response.json
    assert decision["outcome"] == outcome
    assert {f["rule"] for f in decision["findings"] if f["outcome"] in ("deny", "refer")} >= reasons
    assert len(decision["findings"]) == 20  # every rule, passed ones included
    assert all(f["message"] and "citation" in f for f in decision["findings"])
    assert (count(session, Exchange), count(session, AuditEvent)) == before


def test_check_as_of_a_past_date_answers_as_it_was_then(client, api_token):
    # Version 2 of the safeguarding protocol was not yet in force in 2024.
    response = client.post("/api/v1/exchanges/check", json={**ALLOWED, "as_of": "2024-06-01"},
                           headers=api_token(OFFICER, "check"))
    assert response.status_code == 200
    assert response.json["outcome"] != "allow"
    assert response.json["as_of"].startswith("2024-06-01")


def test_record_stores_request_decision_and_audit_event_together(client, api_token, session):
    response = client.post("/api/v1/exchanges", json=ALLOWED, headers=api_token(OFFICER, "submit"))
    assert response.status_code == 201, response.json
    body = response.json
    assert body["status"] == "allow" and body["may_proceed"] is True
    exchange = session.get(Exchange, body["id"])
    assert exchange.protocol_hash and exchange.bundle_hash and exchange.subgroup_code == "vcs-group"
    event = session.scalar(select(AuditEvent).where(AuditEvent.subject_type == "exchange",
                                                    AuditEvent.subject_id == str(exchange.id)))
    assert event.action == "exchange.recorded" and event.details["outcome"] == "allow"
    assert event.details["protocol"] == "vcs-safeguarding:v2"


@pytest.mark.parametrize(("request_body", "rows"), [
    (ALLOWED, ["exchanges", "audit_events"]),
    (EMERGENCY, ["exchanges", "emergency_reviews", "audit_events"]),
])
def test_recording_reads_the_revisions_once_and_nothing_back(client, api_token, statements, backend, request_body,
                                                            rows):
    headers = api_token(OFFICER, "submit")
    # The steady state: the token's first use noted and the register loaded.
    assert client.post("/api/v1/exchanges", json=request_body, headers=headers).status_code == 201
    statements.clear()
    response = client.post("/api/v1/exchanges", json=request_body, headers=headers)
    assert response.status_code == 201, response.json
    inserts = [s.split()[2] for s in statements if s.startswith("INSERT")]
    assert inserts == rows
    after_first_insert = statements[next(i for i, s in enumerate(statements) if s.startswith("INSERT")):]
    reads = [s for s in after_first_insert if s.startswith("SELECT") and "audit_chain_head_locked" not in s
             and "FROM audit_events" not in s]
    assert reads == [], "the exchange and its audit event are written whole: nothing is loaded back"
    revision_reads = [s for s in statements if "register_revision" in s]
    assert len(revision_reads) == 1 and "access_revision" in revision_reads[0], "both revisions, in one statement"
    assert not [s for s in statements if "api_tokens" in s], "a token seen before is not loaded again"
    if backend == "postgresql":  # the exchange's INSERT takes the chain's lock and reads its head
        [insert] = [s for s in statements if s.startswith("INSERT INTO exchanges")]
        assert "audit_chain_head_locked" in insert
        assert [s for s in statements if "audit_chain_head_locked" in s] == [insert]
    assert response.json["requested_by"] == OFFICER and response.json["resolution"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({**ALLOWED, "as_of": "2026-01-01"}, "as_of"),  # recorded exchanges are decided as of now
    ({**ALLOWED, "from_org": "kent-cc"}, "from_org"),  # an officer acts for their own organisation
    ({**ALLOWED, "subject_count": True}, "subject_count"),
    ({**ALLOWED, "data_categories": []}, "data_categories"),
    ({**ALLOWED, "surprise": 1}, "surprise"),
    ({**ALLOWED, "to_org": "kent-police"}, "body"),
])
def test_bad_requests_are_422_and_store_nothing(client, api_token, session, body, field):
    headers = api_token(OFFICER, "submit")
    before = (count(session, Exchange), count(session, AuditEvent))
    response = client.post("/api/v1/exchanges", json=body, headers=headers)
    assert response.status_code == 422, response.json
    fields = {f["field"] for f in response.json["error"]["fields"]}
    assert field in fields or any(f.startswith(field) for f in fields), fields
    assert (count(session, Exchange), count(session, AuditEvent)) == before


def test_exchanges_are_scoped_to_the_organisations_involved(client, api_token):
    created = client.post("/api/v1/exchanges", json=ALLOWED, headers=api_token(OFFICER, "submit")).json
    for email, visible in [(OFFICER, True), ("officer@dartford.example", True), ("dpo@kent-police.example", True),
                           ("auditor@dartford.example", True)]:
        response = client.get(f"/api/v1/exchanges/{created['id']}", headers=api_token(email, "read"))
        assert (response.status_code == 200) is visible, (email, response.status_code)


def test_an_unrelated_organisation_gets_404(client, api_token, session):
    created = client.post("/api/v1/exchanges", json=ONE_OFF, headers=api_token(OFFICER, "submit")).json
    # Dartford Borough Council is neither sender nor recipient of a police-to-county request.
    response = client.get(f"/api/v1/exchanges/{created['id']}", headers=api_token("officer@dartford.example", "read"))
    assert response.status_code == 404
    listing = client.get("/api/v1/exchanges", headers=api_token("officer@dartford.example", "read")).json
    assert created["id"] not in {e["id"] for e in listing["exchanges"]}


def test_a_dpo_approves_a_referral_with_reasons_and_it_may_then_proceed(client, api_token):
    created = client.post("/api/v1/exchanges", json=ONE_OFF, headers=api_token(OFFICER, "submit")).json
    assert created["status"] == "awaiting_dpo" and not created["may_proceed"]
    dpo = api_token(POLICE_DPO, "submit", "read")
    missing = client.post(f"/api/v1/exchanges/{created['id']}/resolution", headers=dpo,
                          json={"decision": "approved", "reasons": "Necessary to safeguard a child"})
    assert missing.status_code == 422 and missing.json["error"]["fields"][0]["field"] == "valid_until"
    approved = client.post(f"/api/v1/exchanges/{created['id']}/resolution", headers=dpo, json={
        "decision": "approved", "reasons": "Necessary to safeguard a child", "valid_until": "2099-01-01"})
    assert approved.status_code == 422  # more than a year
    from app.clock import today
    from datetime import timedelta
    approved = client.post(f"/api/v1/exchanges/{created['id']}/resolution", headers=dpo, json={
        "decision": "approved", "reasons": "Necessary to safeguard a child",
        "valid_until": (today() + timedelta(days=30)).isoformat()})
    assert approved.status_code == 201, approved.json
    assert approved.json["status"] == "approved" and approved.json["may_proceed"] is True
    again = client.post(f"/api/v1/exchanges/{created['id']}/resolution", headers=dpo,
                        json={"decision": "refused", "reasons": "Changed my mind"})
    assert again.status_code == 409


def test_officers_cannot_decide_referrals_and_other_dpos_cannot_see_them(client, api_token):
    created = client.post("/api/v1/exchanges", json=ONE_OFF, headers=api_token(OFFICER, "submit")).json
    body = {"decision": "refused", "reasons": "No"}
    officer = client.post(f"/api/v1/exchanges/{created['id']}/resolution", json=body,
                          headers=api_token(OFFICER, "submit", "read"))
    assert officer.status_code == 403
    outsider = client.post(f"/api/v1/exchanges/{created['id']}/resolution", json=body,
                           headers=api_token(COUNCIL_DPO, "submit", "read"))
    assert outsider.status_code == 404


def test_emergency_opens_a_retrospective_review_for_the_dpos(client, api_token, session):
    created = client.post("/api/v1/exchanges", json=EMERGENCY, headers=api_token(OFFICER, "submit")).json
    assert created["status"] == "allow_emergency" and created["emergency_review"]["due_on"]
    assert count(session, EmergencyReview) == 1
    review = client.post(f"/api/v1/exchanges/{created['id']}/emergency-review", headers=api_token(POLICE_DPO, "submit"),
                         json={"conclusion": "justified", "notes": "Threat to life was credible"})
    assert review.status_code == 201 and review.json["emergency_review"]["conclusion"] == "justified"


def test_urgency_that_is_not_an_emergency_is_judged_normally(client, api_token):
    body = {**TO_NON_SIGNATORY, "emergency": {"category": "deadline", "justification": "Court hearing tomorrow"}}
    decision = client.post("/api/v1/exchanges/check", json=body, headers=api_token(OFFICER, "check")).json
    assert decision["outcome"] == "deny"
    assert decision["emergency_accepted"] is False


def test_ad_hoc_threshold_advises_a_protocol_and_shows_as_a_pattern(client, api_token, auth):
    headers = api_token(OFFICER, "submit", "check")
    for _ in range(3):
        assert client.post("/api/v1/exchanges", json=ONE_OFF, headers=headers).status_code == 201
    decision = client.post("/api/v1/exchanges/check", json=ONE_OFF, headers=headers).json
    ad_hoc = next(f for f in decision["findings"] if f["rule"] == "ad_hoc")
    assert ad_hoc["outcome"] == "refer" and "protocol" in ad_hoc["message"].lower()
    auth.sign_in("coordinator@dartford.example")
    page = client.get("/exchanges/patterns").get_data(as_text=True)
    assert "Kent County Council" in page and "Kent Police" in page


def test_officer_asks_checks_and_submits_in_the_ui(auth, client, session):
    auth.sign_in(OFFICER)
    assert client.get("/exchanges/new").status_code == 200
    form = {"to_org": "dartford-bc", "protocol": "vcs-safeguarding:v2", "purpose": "safeguarding_children",
            "data_categories": ["identity", "contact"], "subject_types": ["child"], "subject_count": "1",
            "bulk_or_matching": "no", "lawful_basis": "e", "legal_gateway": "cda-1998-s115",
            "transfer_method": "accord_transfer", "retention_months": "12"}
    checked = client.post("/exchanges/new", data={**form, "check": "Check"})
    assert checked.status_code == 200
    assert "You may share" in checked.get_data(as_text=True)
    assert count(session, Exchange) == 0
    submitted = client.post("/exchanges/new", data={**form, "submit": "Submit the request"})
    assert submitted.status_code == 302
    exchange_page = client.get(submitted.headers["Location"]).get_data(as_text=True)
    assert "You may share" in exchange_page and "Every check (20)" in exchange_page
    assert count(session, Exchange) == 1


def test_ui_shows_field_errors_for_a_bad_request(auth, client, session):
    auth.sign_in(OFFICER)
    response = client.post("/exchanges/new", data={"to_org": "dartford-bc", "protocol": "one-off",
                                                   "subject_count": "0", "check": "Check"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "There is a problem" in html and "Select the purpose" in html and "Enter a whole number" in html
    assert count(session, Exchange) == 0


def test_dpo_decides_a_referral_in_the_ui(auth, client, api_token):
    created = client.post("/api/v1/exchanges", json=ONE_OFF, headers=api_token(OFFICER, "submit")).json
    auth.sign_in(POLICE_DPO)
    queue = client.get("/referrals").get_data(as_text=True)
    assert f"Request {created['id']}" in queue
    bad = client.post(f"/exchanges/{created['id']}/resolve", data={"decision": "refused", "reasons": ""})
    assert bad.status_code == 422
    ok = client.post(f"/exchanges/{created['id']}/resolve",
                     data={"decision": "refused", "reasons": "Not necessary: the council already holds it"})
    assert ok.status_code == 302
    assert "Not necessary" in client.get(f"/exchanges/{created['id']}").get_data(as_text=True)


def test_dpo_signs_off_the_draft_protocol_in_the_ui(auth, client, app):
    auth.sign_in("dpo@kent-police.example")
    page_as_police = client.get("/protocols/vcs-safeguarding/v3").get_data(as_text=True)
    assert "Draft" in page_as_police and "Sign off" not in page_as_police  # Kent Police signed already
    auth.sign_out()

    from app.auth import service as auth_service
    from app.extensions import db
    pending = ("kent-cc", "kent-fire-rescue", "nhs-kent-medway")  # demo_pending_signoffs()
    for code in pending:
        auth_service.create_user(db.session, "test", email=f"dpo@{code}.example", name=f"DPO of {code}",
                                 organisation_code=code, roles=["dpo"], password="long-enough-password")
    db.session.commit()
    for index, code in enumerate(pending):
        email = f"dpo@{code}.example"
        if index == len(pending) - 1:
            auth.sign_in(email, "long-enough-password")
            assert "Draft" in client.get("/protocols/vcs-safeguarding/v3").get_data(as_text=True)
            auth.sign_out()
        auth.sign_in(email, "long-enough-password")
        assert client.post("/protocols/vcs-safeguarding/v3", data={}).status_code == 422
        assert client.post("/protocols/vcs-safeguarding/v3", data={"confirm": "y"}).status_code == 302
        auth.sign_out()
    auth.sign_in("auditor@dartford.example")
    assert "Approved" in client.get("/protocols/vcs-safeguarding/v3").get_data(as_text=True)


def test_accord_check_reads_json_and_prints_the_decision(runner, demo, tmp_path):
    path = tmp_path / "request.json"
    path.write_text(json.dumps(ALLOWED))
    result = runner.invoke(args=["check", str(path), "--as", OFFICER])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outcome"] == "allow"
    denied = tmp_path / "denied.json"
    denied.write_text(json.dumps(TO_NON_SIGNATORY))
    result = runner.invoke(args=["check", str(denied), "--as", OFFICER])
    assert result.exit_code == 1 and json.loads(result.output)["outcome"] == "deny"


def test_impact_lists_decisions_a_proposed_version_would_change(client, api_token, runner, tmp_path):
    headers = api_token(OFFICER, "submit")
    assert client.post("/api/v1/exchanges", json=ALLOWED, headers=headers).json["status"] == "allow"
    source = (Path(__file__).parents[1] / "policies/protocols/vcs-group/vcs-safeguarding-v2.yaml").read_text()
    # The proposal stops Accord transfers as a method, so the recorded request would now be denied.
    proposed = source.replace("version: 2\n", "version: 4\nsupersedes: 2\n", 1).replace(
        "transfer_methods: [accord_transfer, ", "transfer_methods: [", 1)
    proposed = proposed.replace("supersedes: 1\n", "", 1)
    path = tmp_path / "vcs-safeguarding-v4.yaml"
    path.write_text(proposed)
    from app.clock import today
    result = runner.invoke(args=["policies", "impact", str(path), "--since", "2020-01-01",
                                 "--until", today().isoformat()])
    assert result.exit_code == 0, result.output
    assert "1 of 1 recorded request(s) would get a different answer" in result.output
    assert "allow -> deny" in result.output and "transfer_method" in result.output


def test_exchanges_recorded_one_after_another_in_one_transaction_chain_in_order(app, session, demo):
    """The second recording reads the chain's head with its exchange's INSERT: the first one's audit
    event, staged to go with the commit, must be written before that read, or both claim one seq."""
    from app import database
    from app.audit import service as audit
    from app.auth.service import find_user_by_email
    from app.clock import utcnow
    from app.decisions import service

    officer = find_user_by_email(session, OFFICER)
    first = service.record(session, officer, ALLOWED, now=utcnow())
    second = service.record(session, officer, ONE_OFF, now=utcnow())
    database.commit(session)
    session.expire_all()
    events = session.scalars(select(AuditEvent).where(AuditEvent.action == "exchange.recorded")
                             .order_by(AuditEvent.seq)).all()
    assert [e.subject_id for e in events] == [str(first.id), str(second.id)]
    assert events[1].seq == events[0].seq + 1 and events[1].prev_hash == events[0].hash
    report = audit.verify(session, key=app.config["AUDIT_HMAC_KEY"].encode(), checkpoint=None, public_key=None)
    assert report.ok, report.message
