"""Fixtures shared by every test: the app on SQLite and on PostgreSQL, clients and a small register.

Every test that asks for ``app`` runs twice, once per database. Each run gets a fresh copy of a
database migrated once per session (a copied SQLite file, or a PostgreSQL database created from
a migrated template), so migrations are exercised and tests stay independent.
"""
from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import postgres

BACKENDS = ("sqlite", "postgresql")
_counter = itertools.count()


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def pg_server() -> Iterator[postgres.PostgresServer]:
    reason = postgres.unavailable_reason()
    if reason:
        if _in_ci():
            pytest.fail(f"PostgreSQL is required in CI: {reason}")
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    server = postgres.start()
    yield server
    postgres.stop(server)


def _test_app(url: str, tmp: Path, **overrides):
    from app import create_app

    return create_app("test", SQLALCHEMY_DATABASE_URI=url, KEYRING_FILE=str(tmp / "keyring.json"),
                      AUDIT_SIGNING_KEY_FILE=str(tmp / "audit-signing-key.pem"), **overrides)


def _migrate(url: str, tmp: Path, *, with_demo: bool) -> None:
    from flask_migrate import upgrade

    app = _test_app(url, tmp)
    with app.app_context():
        upgrade()
        if with_demo:
            result = app.test_cli_runner().invoke(args=["seed", "demo"])
            assert result.exit_code == 0, result.output
        from app.extensions import db

        db.session.remove()
        db.engine.dispose()


def _sqlite_template(tmp_path_factory, with_demo: bool) -> Path:
    base = tmp_path_factory.mktemp("sqlite-template")
    path = base / "template.sqlite3"
    _migrate(f"sqlite:///{path}", base, with_demo=with_demo)
    return path


def _pg_template(server, tmp_path_factory, name: str, with_demo: bool) -> str:
    postgres.admin_execute(server, f"CREATE DATABASE {name}")
    _migrate(server.url(name), tmp_path_factory.mktemp(name), with_demo=with_demo)
    return name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    return _sqlite_template(tmp_path_factory, with_demo=False)


@pytest.fixture(scope="session")
def sqlite_demo_template(tmp_path_factory) -> Path:
    """Migrated and seeded once: the demo is dated relative to today, which holds for a test session."""
    return _sqlite_template(tmp_path_factory, with_demo=True)


@pytest.fixture(scope="session")
def pg_template(pg_server, tmp_path_factory) -> str:
    return _pg_template(pg_server, tmp_path_factory, "accord_template", with_demo=False)


@pytest.fixture(scope="session")
def pg_demo_template(pg_server, tmp_path_factory) -> str:
    return _pg_template(pg_server, tmp_path_factory, "accord_demo_template", with_demo=True)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def database_url(request, backend, tmp_path) -> Iterator[str]:
    """A fresh, migrated database for one test; with the demo loaded if the test uses ``demo``."""
    with_demo = "demo" in request.fixturenames
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_demo_template" if with_demo else "sqlite_template")
        path = tmp_path / "accord.sqlite3"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    server = request.getfixturevalue("pg_server")
    template = request.getfixturevalue("pg_demo_template" if with_demo else "pg_template")
    name = f"accord_test_{os.getpid()}_{next(_counter)}"
    postgres.admin_execute(server, f"CREATE DATABASE {name} TEMPLATE {template}")
    yield server.url(name)
    postgres.admin_execute(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def app(database_url, tmp_path):
    app = _test_app(database_url, tmp_path)
    with app.app_context():
        yield app
        from app.extensions import db

        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def session(app):
    from app.extensions import db

    return db.session


@pytest.fixture
def statements(app) -> Iterator[list[str]]:
    """Every SQL statement the app's engine runs while the test does, whitespace collapsed;
    ``clear()`` it to count from a point on."""
    from sqlalchemy import event

    from app.extensions import db

    seen: list[str] = []

    def note(_connection, _cursor, statement, *_args) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", note)
    yield seen
    event.remove(db.engine, "before_cursor_execute", note)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def demo():
    """Asking for this loads the Dartford demo (as ``accord seed demo`` would) into the test's database.

    ``database_url`` sees the request and copies a template seeded once per session. Returns the
    demo users' password.
    """
    from app.registry.demo import DEMO_PASSWORD

    return DEMO_PASSWORD


class Auth:
    """Sign in and out through the real forms."""

    def __init__(self, client, password: str):
        self.client = client
        self.password = password

    def sign_in(self, email: str, password: str | None = None):
        return self.client.post("/sign-in", data={"email": email, "password": password or self.password})

    def sign_out(self):
        return self.client.post("/sign-out")


@pytest.fixture
def auth(client, demo) -> Auth:
    return Auth(client, demo)


@pytest.fixture
def api_token(app, session, demo):
    """Make an API token for a demo user: ``api_token("officer@kent-police.example", "read", "check")``."""
    from datetime import timedelta

    from app.auth import service, tokens
    from app.clock import utcnow

    def make(email: str, *scopes: str) -> dict[str, str]:
        user = service.find_user_by_email(session, email)
        issued = tokens.create_token(session, "test", user, name="test", scopes=list(scopes or ("read",)),
                                     lifetime=timedelta(days=1), now=utcnow(), pepper=app.config["TOKEN_PEPPER"])
        session.commit()
        return {"Authorization": f"Bearer {issued.plaintext}"}

    return make


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the figures tests reported through ``tests.summary.report``."""
    from tests.summary import LINES

    lines = config.stash.get(LINES, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)
