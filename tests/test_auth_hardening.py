"""Sign-in hardening: argon2id parameters, a lockout counted in the database with an audited
administrator unlock, sessions that end everywhere on sign-out and password change, and the
session cookie's attributes in production (DESIGN §8, §11)."""
from __future__ import annotations

import argon2
import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.auth import passwords
from app.auth import service as auth_service
from app.extensions import db
from tests.clients import isolated_client

OFFICER = "officer@kent-police.example"
ADMIN = "admin@dartford.example"


def user(session, email):
    session.expire_all()
    return auth_service.find_user_by_email(session, email)


def events(session, action):
    session.expire_all()
    return session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)).all()


# --- argon2id ------------------------------------------------------------------------------------


def test_passwords_are_hashed_with_argon2id_at_or_above_owasp_guidance():
    stored = passwords.hash_password("correct horse battery staple")
    parameters = argon2.extract_parameters(stored)
    assert stored.startswith("$argon2id$v=19$")
    assert parameters.type is argon2.Type.ID
    # OWASP: at least 19 MiB with 2 passes; RFC 9106's low-memory profile is 64 MiB, 3 passes, 4 lanes.
    assert parameters.memory_cost >= 64 * 1024
    assert parameters.time_cost >= 3
    assert parameters.parallelism >= 1
    assert parameters.salt_len >= 16 and parameters.hash_len >= 32
    assert passwords.verify_password(stored, "correct horse battery staple")
    assert not passwords.verify_password(stored, "correct horse battery stapler")
    assert not passwords.needs_rehash(stored)


def test_a_weaker_stored_hash_is_upgraded_at_the_next_sign_in(auth, session):
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(auth.password)
    user(session, OFFICER).password_hash = weak
    session.commit()
    assert auth.sign_in(OFFICER).status_code == 302
    upgraded = argon2.extract_parameters(user(session, OFFICER).password_hash)
    assert upgraded.memory_cost >= 64 * 1024 and upgraded.time_cost >= 3


# --- lockout and unlock ----------------------------------------------------------------------------


def test_the_account_locks_after_the_configured_failures_and_an_administrator_unlocks_it(app, auth, client, session):
    limit = app.config["LOGIN_MAX_FAILURES"]
    for attempt in range(1, limit + 1):
        assert auth.sign_in(OFFICER, "not-the-password").status_code == 401
        assert user(session, OFFICER).failed_logins == attempt
    locked = user(session, OFFICER)
    assert locked.locked_until is not None

    refused = auth.sign_in(OFFICER)  # the right password, while locked
    assert refused.status_code == 401
    assert b"locked" in refused.data
    assert events(session, "auth.sign_in_refused")[-1].subject_id == str(locked.id)

    admin = app.test_client()
    assert admin.post("/sign-in", data={"email": ADMIN, "password": auth.password}).status_code == 302
    page = admin.get(f"/users/{locked.id}").get_data(as_text=True)
    assert "Unlock the account" in page
    response = admin.post(f"/users/{locked.id}/unlock")
    assert response.status_code == 302
    unlocked = user(session, OFFICER)
    assert unlocked.locked_until is None and unlocked.failed_logins == 0
    event = events(session, "user.unlocked")[-1]
    assert event.actor == ADMIN and event.subject_id == str(locked.id) and event.details["failures"] == limit

    assert auth.sign_in(OFFICER).status_code == 302
    assert "Unlock the account" not in admin.get(f"/users/{locked.id}").get_data(as_text=True)


def test_only_an_administrator_can_unlock(app, auth, client, session):
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        auth.sign_in(OFFICER, "not-the-password")
    locked = user(session, OFFICER)
    assert auth.sign_in("coordinator@dartford.example").status_code == 302
    assert client.post(f"/users/{locked.id}/unlock").status_code == 403
    assert user(session, OFFICER).locked_until is not None
    assert events(session, "user.unlocked") == []


def test_unlocking_an_unlocked_account_changes_and_audits_nothing(auth, client, session):
    target = user(session, OFFICER)
    assert auth.sign_in(ADMIN).status_code == 302
    assert client.post(f"/users/{target.id}/unlock").status_code == 302
    assert events(session, "user.unlocked") == []


def test_failures_are_counted_by_the_database_not_by_the_worker(app, session, demo):
    """Two workers that loaded the same row both count: the increment is done in SQL."""
    from datetime import timedelta

    from app.clock import utcnow

    first = user(session, OFFICER)
    session.commit()
    # Another worker counts a failure after this one read the row.
    with db.engine.begin() as other:
        other.exec_driver_sql("UPDATE users SET failed_logins = failed_logins + 1 WHERE email = 'officer@kent-police.example'")
    assert first.failed_logins == 0  # this session still holds the stale value
    auth_service.sign_in(session, email=OFFICER, password="wrong-password", now=utcnow(), max_failures=5,
                         lockout=timedelta(minutes=15))
    session.commit()
    assert user(session, OFFICER).failed_logins == 2


# --- sessions end everywhere -----------------------------------------------------------------------


def test_a_password_change_ends_every_other_session_and_copied_cookies(app, demo):
    client = isolated_client(app)
    assert client.post("/sign-in", data={"email": OFFICER, "password": demo}).status_code == 302
    copied = client.get_cookie("session").value
    elsewhere = isolated_client(app)
    assert elsewhere.post("/sign-in", data={"email": OFFICER, "password": demo}).status_code == 302

    changed = client.post("/account/password", data={"current_password": demo,
                                                      "new_password": "a-brand-new-password"})
    assert changed.status_code == 302
    assert client.get("/home").status_code == 200  # this session carries on under the new version

    for other in (elsewhere, _with_cookie(app, copied)):
        response = other.get("/home")
        assert response.status_code == 302 and "/sign-in" in response.headers["Location"]
    assert elsewhere.post("/sign-in", data={"email": OFFICER, "password": demo}).status_code == 401
    assert elsewhere.post("/sign-in", data={"email": OFFICER, "password": "a-brand-new-password"}).status_code == 302


def test_a_copied_cookie_stops_working_after_sign_out(app, demo):
    client = isolated_client(app)
    assert client.post("/sign-in", data={"email": OFFICER, "password": demo}).status_code == 302
    copied = client.get_cookie("session").value
    thief = _with_cookie(app, copied)
    assert thief.get("/home").status_code == 200
    assert client.post("/sign-out").status_code == 302
    response = thief.get("/home")
    assert response.status_code == 302 and "/sign-in" in response.headers["Location"]


def _with_cookie(app, value):
    other = isolated_client(app)
    other.set_cookie("session", value)
    return other


# --- cookies ---------------------------------------------------------------------------------------


def set_cookie_attributes(response, name="session") -> set[str]:
    for header in response.headers.getlist("Set-Cookie"):
        if header.startswith(f"{name}="):
            return {part.strip().split("=")[0].lower() + ("=" + part.split("=", 1)[1].strip().lower()
                                                           if part.strip().lower().startswith("samesite") else "")
                    for part in header.split(";")[1:]}
    raise AssertionError(f"no {name} cookie set")


@pytest.fixture
def production_app(database_url, tmp_path, demo):
    from tests.production import production_app as make

    app = make(database_url, tmp_path)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def test_production_session_cookie_is_secure_httponly_and_samesite_lax(production_app, demo):
    import re

    client = production_app.test_client()
    https = {"base_url": "https://accord.example"}  # a Secure cookie only comes back over https
    token_page = client.get("/sign-in", **https).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', token_page).group(1)  # CSRF is on in production
    # Over https Flask-WTF also wants a same-site Referer, as a browser sends.
    response = client.post("/sign-in", data={"email": OFFICER, "password": demo, "csrf_token": csrf},
                           headers={"Referer": "https://accord.example/sign-in"}, **https)
    assert response.status_code == 302
    attributes = set_cookie_attributes(response)
    assert {"secure", "httponly", "samesite=lax", "path"} <= attributes
    assert production_app.config["REMEMBER_COOKIE_SECURE"] and production_app.config["REMEMBER_COOKIE_HTTPONLY"]


def test_outside_production_the_cookie_is_httponly_and_lax_but_may_travel_over_http(auth):
    response = auth.sign_in(OFFICER)
    attributes = set_cookie_attributes(response)
    assert {"httponly", "samesite=lax"} <= attributes
    assert "secure" not in attributes  # `make run` serves plain http on 127.0.0.1


def test_production_refuses_to_start_without_its_secrets(database_url, tmp_path):
    from app import create_app
    from app.settings import ConfigurationError

    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        create_app("production", SQLALCHEMY_DATABASE_URI=database_url, SECRET_KEY="",
                   KEYRING_FILE=str(tmp_path / "k.json"), AUDIT_SIGNING_KEY_FILE=str(tmp_path / "s.pem"))
