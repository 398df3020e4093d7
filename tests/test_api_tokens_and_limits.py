"""API tokens managed in the browser, their last use, and the API's rate and size limits."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.auth import service as auth_service
from app.auth.models import ApiToken
from tests.clients import isolated_client

OFFICER = "officer@kent-police.example"
ADMIN = "admin@dartford.example"
TOKEN = re.compile(r"acc_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")


def tokens_of(session, email):
    session.expire_all()
    owner = auth_service.find_user_by_email(session, email)
    return session.scalars(select(ApiToken).where(ApiToken.user_id == owner.id).order_by(ApiToken.id)).all()


def create(client, name="Case system", scopes=("read", "check"), days="90"):
    return client.post("/account/tokens/new", data={"name": name, "scopes": list(scopes), "expires_in_days": days})


# --- the token pages -------------------------------------------------------------------------------


def test_a_new_token_is_shown_once_and_then_only_by_its_prefix(auth, client, session):
    auth.sign_in(OFFICER)
    response = create(client)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    plaintext = TOKEN.search(response.get_data(as_text=True)).group(0)
    [token] = tokens_of(session, OFFICER)
    assert plaintext.startswith(f"acc_{token.prefix}_")
    assert plaintext not in token.token_hash and token.scopes == ["check", "read"]
    assert (token.expires_at.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)).days in (89, 90)

    listing = client.get("/account/tokens").get_data(as_text=True)
    assert f"acc_{token.prefix}" in listing and "Case system" in listing and "Never" in listing
    assert plaintext not in listing and TOKEN.search(listing) is None
    for page in ("/account/tokens", "/home", "/account/tokens/new"):
        assert plaintext not in client.get(page).get_data(as_text=True)
    assert plaintext not in str(session.scalar(select(AuditEvent).where(AuditEvent.action == "token.created")).details)

    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {plaintext}"})
    assert me.status_code == 200 and me.json["email"] == OFFICER


def test_a_bad_token_form_is_422_and_creates_nothing(auth, client, session):
    auth.sign_in(OFFICER)
    response = create(client, name="", scopes=())
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "Enter a name that says what the token is for" in html and "Select at least one thing" in html
    assert create(client, scopes=("read", "delete_everything")).status_code == 422
    assert create(client, days="9999").status_code == 422
    assert tokens_of(session, OFFICER) == []


def test_revoking_a_token_stops_it_at_once_and_is_audited(auth, client, session):
    auth.sign_in(OFFICER)
    plaintext = TOKEN.search(create(client).get_data(as_text=True)).group(0)
    [token] = tokens_of(session, OFFICER)
    assert client.post(f"/account/tokens/{token.id}/revoke").status_code == 302
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {plaintext}"}).status_code == 401
    assert tokens_of(session, OFFICER)[0].revoked_at is not None
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "token.revoked"))
    assert event.actor == OFFICER and event.details == {"prefix": token.prefix}
    assert "Revoked" in client.get("/account/tokens").get_data(as_text=True)


def test_nobody_else_can_revoke_or_see_your_token_but_an_administrator(app, auth, client, session):
    auth.sign_in(OFFICER)
    create(client)
    [token] = tokens_of(session, OFFICER)
    auth.sign_out()

    auth.sign_in("officer@dartford.example")
    assert client.post(f"/account/tokens/{token.id}/revoke").status_code == 404
    assert token.prefix not in client.get("/account/tokens").get_data(as_text=True)
    assert client.get("/users/tokens").status_code == 403
    auth.sign_out()
    assert tokens_of(session, OFFICER)[0].revoked_at is None

    auth.sign_in(ADMIN)
    every = client.get("/users/tokens").get_data(as_text=True)
    assert f"acc_{token.prefix}" in every and OFFICER in every
    assert client.post(f"/account/tokens/{token.id}/revoke").status_code == 302
    assert tokens_of(session, OFFICER)[0].revoked_at is not None


def test_last_use_is_recorded_at_most_once_a_minute(app, api_token, session):
    client = isolated_client(app)  # each request loads the token afresh, as a server does
    reader = api_token(OFFICER, "read")
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)

    def last_used():
        value = tokens_of(session, OFFICER)[0].last_used_at.replace(tzinfo=timezone.utc)
        session.rollback()  # outside a request an SQLite transaction holds the write lock: end it
        return value

    with time_machine.travel(start, tick=False):
        assert client.get("/api/v1/me", headers=reader).status_code == 200
    assert last_used() == start
    with time_machine.travel(start + timedelta(seconds=40), tick=False):
        for _ in range(3):
            assert client.get("/api/v1/me", headers=reader).status_code == 200
    assert last_used() == start  # no write for each request
    with time_machine.travel(start + timedelta(minutes=2), tick=False):
        # A request the token's scopes refuse is still a use of the token.
        assert client.post("/api/v1/exchanges/check", json={}, headers=reader).status_code in (403, 422)
    assert last_used() == start + timedelta(minutes=2)


def test_the_user_page_shows_failures_and_the_token_list_links_from_users(auth, client):
    auth.sign_in(ADMIN)
    assert "Every API token" in client.get("/users").get_data(as_text=True)
    assert client.get("/users/tokens").status_code == 200


# --- rate limits -----------------------------------------------------------------------------------


@pytest.fixture
def limited(app):
    """The app with small limits, so a test can spend them."""
    from app.api import ratelimit

    app.config.update(API_RATE_LIMIT="5/minute", API_ANONYMOUS_RATE_LIMIT="3/minute")
    ratelimit.init_app(app)
    return app


def test_a_token_over_its_limit_gets_429_in_the_envelope_with_retry_after(limited, client, api_token):
    headers = api_token(OFFICER, "read")
    other = api_token("officer@dartford.example", "read")
    for _ in range(5):
        assert client.get("/api/v1/me", headers=headers).status_code == 200
    refused = client.get("/api/v1/me", headers=headers)
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "too_many_requests"
    assert "5 a minute" in refused.json["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["Content-Security-Policy"]
    # Limits are per token: another user's token, and the first once the window has passed, go on.
    assert client.get("/api/v1/me", headers=other).status_code == 200
    with time_machine.travel(datetime.now(timezone.utc) + timedelta(minutes=2)):
        assert client.get("/api/v1/me", headers=headers).status_code == 200


def test_requests_without_a_valid_token_are_limited_by_address_before_401(limited, client, api_token):
    for _ in range(3):
        assert client.get("/api/v1/me", headers={"Authorization": "Bearer acc_00000000_guess"}).status_code == 401
    assert client.get("/api/v1/me").status_code == 429
    assert client.get("/api/v1/openapi.json").status_code == 429
    assert client.get("/api/v1/me", headers=api_token(OFFICER, "read")).status_code == 200  # a real token is apart


def test_the_limits_can_be_turned_off(app, client, api_token):
    from app.api import ratelimit

    app.config.update(API_RATE_LIMIT="off", API_ANONYMOUS_RATE_LIMIT="off")
    ratelimit.init_app(app)
    headers = api_token(OFFICER, "read")
    assert all(client.get("/api/v1/me", headers=headers).status_code == 200 for _ in range(30))


def test_a_malformed_limit_refuses_to_start(database_url, tmp_path):
    from app import create_app
    from app.settings import ConfigurationError

    with pytest.raises(ConfigurationError, match="ACCORD_API_RATE_LIMIT"):
        create_app("test", SQLALCHEMY_DATABASE_URI=database_url, API_RATE_LIMIT="lots please",
                   KEYRING_FILE=str(tmp_path / "k.json"), AUDIT_SIGNING_KEY_FILE=str(tmp_path / "s.pem"))


def test_the_openapi_document_says_so(client):
    document = client.get("/api/v1/openapi.json").json
    operations = [(path, method, operation) for path, item in document["paths"].items()
                  for method, operation in item.items() if method in ("get", "post", "put", "patch", "delete")]
    assert len(operations) >= 20
    for path, method, operation in operations:
        assert "429" in operation["responses"], f"{method} {path}"
        assert "Retry-After" in operation["responses"]["429"].get("headers", {}), f"{method} {path}"
        if "requestBody" in operation:
            assert "413" in operation["responses"], f"{method} {path}"


# --- size limits -----------------------------------------------------------------------------------


def test_an_oversized_json_body_is_413_in_the_envelope_and_stores_nothing(app, client, api_token, session):
    headers = api_token(OFFICER, "submit")
    before = session.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1))
    big = {"from_org": "kent-police", "to_org": "dartford-bc", "justification": "x" * (app.config["MAX_FORM_BYTES"] + 1)}
    response = client.post("/api/v1/exchanges", json=big, headers=headers)
    assert response.status_code == 413
    assert response.json["error"]["code"] == "request_entity_too_large"
    session.expire_all()
    assert session.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1)) == before


def test_an_oversized_form_is_413(app, auth, client):
    auth.sign_in("coordinator@dartford.example")
    response = client.post("/register/subgroups/new", data={"name": "x" * (app.config["MAX_FORM_BYTES"] + 1)})
    assert response.status_code == 413
    assert "text/html" in response.headers["Content-Type"]


def test_a_body_just_under_the_limit_is_read(app, client, api_token):
    body = {"from_org": "kent-police", "to_org": "dartford-bc", "justification": "x" * 5000}
    response = client.post("/api/v1/exchanges/check", json=body, headers=api_token(OFFICER, "check"))
    assert response.status_code == 422  # read and validated (the request lacks fields), not refused for size
