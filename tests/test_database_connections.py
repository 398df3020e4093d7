"""Pooled PostgreSQL connections: checked after idling, replaced when the server has closed them.

The server closing connections is what a restart or a failover does to a running app; here the
test closes this database's sessions with ``pg_terminate_backend``.
"""
from __future__ import annotations

import pytest

from tests import postgres
from tests.conftest import _test_app

pytestmark = pytest.mark.postgres

READER = "officer@kent-police.example"


@pytest.fixture
def backend() -> str:
    return "postgresql"


@pytest.fixture
def make_app(database_url, tmp_path, pg_server, demo):
    """An app over the test's database whose connections idle ``ping_after`` seconds before a check."""
    made = []

    def make(ping_after: int):
        app = _test_app(database_url, tmp_path, DATABASE_PING_AFTER_SECONDS=ping_after)
        made.append(app)
        return app

    yield make
    from app.extensions import db

    for app in made:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def _close_server_side(server, database_url: str) -> int:
    """End every session the server holds on this test's database, as a restart would."""
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(host=server.host, port=server.port, user=server.user, dbname="postgres",
                         autocommit=True) as conn:
        return len(conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                                (name,)).fetchall())


def _pings(monkeypatch, app) -> list[int]:
    """Count the connection checks the app's dialect makes."""
    from app.extensions import db

    with app.app_context():
        dialect = db.engine.dialect
    calls: list[int] = []
    original = dialect.do_ping

    def counted(dbapi_connection):
        calls.append(1)
        return original(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return calls


def test_a_connection_back_in_the_pool_within_the_idle_time_is_not_checked(make_app, api_token, monkeypatch):
    app = make_app(3600)
    headers = api_token(READER, "read")
    client = app.test_client()
    pings = _pings(monkeypatch, app)
    for _ in range(5):
        assert client.get("/api/v1/organisations", headers=headers).status_code == 200
    assert pings == []


def test_an_idle_connection_the_server_closed_is_replaced_before_a_request_sees_it(
        make_app, api_token, monkeypatch, pg_server, database_url):
    app = make_app(0)
    headers = api_token(READER, "read")
    client = app.test_client()
    assert client.get("/api/v1/organisations", headers=headers).status_code == 200
    pings = _pings(monkeypatch, app)

    assert _close_server_side(pg_server, database_url) >= 1
    response = client.get("/api/v1/organisations", headers=headers)

    assert response.status_code == 200, response.get_json()
    assert len(pings) >= 1


def test_a_request_that_meets_a_closed_connection_is_told_to_retry_and_the_next_one_succeeds(
        make_app, api_token, pg_server, database_url):
    app = make_app(3600)
    headers = api_token(READER, "read")
    client = app.test_client()
    assert client.get("/api/v1/organisations", headers=headers).status_code == 200

    assert _close_server_side(pg_server, database_url) >= 1
    lost = client.get("/api/v1/organisations", headers=headers)

    assert lost.status_code == 503
    assert lost.headers["Retry-After"] == "5"
    error = lost.get_json()["error"]
    assert error["code"] == "database_unavailable"
    assert "may have been saved" in error["message"]
    # The pool dropped every connection it had when it saw the first one gone.
    assert client.get("/api/v1/organisations", headers=headers).status_code == 200


def test_a_page_that_meets_a_closed_connection_says_so_in_html(make_app, pg_server, database_url, demo):
    app = make_app(3600)
    client = app.test_client()
    assert client.post("/sign-in", data={"email": READER, "password": demo}).status_code == 302

    assert _close_server_side(pg_server, database_url) >= 1
    lost = client.get("/")

    assert lost.status_code == 503
    assert lost.headers["Retry-After"] == "5"
    assert "connection to the database was lost" in lost.get_data(as_text=True)
