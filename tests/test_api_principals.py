"""API principals kept in memory between requests, and the access revision that retires them.

A token seen before is authenticated without loading it again; every change to who may use the
API, and as whom, moves the access revision in its own transaction (database triggers), so that
change holds from the very next request, in any worker. The clients here run each request in an
app context of its own, as gunicorn does, so nothing but the in-memory principal carries over.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, func, inspect, select, text, update
from sqlalchemy.orm import Session as SessionBase, object_session

from app.auth import service as auth_service
from app.auth import tokens
from app.auth.models import AccessRevision, ApiToken, User, UserRole
from app.clock import utcnow
from app.decisions.models import Exchange
from app.registry.models import Organisation
from tests.clients import isolated_client
from tests.world import ALLOWED as PROTOCOL_REQUEST

OFFICER = "officer@kent-police.example"
ALLOWED = {**PROTOCOL_REQUEST, "from_org": "kent-police", "to_org": "dartford-bc"}


def access_revision(session) -> int:
    session.expire_all()
    return session.scalar(select(AccessRevision.revision).where(AccessRevision.id == 1))


def officer(session) -> User:
    session.expire_all()
    return auth_service.find_user_by_email(session, OFFICER)


@pytest.fixture
def api(app):
    return isolated_client(app)


@pytest.fixture
def seen(api, api_token, session, statements):
    """An officer's token, used once so that its principal is in memory; ``statements`` then
    counts from there."""
    headers = api_token(OFFICER, "read", "check", "submit")
    assert api.get("/api/v1/me", headers=headers).status_code == 200
    session.remove()
    statements.clear()
    return headers


def test_a_token_seen_before_costs_one_small_statement(api, seen, statements):
    me = api.get("/api/v1/me", headers=seen)
    assert me.status_code == 200 and me.json["email"] == OFFICER and me.json["organisation"] == "kent-police"
    assert "officer" in me.json["roles"]
    assert not [s for s in statements if "api_tokens" in s or "FROM users" in s], statements
    assert [s for s in statements if "access_revision" in s and "register_revision" in s]


def revoke(session):
    token = session.scalars(select(ApiToken).where(ApiToken.user_id == officer(session).id)).one()
    tokens.revoke(session, officer(session), token, now=utcnow())


def disable(session):
    user = officer(session)
    user.is_enabled = False
    session.flush()


def expire_now(session):
    session.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))


@pytest.mark.parametrize("change", [revoke, disable, expire_now])
def test_a_token_revoked_disabled_or_expired_is_refused_on_the_next_request(api, seen, session, change):
    before = access_revision(session)
    change(session)
    session.commit()
    assert access_revision(session) > before
    response = api.get("/api/v1/me", headers=seen)
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthenticated"


def exchanges(session) -> int:
    session.expire_all()
    count = session.scalar(select(func.count()).select_from(Exchange))
    session.commit()  # and free the database for the next request (SQLite's writers wait for readers)
    return count


def test_a_submission_spends_no_statement_on_the_token_its_insert_confirms_the_revisions(api, seen, session,
                                                                                         statements):
    before = exchanges(session)
    statements.clear()
    assert api.post("/api/v1/exchanges", json=ALLOWED, headers=seen).status_code == 201
    revisions = [s for s in statements if "register_revision" in s]
    assert len(revisions) == 1 and revisions[0].startswith("INSERT INTO exchanges"), statements
    assert "access_revision" in revisions[0]
    assert not [s for s in statements if "api_tokens" in s or "FROM users" in s], statements
    assert exchanges(session) == before + 1


@pytest.mark.parametrize("change", [revoke, disable, expire_now])
def test_a_token_revoked_disabled_or_expired_records_nothing_on_the_next_submission(api, seen, session, change,
                                                                                    statements):
    before = exchanges(session)
    change(session)
    session.commit()
    statements.clear()
    response = api.post("/api/v1/exchanges", json=ALLOWED, headers=seen)
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthenticated"
    assert exchanges(session) == before
    # The INSERT found the access revision moved and wrote nothing; the token was then read again.
    inserts = [i for i, s in enumerate(statements) if s.startswith("INSERT INTO exchanges")]
    reads = [i for i, s in enumerate(statements) if s.startswith("SELECT") and "access_revision" in s]
    assert len(inserts) == 1 and reads and reads[0] > inserts[0], statements


def test_roles_granted_hold_from_the_next_submission(api, seen, session):
    """A refusal on what the worker last read is not final: the request is decided again on what
    the database holds."""
    auth_service.set_roles(session, "test", officer(session), ["auditor"])
    session.commit()
    assert api.get("/api/v1/me", headers=seen).json["roles"] == ["auditor"]  # kept in memory as an auditor
    assert api.post("/api/v1/exchanges", json=ALLOWED, headers=seen).status_code == 403
    auth_service.set_roles(session, "test", officer(session), ["officer"])
    session.commit()
    response = api.post("/api/v1/exchanges", json=ALLOWED, headers=seen)
    assert response.status_code == 201, response.json


def test_a_user_enabled_again_may_submit_at_once(api, seen, session):
    disable(session)
    session.commit()
    assert api.get("/api/v1/me", headers=seen).status_code == 401  # kept in memory as disabled
    user = officer(session)
    user.is_enabled = True
    session.commit()
    response = api.post("/api/v1/exchanges", json=ALLOWED, headers=seen)
    assert response.status_code == 201, response.json


def test_a_register_changed_since_the_last_read_is_read_and_the_exchange_decided_again(api, seen, session,
                                                                                       statements):
    before = exchanges(session)
    session.execute(text("UPDATE register_revision SET revision = revision + 1"))
    session.commit()
    statements.clear()
    response = api.post("/api/v1/exchanges", json=ALLOWED, headers=seen)
    assert response.status_code == 201, response.json
    assert exchanges(session) == before + 1
    kinds = [" ".join(s.split()[:3]) if s.startswith("INSERT") else "revisions" for s in statements
             if s.startswith("INSERT INTO exchanges") or (s.startswith("SELECT") and "register_revision" in s)]
    assert kinds == ["INSERT INTO exchanges", "revisions", "INSERT INTO exchanges"], statements
    from app.audit import service as audit

    assert audit.verify_current(session).ok


EMERGENCY = {"from_org": "kent-police", "to_org": "bluewater", "purpose": "crime_prevention",
             "data_categories": ["identity"], "subject_types": ["offender"], "transfer_method": "accord_transfer",
             "lawful_basis": "e", "one_off": True, "retention_months": 6,
             "emergency": {"category": "risk_to_life", "justification": "A threat to kill, made today"}}


@pytest.mark.parametrize("body", [ALLOWED, EMERGENCY], ids=["protocol", "emergency"])
def test_a_submission_reads_the_principals_copy_of_the_user_and_never_takes_it_into_its_session(
        api, seen, session, body):
    principal = next(p for p in tokens._principals.values() if p.user.email == OFFICER)
    attached = []

    def note(_session, instance) -> None:
        attached.append(instance)

    event.listen(SessionBase, "detached_to_persistent", note)
    try:
        response = api.post("/api/v1/exchanges", json=body, headers=seen)
    finally:
        event.remove(SessionBase, "detached_to_persistent", note)
    assert response.status_code == 201, response.json
    assert response.json["requested_by"] == OFFICER
    shared = {id(principal.user), id(principal.user.organisation), *(id(row) for row in principal.user.role_rows)}
    assert not [obj for obj in attached if id(obj) in shared], "the principal's copy was taken into a session"
    assert inspect(principal.user).detached and object_session(principal.user) is None
    assert not inspect(principal.user.organisation).session_id
    stored = session.get(Exchange, response.json["id"])
    assert stored.requested_by_id == principal.user.id
    assert (stored.emergency_review is not None) == ("emergency" in body)


def test_roles_withdrawn_hold_from_the_next_request(api, seen, session):
    assert api.post("/api/v1/exchanges/check", json=ALLOWED, headers=seen).status_code == 200
    auth_service.set_roles(session, "test", officer(session), ["auditor"])
    session.commit()
    response = api.post("/api/v1/exchanges/check", json=ALLOWED, headers=seen)
    assert response.status_code == 403, response.json
    assert api.get("/api/v1/me", headers=seen).json["roles"] == ["auditor"]


def test_an_organisation_renamed_is_seen_by_the_next_request(api, seen, session):
    organisation = session.scalar(select(Organisation).where(Organisation.code == "kent-police"))
    organisation.name = "Kent Police (renamed)"
    session.commit()
    response = api.post("/api/v1/exchanges", json={**ALLOWED, "from_org": "kent-cc"}, headers=seen)
    assert response.status_code == 422
    assert "Kent Police (renamed)" in str(response.json["error"]["fields"])


def test_a_request_never_changes_the_principal_kept_in_memory(api, seen, session):
    """Each request works on its own copy of the user: what one request does to it (here the
    rename a careless service might make) is not what the next request starts from."""
    principal = next(p for p in tokens._principals.values() if p.user.email == OFFICER)
    response = api.post("/api/v1/exchanges", json=ALLOWED, headers=seen)
    assert response.status_code == 201
    assert principal.user.email == OFFICER
    assert principal.user.organisation.code == "kent-police"
    assert sorted(principal.user.roles) == sorted(officer(session).roles)


# --- the triggers ----------------------------------------------------------------------------------


def _role(session):
    session.add(UserRole(user_id=officer(session).id, role="dpo"))


def _role_removed(session):
    session.execute(UserRole.__table__.delete().where(UserRole.user_id == officer(session).id))


def _email(session):
    officer(session).email = "renamed@kent-police.example"


def _organisation_moved(session):
    user = officer(session)
    user.organisation_id = session.scalar(select(Organisation.id).where(Organisation.code == "dartford-bc"))


def _token_deleted(session):
    session.execute(ApiToken.__table__.delete())


def _last_used(session):
    session.execute(update(ApiToken).values(last_used_at=utcnow()))


def _sign_in_bookkeeping(session):
    user = officer(session)
    user.failed_logins, user.last_login_at, user.locked_until = 3, utcnow(), None


def _password(session):
    officer(session).password_hash = "argon2-not-a-real-hash"


@pytest.mark.parametrize(("change", "moves"), [
    (_role, True), (_role_removed, True), (_email, True), (_organisation_moved, True), (_token_deleted, True),
    (_last_used, False), (_sign_in_bookkeeping, False), (_password, False),
])
def test_the_access_revision_moves_with_what_a_principal_is_built_from(app, seen, session, change, moves):
    before = access_revision(session)
    change(session)
    session.commit()
    assert (access_revision(session) > before) is moves


def test_a_rolled_back_change_leaves_the_access_revision_where_it_was(app, seen, session):
    before = access_revision(session)
    disable(session)
    session.rollback()
    assert access_revision(session) == before


def test_the_access_revision_row_comes_back_if_it_was_removed(app, session, demo):
    session.execute(text("DELETE FROM access_revision"))
    session.commit()
    _email(session)
    session.commit()
    assert access_revision(session) == 1
