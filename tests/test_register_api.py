"""The register through /api/v1: tokens, scopes, the error envelope and field-level validation."""
from __future__ import annotations

import pytest
from openapi_spec_validator import validate
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.registry.models import Organisation

COORDINATOR = "coordinator@dartford.example"
OFFICER = "officer@kent-police.example"


def test_openapi_document_is_valid_openapi_3_1(client):
    document = client.get("/api/v1/openapi.json").json
    assert document["openapi"].startswith("3.1")
    validate(document)
    assert "/api/v1/organisations" in document["paths"]


def test_requests_without_a_valid_token_get_401_in_the_envelope(client, demo):
    for headers in ({}, {"Authorization": "Bearer acc_deadbeef_nope"}, {"Authorization": "Basic abc"}):
        response = client.get("/api/v1/organisations", headers=headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthenticated"


def test_list_organisations_with_their_standing(client, api_token):
    response = client.get("/api/v1/organisations", headers=api_token(OFFICER, "read"))
    assert response.status_code == 200
    standing = {o["code"]: o["signatory_status"] for o in response.json["organisations"]}
    assert standing["kent-police"] == "active"
    assert standing["dartford-bc"] == "due_for_renewal"
    assert standing["bluewater"] == "never_signed"
    assert standing["dartford-nhw"] == "superseded"


def test_unknown_organisation_is_404_in_the_envelope(client, api_token):
    response = client.get("/api/v1/organisations/nowhere", headers=api_token(OFFICER, "read"))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_wrong_method_is_405_and_keeps_allow(client, api_token):
    response = client.delete("/api/v1/organisations", headers=api_token(OFFICER, "read"))
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.json["error"]["code"] == "method_not_allowed"


def test_scope_and_role_are_both_required(client, api_token):
    body = {"code": "medway", "name": "Medway Council", "kind": "district_council", "is_public_authority": True}
    read_only = client.post("/api/v1/organisations", json=body, headers=api_token(COORDINATOR, "read"))
    assert read_only.status_code == 403 and read_only.json["error"]["code"] == "insufficient_scope"
    officer = client.post("/api/v1/organisations", json=body, headers=api_token(OFFICER, "submit"))
    assert officer.status_code == 403 and officer.json["error"]["code"] == "forbidden"
    ok = client.post("/api/v1/organisations", json=body, headers=api_token(COORDINATOR, "submit"))
    assert ok.status_code == 201 and ok.json["signatory_status"] == "never_signed"


VALID = {"code": "medway", "name": "Medway Council", "kind": "district_council", "is_public_authority": True}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**VALID, "code": "Not A Slug"}, "code"),
        ({**VALID, "kind": "spaceship"}, "kind"),
        ({**VALID, "is_public_authority": 1}, "is_public_authority"),  # a number is not a boolean
        ({**VALID, "apd_paragraphs": [6, 40]}, "apd_paragraphs.1"),
        ({**VALID, "apd_paragraphs": [True]}, "apd_paragraphs.0"),
        ({**VALID, "colour": "blue"}, "colour"),  # unknown fields are refused
        ({k: v for k, v in VALID.items() if k != "name"}, "name"),
        ({**VALID, "dissolved_on": "31/02/2026"}, "dissolved_on"),
        ({**VALID, "code": "kent-police"}, "code"),  # exists: the service says so
        ({**VALID, "successor": "nowhere", "dissolved_on": "2026-01-01"}, "successor"),
    ],
)
def test_bad_input_is_422_with_the_field_and_nothing_is_stored(client, api_token, session, body, field):
    headers = api_token(COORDINATOR, "submit")
    before = (session.scalar(select(func.count()).select_from(Organisation)),
              session.scalar(select(func.count()).select_from(AuditEvent)))
    response = client.post("/api/v1/organisations", json=body, headers=headers)
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "validation_failed"
    assert field in {f["field"] for f in response.json["error"]["fields"]}
    session.expire_all()
    after = (session.scalar(select(func.count()).select_from(Organisation)),
             session.scalar(select(func.count()).select_from(AuditEvent)))
    assert after == before


def test_malformed_json_is_refused_in_the_envelope(client, api_token):
    response = client.post("/api/v1/organisations", data="{not json", headers={
        **api_token(COORDINATOR, "submit"), "Content-Type": "application/json"})
    assert response.status_code in (400, 422)
    assert "error" in response.json


def test_patch_changes_only_the_fields_given_and_signature_lifecycle(client, api_token):
    headers = api_token(COORDINATOR, "submit", "read")
    patched = client.patch("/api/v1/organisations/bluewater", json={"dpo_name": "Privacy Lead"}, headers=headers)
    assert patched.status_code == 200
    assert patched.json["dpo_name"] == "Privacy Lead" and patched.json["name"] == "Bluewater Shopping Centre"

    signed = client.post("/api/v1/organisations/bluewater/signatures", headers=headers, json={
        "kmisa_version": "2024", "signed_on": "2026-11-01", "signed_by_name": "Director",
        "signed_by_role": "chief_officer", "expires_on": "2029-11-01"})
    assert signed.status_code == 201 and signed.json["signatory_status"] == "active"
    signature_id = signed.json["signatures"][0]["id"]

    withdrawn = client.post(f"/api/v1/signatures/{signature_id}/withdrawal", headers=headers,
                            json={"withdrawn_on": "2026-11-02", "reason": "Left the partnership"})
    assert withdrawn.status_code == 200 and withdrawn.json["signatory_status"] == "withdrawn"
    again = client.post(f"/api/v1/signatures/{signature_id}/withdrawal", headers=headers,
                        json={"withdrawn_on": "2026-11-03", "reason": "Again"})
    assert again.status_code == 422


def test_subgroups_and_users(client, api_token):
    headers = api_token("admin@dartford.example", "read", "submit")
    subgroups = client.get("/api/v1/subgroups", headers=headers).json["subgroups"]
    assert {s["code"] for s in subgroups} >= {"csp-board", "vcs-group", "ocg-group", "community-trigger", "dhr-2025-01"}
    created = client.post("/api/v1/users", headers=headers, json={
        "email": "analyst@kent-police.example", "name": "Ana Analyst", "organisation": "kent-police",
        "roles": ["officer"], "password": "long-enough-password"})
    assert created.status_code == 201
    duplicate = client.post("/api/v1/users", headers=headers, json={
        "email": "analyst@kent-police.example", "name": "Ana Analyst", "organisation": "kent-police",
        "roles": ["officer"], "password": "long-enough-password"})
    assert duplicate.status_code == 422 and duplicate.json["error"]["fields"][0]["field"] == "email"
    officer = client.get("/api/v1/users", headers=api_token(OFFICER, "read"))
    assert officer.status_code == 403
