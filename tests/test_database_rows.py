"""``app.database.insert_row``: one INSERT, and an object that reads as though it had been loaded."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import bindparam, exists, func, inspect, select

from app.auth.models import ApiToken, User
from app.clock import as_utc, utcnow
from app.database import NotInserted, insert_row, insert_row_reading, new_row
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


# --- on PostgreSQL, the INSERT goes straight to psycopg as SQLAlchemy would send it -----------------


@pytest.fixture
def cursors(app):
    """For each statement the engine is told of: whether SQLAlchemy ran it (it has a cursor), or
    it was sent straight on psycopg (announced without one)."""
    from sqlalchemy import event

    from app.extensions import db

    seen: list[tuple[str, bool]] = []

    def note(_connection, cursor, statement, *_args) -> None:
        seen.append((" ".join(statement.split()[:3]), cursor is not None))

    event.listen(db.engine, "before_cursor_execute", note)
    yield seen
    event.remove(db.engine, "before_cursor_execute", note)


def an_exchange(session, user: User, **changes) -> Exchange:
    """An exchange with every column but its key set, values that need converting among them: JSON
    with text beyond ASCII, a boolean, a time with its zone."""
    police, council = (session.scalar(select(Organisation.id).where(Organisation.code == code))
                       for code in ("kent-police", "kent-cc"))
    values = dict(from_organisation_id=police, to_organisation_id=council, requested_by=user,
                  requested_at=utcnow(), purpose="safeguarding_children", protocol_code=None, protocol_version=None,
                  protocol_hash=None, subgroup_code=None, bundle_hash="b" * 64, outcome="refer", is_one_off=True,
                  emergency_category=None, retention_months=6,
                  request={"purpose": "safeguarding_children", "justification": "Élan — 50 % «vrai»"},
                  decision={"outcome": "refer", "findings": [{"rule": "org_active", "evidence": {"n": 1.5}}]})
    return Exchange(**{**values, **changes})


def test_an_insert_sent_straight_stores_what_sqlalchemys_path_would(session, demo, backend, cursors):
    user = session.scalar(select(User).where(User.email == OFFICER))
    new = an_exchange(session, user)
    cursors.clear()
    exchange, also = insert_row_reading(session, new, (func.upper("head"),))
    assert also == ("HEAD",), "expressions returned with the row come back converted, as SQLAlchemy's would"
    assert cursors == [("INSERT INTO exchanges", backend != "postgresql")], \
        "on PostgreSQL the INSERT is sent past SQLAlchemy's execution path"
    sent = {key: getattr(exchange, key) for key in ("request", "decision", "is_one_off", "requested_by_id")}
    sent_at = exchange.requested_at
    session.commit()
    session.expire_all()
    stored = session.get(Exchange, exchange.id)
    assert {key: getattr(stored, key) for key in sent} == sent
    assert as_utc(stored.requested_at) == sent_at  # SQLite keeps no zone; PostgreSQL's comes back


@pytest.mark.parametrize("holds", [True, False])
def test_an_insert_with_a_condition_writes_only_where_it_holds(session, demo, cursors, holds):
    """``only_if``: the database checks the condition as it inserts; where it does not hold,
    nothing is written, the session goes on, and the object stays new."""
    user = session.scalar(select(User).where(User.email == OFFICER))
    cursors.clear()
    condition = exists().where(User.email == bindparam("expected_email"))
    insert_row(session, new_token(user, prefix="rowtest0"))
    [unconditional] = cursors
    token = new_token(user)
    cursors.clear()
    if holds:
        inserted, extra = insert_row_reading(session, token, (func.lower("A"),), only_if=condition,
                                             only_if_values={"expected_email": OFFICER})
        assert inserted is token and token.id and extra == ("a",)
    else:
        with pytest.raises(NotInserted):
            insert_row_reading(session, token, (func.lower("A"),), only_if=condition,
                               only_if_values={"expected_email": "someone-else@example.org"})
        assert inspect(token).transient
    assert cursors == [unconditional], "sent the way it would be without a condition"
    assert session.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.prefix == "rowtest1")) == holds
    session.commit()


def test_an_insert_with_a_python_default_to_work_out_takes_sqlalchemys_path(session, demo, cursors):
    user = session.scalar(select(User).where(User.email == OFFICER))
    cursors.clear()
    token = insert_row(session, new_token(user))  # created_at and scopes: defaults made in Python
    assert cursors == [("INSERT INTO api_tokens", True)]
    assert token.created_at is not None and token.scopes == []


def test_an_insert_refused_by_the_database_raises_sqlalchemys_error_and_the_session_goes_on(session, demo):
    from sqlalchemy.exc import IntegrityError

    user = session.scalar(select(User).where(User.email == OFFICER))
    with pytest.raises(IntegrityError):
        insert_row(session, an_exchange(session, user, to_organisation_id=987_654))  # no such organisation
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Exchange)) == 0
    kept = insert_row(session, an_exchange(session, user))
    session.commit()
    assert session.scalar(select(func.count()).select_from(Exchange)) == 1 and kept.id


# --- stage_insert and commit: the last row goes with the COMMIT ------------------------------------


def staged_event(session, seq: int = 1, prev_hash: str = "0" * 64):
    """The audit table and a row of it with every column set, as the chain's append stages it (its
    values need not chain here: these tests are about how the row is written, not what it says)."""
    from app.audit.models import AuditEvent

    return AuditEvent.__table__, dict(
        seq=seq, occurred_at=utcnow(), action="test.staged", actor="test", actor_user_id=None, organisation=None,
        subject_type=None, subject_id=None, details={}, prev_hash=prev_hash, hash=f"{seq:064x}", mac="0" * 64,
        protocol=None, subgroup=None, outcome=None, counterparty=None)


def stored_actions(session):
    from app.audit.models import AuditEvent

    session.expire_all()
    return session.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)).all()


def test_a_staged_row_goes_in_the_commits_round_trip_on_postgresql(session, backend, statements):
    from sqlalchemy import event

    from app import database
    from app.extensions import db

    piped: list[tuple[str, bool]] = []

    def note(connection, _cursor, statement, *_args) -> None:
        driver = connection.connection.driver_connection
        piped.append((statement.split()[2] if statement.startswith("INSERT") else statement,
                      getattr(driver, "_pipeline", None) is not None))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        session.add(Organisation(code="staged-org", name="Staged", kind="voluntary"))
        session.flush()
        statements.clear()
        database.stage_insert(session, *staged_event(session))
        if backend == "postgresql":
            assert statements == [], "nothing is sent before the commit"
        database.commit(session)
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    assert stored_actions(session) == ["test.staged"]
    assert session.scalar(select(Organisation.name).where(Organisation.code == "staged-org")) == "Staged"
    inserts = [(table, in_pipeline) for table, in_pipeline in piped if table == "audit_events"]
    assert inserts == [("audit_events", backend == "postgresql")]


def test_a_plain_commit_still_writes_staged_rows_and_a_rollback_drops_them(session):
    from app import database

    database.stage_insert(session, *staged_event(session))
    session.rollback()
    assert stored_actions(session) == []
    database.stage_insert(session, *staged_event(session))
    session.commit()
    assert stored_actions(session) == ["test.staged"]


def test_a_refused_staged_row_fails_the_commit_and_keeps_nothing(session, backend):
    from sqlalchemy.exc import IntegrityError

    from app import database

    database.stage_insert(session, *staged_event(session))
    database.commit(session)
    session.add(Organisation(code="never-stored", name="Never", kind="voluntary"))
    session.flush()
    duplicate = staged_event(session, seq=2)  # its prev_hash is the first row's: UNIQUE refuses it
    if backend == "sqlite":
        with pytest.raises(IntegrityError):
            database.stage_insert(session, *duplicate)  # SQLite writes at once
        session.rollback()
    else:
        database.stage_insert(session, *duplicate)
        with pytest.raises(IntegrityError):
            database.commit(session)
    assert stored_actions(session) == ["test.staged"]
    assert session.scalar(select(Organisation.id).where(Organisation.code == "never-stored")) is None
    database.stage_insert(session, *staged_event(session, seq=2, prev_hash="1" * 64))
    database.commit(session)
    assert stored_actions(session) == ["test.staged", "test.staged"], "the session works on after the failure"


def test_staging_refuses_a_row_with_a_column_missing_or_unknown_and_stages_nothing(session, backend, statements):
    from app import database

    table, row = staged_event(session)
    statements.clear()
    with pytest.raises(ValueError, match="every column is given: audit_events lacks mac"):
        database.stage_insert(session, table, {key: value for key, value in row.items() if key != "mac"})
    with pytest.raises(ValueError, match="audit_events has no column macs"):
        database.stage_insert(session, table, {**row, "macs": "0" * 64})
    database.commit(session)
    assert not [s for s in statements if s.startswith("INSERT")]
    assert stored_actions(session) == []


def test_new_row_makes_an_object_insert_row_writes_as_the_constructors_would_be(session, demo):
    user = session.scalar(select(User).where(User.email == OFFICER))
    token = insert_row(session, new_row(ApiToken, user_id=user.id, name="new_row test", prefix="newrow01",
                                        token_hash="0" * 64, expires_at=utcnow() + timedelta(days=1),
                                        revoked_at=None))
    session.commit()
    session.expire_all()
    stored = session.get(ApiToken, token.id)
    assert (stored.name, stored.prefix, stored.user_id, stored.scopes, stored.revoked_at) == (
        "new_row test", "newrow01", user.id, [], None)
    assert stored.user.email == OFFICER


@pytest.mark.parametrize(("values", "named"), [
    ({"prefix": "x", "surprise": 1}, "surprise"),
    ({"prefix": "x", "user": object()}, "user"),  # a relationship, only ever as None
])
def test_new_row_refuses_what_is_not_a_column(values, named):
    with pytest.raises(TypeError, match=named):
        new_row(ApiToken, **values)
