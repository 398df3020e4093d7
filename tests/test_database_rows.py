"""``app.database.insert_row``: one INSERT, and an object that reads as though it had been loaded."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.auth.models import ApiToken, User
from app.clock import utcnow
from app.database import insert_row
from app.decisions.models import Exchange, Resolution
from app.registry.models import Organisation

OFFICER = "officer@kent-police.example"


def new_token(user: User, prefix: str = "rowtest1") -> ApiToken:
    return ApiToken(user=user, name="insert_row test", prefix=prefix, token_hash="0" * 64,
                    expires_at=utcnow() + timedelta(days=1))


def test_one_insert_fills_the_key_the_foreign_key_and_the_defaults(session, demo, statements):
    user = session.scalar(select(User).where(User.email == OFFICER))
    statements.clear()
    token = insert_row(session, new_token(user))
    assert [s.split()[:3] for s in statements] == [["INSERT", "INTO", "api_tokens"]]
    # The key, the foreign key from the relationship, and the columns' defaults, read with nothing more.
    assert token.id and token.user_id == user.id and token.scopes == [] and token.created_at is not None
    assert token.user is user and token.last_used_at is None
    assert len(statements) == 1
    assert session.get(ApiToken, token.id) is token, "attached to the session as persistent"
    session.commit()
    session.expire_all()
    stored = session.get(ApiToken, token.id)
    assert (stored.prefix, stored.user_id, stored.scopes) == ("rowtest1", user.id, [])


def test_pending_changes_are_flushed_first(session, demo, statements):
    user = session.scalar(select(User).where(User.email == OFFICER))
    user.name = "Renamed before the insert"
    statements.clear()
    insert_row(session, new_token(user))
    assert [s.split()[0] for s in statements] == ["UPDATE", "INSERT"]


def test_an_object_already_in_a_session_is_refused(session, demo):
    user = session.scalar(select(User).where(User.email == OFFICER))
    with pytest.raises(ValueError, match="already in a session"):
        insert_row(session, user)
    token = new_token(user)
    session.add(token)
    with pytest.raises(ValueError, match="already in a session"):
        insert_row(session, token)


@pytest.mark.parametrize("build", [
    # A new organisation would never be written: the insert refuses rather than lose it.
    lambda user: User(email="new@example.org", name="New", password_hash="x",
                      organisation=Organisation(code="new-org", name="New", kind="charity")),
    # The exchange's resolution refers to the exchange: it is added after the insert, not with it.
    lambda user: Exchange(requested_by=user, resolution=Resolution(decision="approved", reasons="r",
                                                                   decided_by=user)),
])
def test_a_relationship_it_cannot_write_is_refused_and_nothing_is_written(session, demo, statements, build):
    user = session.scalar(select(User).where(User.email == OFFICER))
    obj = build(user)
    statements.clear()
    with pytest.raises(ValueError, match="insert_row cannot write"):
        insert_row(session, obj)
    assert not [s for s in statements if s.startswith("INSERT")]
