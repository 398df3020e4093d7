"""How transactions end on PostgreSQL: reads with COMMIT, so psycopg keeps its prepared statements.

psycopg forgets every statement a connection has prepared when a transaction on it rolls back,
and prepares a statement only from its ``prepare_threshold``-th execution; dry-run checks and
reads never commit, so before these settings most of the hot statements were parsed and planned
anew on every request.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event, select, text

from app.database import end_reads_with_commit
from app.registry.models import Organisation
from tests.world import ALLOWED as PROTOCOL_REQUEST

OFFICER = "officer@kent-police.example"
ALLOWED = {**PROTOCOL_REQUEST, "from_org": "kent-police", "to_org": "dartford-bc"}


#: Prepared statements, and their loss on rollback, are psycopg's: these run on PostgreSQL only.
on_postgresql = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def prepared_here(session) -> int:
    """Statements prepared on the session's connection (PostgreSQL's own view of it)."""
    return session.scalar(text("SELECT count(*) FROM pg_prepared_statements"))


@on_postgresql
def test_statements_are_prepared_on_first_execution(app, session):
    assert app.config["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]["prepare_threshold"] == 0
    session.execute(select(Organisation.id).where(Organisation.code == "none"))
    assert prepared_here(session) >= 1


@on_postgresql
def test_a_transaction_that_only_read_ends_with_commit_and_keeps_what_was_prepared(session, demo):
    session.execute(select(Organisation.id).where(Organisation.code == "kent-police"))
    before = prepared_here(session)
    end_reads_with_commit(session())
    assert not session().in_transaction()
    assert prepared_here(session) >= before > 0


def test_a_transaction_that_wrote_is_left_to_roll_back(session, demo, backend):
    session.add(Organisation(code="left-uncommitted", name="Left", kind="voluntary"))
    session.flush()
    end_reads_with_commit(session())
    assert session().in_transaction(), "nothing commits a write but the code that made it"
    session.rollback()
    assert session.scalar(select(Organisation.id).where(Organisation.code == "left-uncommitted")) is None


@on_postgresql
def test_a_write_made_outside_the_orm_is_noticed_too(session, demo):
    """PostgreSQL, not the ORM, says whether the transaction wrote: a Core UPDATE on the
    session's connection is left to roll back like a flushed object."""
    from sqlalchemy import update

    session.connection().execute(update(Organisation).where(Organisation.code == "kent-police")
                                 .values(name="Renamed outside the ORM"))
    end_reads_with_commit(session())
    assert session().in_transaction()
    session.rollback()
    assert session.scalar(select(Organisation.name).where(Organisation.code == "kent-police")) != \
        "Renamed outside the ORM"


@on_postgresql
def test_a_transaction_that_ran_nothing_ends_without_a_round_trip(app, session, demo):
    from app.extensions import db

    session.remove()
    with round_trips(db.engine) as trips:
        session.connection()
        end_reads_with_commit(session())
        assert not session().in_transaction()
        session.remove()
    assert trips == [0]


@on_postgresql
def test_a_dry_run_check_leaves_the_connections_prepared_statements_in_place(app, client, api_token, demo):
    from app.extensions import db

    headers = api_token(OFFICER, "check")
    assert client.post("/api/v1/exchanges/check", json=ALLOWED, headers=headers).status_code == 200
    db.session.remove()
    assert client.post("/api/v1/exchanges/check", json=ALLOWED, headers=headers).status_code == 200
    db.session.remove()
    # The pool hands the one connection back; what the checks prepared is still there.
    statements = db.session.scalars(text("SELECT statement FROM pg_prepared_statements")).all()
    assert any("access_revision" in s for s in statements), statements


# --- round trips ------------------------------------------------------------------------------------


@contextmanager
def round_trips(engine) -> Iterator[list[int]]:
    """Count the round trips to PostgreSQL while the block runs, from libpq's protocol trace:
    each ReadyForQuery the server sends ends one (a simple query, or a Sync)."""
    counted: list[int] = []
    traced = []
    with tempfile.TemporaryFile("w+") as trace:

        def follow(dbapi_connection, _record, _proxy) -> None:
            dbapi_connection.pgconn.trace(trace.fileno())
            traced.append(dbapi_connection)

        event.listen(engine, "checkout", follow)
        try:
            yield counted
        finally:
            event.remove(engine, "checkout", follow)
            for connection in traced:
                if not connection.closed:
                    connection.pgconn.untrace()
        trace.seek(0)
        counted.append(sum(1 for line in trace if "\tB\t" in line and "\tReadyForQuery" in line))


@on_postgresql
def test_a_recorded_exchange_is_three_round_trips(app, client, api_token, demo):
    from app.extensions import db

    headers = api_token(OFFICER, "submit")
    for _ in range(2):  # the token's first use loads it; psycopg prepares each statement once, apart
        assert client.post("/api/v1/exchanges", json=ALLOWED, headers=headers).status_code == 201
    with round_trips(db.engine) as trips:
        assert client.post("/api/v1/exchanges", json=ALLOWED, headers=headers).status_code == 201
    # BEGIN; the exchange's INSERT, which confirms the register and access revisions the token's
    # check took as read, takes the audit chain's lock and returns its head; the audit event's
    # INSERT with the COMMIT.
    assert trips == [3]
