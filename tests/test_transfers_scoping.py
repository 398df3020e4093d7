"""Who may see what: every demo user against every transfer endpoint, in the API and the UI.

A transfer is visible only to its two organisations; to anyone else, whatever their role, its
id is not found. Within the two, only recipient officers and DPOs get the payload.
"""
from __future__ import annotations

import uuid

import pytest

from tests.transfers_support import COUNCIL_OFFICER, DEMO_USERS, POLICE_OFFICER, record_allowed_exchange, send, user

HANDLER_ROLES = {"officer", "dpo"}


@pytest.fixture
def transfers(app, session, demo):
    """Kent Police to Kent County Council, Dartford Borough Council to Kent County Council, and
    Kent Police to Dartford Borough Council: every demo user is a stranger to one of the first two."""
    made = {}
    for name, sender, to in (("police_to_county", POLICE_OFFICER, "kent-cc"),
                             ("council_to_county", COUNCIL_OFFICER, "kent-cc"),
                             ("police_to_council", POLICE_OFFICER, "dartford-bc")):
        exchange = record_allowed_exchange(session, sender, to)
        transfer = send(app, session, sender, exchange, f"payload of {name}".encode())
        made[name] = (transfer.id, exchange.from_organisation.code, exchange.to_organisation.code)
    return made


def expected(email: str, organisation: str, roles: set[str], sender: str, recipient: str) -> dict[str, int]:
    if organisation not in (sender, recipient):
        return {"metadata": 404, "payload": 404, "head": 404, "confirm": 404}
    handler = bool(roles & HANDLER_ROLES)
    return {
        "metadata": 200,
        "payload": 200 if organisation == recipient and handler else 403,
        "head": 200,
        # Not destroyed yet: the recipient's handlers are told it is too early; everyone else may not.
        "confirm": 409 if organisation == recipient and handler else 403,
    }


def _who(session, email):
    person = user(session, email)
    return person.organisation.code, set(person.roles)


@pytest.mark.parametrize("email", DEMO_USERS)
def test_api_matrix(client, session, api_token, transfers, email):
    organisation, roles = _who(session, email)
    headers = api_token(email, "read", "check", "submit", "transfer")
    listed = {t["id"] for t in client.get("/api/v1/transfers", headers=headers).json["transfers"]}
    for name, (transfer_id, sender, recipient) in transfers.items():
        want = expected(email, organisation, roles, sender, recipient)
        got = {
            "metadata": client.get(f"/api/v1/transfers/{transfer_id}", headers=headers).status_code,
            "payload": client.get(f"/api/v1/transfers/{transfer_id}/payload", headers=headers).status_code,
            "head": client.head(f"/api/v1/transfers/{transfer_id}/payload", headers=headers).status_code,
            "confirm": client.post(f"/api/v1/transfers/{transfer_id}/destruction-confirmation",
                                   headers=headers).status_code,
        }
        assert got == want, (email, name)
        assert (transfer_id in listed) == (want["metadata"] == 200), (email, name)
    unknown = str(uuid.uuid4())
    assert client.get(f"/api/v1/transfers/{unknown}", headers=headers).status_code == 404
    assert client.get(f"/api/v1/transfers/{unknown}/payload", headers=headers).status_code == 404


@pytest.mark.parametrize("email", DEMO_USERS)
def test_web_matrix(auth, client, session, transfers, email):
    organisation, roles = _who(session, email)
    assert auth.sign_in(email).status_code == 302
    index = client.get("/transfers").get_data(as_text=True)
    for name, (transfer_id, sender, recipient) in transfers.items():
        want = expected(email, organisation, roles, sender, recipient)
        page = client.get(f"/transfers/{transfer_id}")
        download = client.get(f"/transfers/{transfer_id}/download")
        got = {
            "metadata": page.status_code,
            "payload": download.status_code,
            "head": want["head"],  # browsers do not send HEAD for these pages
            "confirm": client.post(f"/transfers/{transfer_id}/destruction-confirmation").status_code,
        }
        assert got == want, (email, name)
        assert (transfer_id in index) == (want["metadata"] == 200), (email, name)
        if want["payload"] == 200:
            assert download.data == f"payload of {name}".encode()
            assert b"Download the file" in page.data
        else:
            assert b"payload of" not in download.data
    assert client.get(f"/transfers/{uuid.uuid4()}").status_code == 404


@pytest.mark.parametrize("email", DEMO_USERS)
def test_sending_matrix(client, session, api_token, transfers, email):
    """Only officers and DPOs of the sending organisation send; a stranger who cannot see the
    exchange gets 404, everyone who can see it but may not send gets 403."""
    from app.decisions.models import Exchange
    from sqlalchemy import select

    organisation, roles = _who(session, email)
    headers = api_token(email, "transfer")
    for exchange in session.scalars(select(Exchange)):
        sender = exchange.from_organisation.code
        party = organisation in (sender, exchange.to_organisation.code)
        overseer = bool(roles & {"auditor", "coordinator", "admin"})
        if organisation == sender and roles & HANDLER_ROLES:
            want = 201
        elif party or overseer:
            want = 403
        else:
            want = 404
        response = client.post(f"/api/v1/exchanges/{exchange.id}/transfer", data=b"x", headers={
            **headers, "Content-Type": "text/plain", "X-Accord-Filename": "x.txt"})
        assert response.status_code == want, (email, exchange.id, response.json)
