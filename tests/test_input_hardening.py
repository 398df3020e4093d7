"""Input the databases cannot take is refused as invalid before it reaches them: NUL characters
(PostgreSQL refuses them in text) and ids past the largest row id (SQLite and the drivers fail on
integers past 64 bits). Found by schemathesis; each was a 500 before."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEvent

OFFICER = "officer@kent-police.example"


@pytest.mark.parametrize("query", ["protocol=%00", "organisation=kent%00police", "outcome=allow&protocol=a%00b"])
def test_a_nul_in_a_query_is_422_naming_the_parameter(client, api_token, query):
    response = client.get(f"/api/v1/exchanges?{query}", headers=api_token(OFFICER, "read"))
    assert response.status_code == 422
    assert response.json["error"]["code"] == "validation_failed"
    field = response.json["error"]["fields"][0]
    assert field["field"] in ("protocol", "organisation") and "NUL" in field["message"]


def test_a_nul_in_a_json_body_is_422_naming_the_field_and_stores_nothing(client, api_token, session):
    headers = api_token("coordinator@dartford.example", "submit")
    checker = api_token(OFFICER, "check")
    before = session.scalar(select(func.count()).select_from(AuditEvent))
    response = client.post("/api/v1/subgroups", headers=headers, json={
        "code": "new-group", "name": "A group", "description": "line one\x00line two", "lead_organisation": "kent-cc"})
    assert response.status_code == 422
    assert response.json["error"]["fields"] == [
        {"field": "description", "message": "Remove the NUL character (\\0): it is not allowed in text"}]
    nested = client.post("/api/v1/exchanges/check", headers=checker,
                         json={"data_categories": ["identity", "con\x00tact"]})
    assert nested.status_code == 422 and nested.json["error"]["fields"][0]["field"] == "data_categories.1"
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(AuditEvent)) == before


def test_a_nul_in_a_form_or_a_page_address_is_refused(auth, client):
    auth.sign_in("coordinator@dartford.example")
    response = client.post("/register/subgroups/new", data={"code": "x", "name": "A\x00B"})
    assert response.status_code == 422 and "NUL" in response.get_data(as_text=True)
    assert client.get("/register/organisations/kent%00police").status_code == 404


@pytest.mark.parametrize("path", ["/api/v1/exchanges/99999999999999999999999", "/api/v1/users/9223372036854775808",
                                  "/api/v1/exchanges/2147483648"])
def test_an_id_past_the_largest_row_is_not_found(client, api_token, path):
    response = client.get(path, headers=api_token("admin@dartford.example", "read"))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_a_page_for_an_id_past_the_largest_row_is_not_found(auth, client):
    auth.sign_in("auditor@dartford.example")
    assert client.get("/exchanges/99999999999999999999999").status_code == 404


def test_a_query_id_past_the_largest_row_is_422(client, api_token):
    response = client.get("/api/v1/exchanges?before_id=33735829884524664704729088000",
                          headers=api_token(OFFICER, "read"))
    assert response.status_code == 422
    assert response.json["error"]["fields"][0]["field"].endswith("before_id")
