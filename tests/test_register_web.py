"""The register in the browser-facing UI: sign-in, pages, forms and their errors."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.registry.demo import demo_register
from app.registry.models import Organisation, Signature

DEMO_EMAILS = [
    "admin@dartford.example", "coordinator@dartford.example", "dpo@kent-police.example",
    "dpo@dartford.example", "officer@kent-police.example", "officer@dartford.example", "auditor@dartford.example",
]


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_healthz_reports_app_and_database(client, backend):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["status"] == "ok"
    assert response.json["database"]["dialect"] == backend


@pytest.mark.parametrize("email", DEMO_EMAILS)
def test_every_demo_user_can_sign_in_and_see_the_register(auth, client, email):
    response = auth.sign_in(email)
    assert response.status_code == 302, response.data
    page = client.get("/register/organisations")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    for organisation in demo_register(__import__("datetime").date.today()).organisations:
        assert organisation.name.replace("'", "&#39;") in text


def test_register_shows_every_signature_state(auth, client):
    auth.sign_in("auditor@dartford.example")
    html = client.get("/register/organisations").get_data(as_text=True)

    def status_of(name: str) -> str:
        row = re.search(re.escape(name) + r"</a></td>.*?<strong class=\"govuk-tag[^\"]*\">([^<]+)</strong>", html, re.S)
        assert row, f"{name} not listed"
        return row.group(1)

    assert status_of("Kent Police") == "Active"
    assert status_of("Dartford Borough Council") == "Due for renewal"
    assert status_of("Kent Fire and Rescue Service") == "Expired"
    assert status_of("Dartford Neighbourhood Watch") == "Superseded"
    assert status_of("Ebbsfleet International Station") == "Withdrawn"
    assert status_of("Bluewater Shopping Centre") == "Never signed"
    assert status_of("NHS Dartford, Gravesham and Swanley CCG") == "Dissolved"


def test_dissolved_body_names_its_successor(auth, client):
    auth.sign_in("coordinator@dartford.example")
    page = client.get("/register/organisations/dgs-ccg").get_data(as_text=True)
    assert "Its functions passed to NHS Kent and Medway" in page


def test_wrong_password_is_refused_without_saying_whether_the_account_exists(auth, client, session):
    unknown = auth.sign_in("nobody@example.org", "whatever-password")
    wrong = auth.sign_in("officer@kent-police.example", "not-the-password")
    assert unknown.status_code == wrong.status_code == 401
    assert b"Enter a correct e-mail address and password" in unknown.data
    assert b"Enter a correct e-mail address and password" in wrong.data
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.action == "auth.sign_in_failed")).all()
    assert len(actions) == 2


def test_sign_out_voids_a_copied_session_cookie(app, auth, client):
    auth.sign_in("officer@kent-police.example")
    cookie = client.get_cookie("session")
    assert client.get("/register/organisations").status_code == 200
    auth.sign_out()

    thief = app.test_client()
    thief.set_cookie("session", cookie.value)
    response = thief.get("/register/organisations")
    assert response.status_code == 302 and "/sign-in" in response.headers["Location"]


def test_officer_cannot_change_the_register(auth, client, session):
    auth.sign_in("officer@kent-police.example")
    assert client.get("/register/organisations/new").status_code == 403
    response = client.post("/register/organisations/new", data={"code": "x", "name": "X"})
    assert response.status_code == 403
    assert session.scalar(select(Organisation).where(Organisation.code == "x")) is None


VALID_ORGANISATION = {
    "code": "medway-council", "name": "Medway Council", "kind": "district_council",
    "is_public_authority": "yes", "is_competent_authority": "no", "dpo_email": "dpo@medway.example",
    "apd_paragraphs": "6, 10, 18",
    "apd_review_on": ["1", "4", "2027"],
}


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"code": "Medway Council"}, "code", "Use lower-case letters"),
        ({"code": "kent-police"}, "code", "already exists"),
        ({"name": ""}, "name", "Enter the organisation"),
        ({"kind": "spaceship"}, "kind", "Not a valid choice"),
        ({"is_public_authority": ""}, "is_public_authority", "Select yes if it is a public authority"),
        ({"apd_paragraphs": "6, 99"}, "apd_paragraphs", "from 1 to 37"),
        ({"apd_review_on": ["31", "2", "2027"]}, "apd_review_on", "must be a real date"),
        ({"dpo_email": "not-an-email"}, "dpo_email", "correct format"),
        ({"successor": "kent-police"}, "dissolved_on", "Enter the date the organisation was dissolved"),
    ],
)
def test_bad_organisation_input_shows_field_errors_and_stores_nothing(auth, client, session, changes, field, message):
    auth.sign_in("coordinator@dartford.example")
    before = (count(session, Organisation), count(session, AuditEvent))
    response = client.post("/register/organisations/new", data={**VALID_ORGANISATION, **changes})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "There is a problem" in html
    assert message in html
    assert f'href="#{field}' in html  # the error summary links to the field
    session.expire_all()
    assert (count(session, Organisation), count(session, AuditEvent)) == before


def test_coordinator_adds_an_organisation_and_it_is_audited(auth, client, session):
    auth.sign_in("coordinator@dartford.example")
    response = client.post("/register/organisations/new", data=VALID_ORGANISATION)
    assert response.status_code == 302
    organisation = session.scalar(select(Organisation).where(Organisation.code == "medway-council"))
    assert organisation.apd_paragraphs == [6, 10, 18]
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "organisation.created")
                           .order_by(AuditEvent.seq.desc()))
    assert event.subject_id == "medway-council" and event.actor == "coordinator@dartford.example"


def test_record_a_signature_then_withdraw_it(auth, client, session):
    auth.sign_in("coordinator@dartford.example")
    response = client.post("/register/organisations/bluewater/signatures/new", data={
        "kmisa_version": "2024", "signed_on": ["1", "11", "2026"], "signed_by_name": "Centre Director",
        "signed_by_role": "chief_officer", "expires_on": ["1", "11", "2029"]})
    assert response.status_code == 302, response.get_data(as_text=True)
    page = client.get("/register/organisations/bluewater").get_data(as_text=True)
    assert "Active" in page
    signature = session.scalar(select(Signature).join(Organisation).where(Organisation.code == "bluewater"))

    bad = client.post(f"/register/signatures/{signature.id}/withdraw", data={
        "withdrawn_on": ["1", "1", "2020"], "reason": "Left"})
    assert bad.status_code == 422 and b"cannot be before the date it was signed" in bad.data

    ok = client.post(f"/register/signatures/{signature.id}/withdraw", data={
        "withdrawn_on": ["2", "11", "2026"], "reason": "Left the partnership"})
    assert ok.status_code == 302
    assert "Withdrawn" in client.get("/register/organisations/bluewater").get_data(as_text=True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kmisa_version": "2013"}, "no longer valid"),
        ({"expires_on": ["1", "1", "2026"]}, "must be after the date it was signed"),
        ({"signed_on": ["", "", ""]}, "Enter the date the agreement was signed"),
        ({"signed_by_role": "mayor"}, "Not a valid choice"),
    ],
)
def test_bad_signature_input_is_refused(auth, client, session, data, message):
    auth.sign_in("coordinator@dartford.example")
    before = count(session, Signature)
    response = client.post("/register/organisations/bluewater/signatures/new", data={
        "kmisa_version": "2024", "signed_on": ["1", "11", "2026"], "signed_by_name": "Director",
        "signed_by_role": "chief_officer", **data})
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    session.expire_all()
    assert count(session, Signature) == before


def test_admin_creates_a_user_and_changes_roles(auth, client, session):
    auth.sign_in("admin@dartford.example")
    bad = client.post("/users/new", data={"email": "x@y.example", "name": "X", "organisation": "kent-police",
                                          "roles": ["officer"], "password": "short"})
    assert bad.status_code == 422 and b"at least 12 characters" in bad.data
    ok = client.post("/users/new", data={"email": "new.officer@kent-police.example", "name": "New Officer",
                                         "organisation": "kent-police", "roles": ["officer"],
                                         "password": "a-long-enough-password"})
    assert ok.status_code == 302
    assert client.get("/users").status_code == 200


def test_security_headers_are_set(client):
    response = client.get("/sign-in")
    csp = response.headers["Content-Security-Policy"]
    for directive in ("frame-ancestors 'none'", "base-uri 'none'", "object-src 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'nonce="{nonce}"' in response.get_data(as_text=True)
