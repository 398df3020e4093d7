"""Migrations: empty to head and back to base on both databases, with no drift from the models."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from tests import postgres


@pytest.fixture
def empty_database_url(backend, tmp_path, request):
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    server = request.getfixturevalue("pg_server")
    postgres.admin_execute(server, "DROP DATABASE IF EXISTS accord_migrations WITH (FORCE)",
                           "CREATE DATABASE accord_migrations")
    yield server.url("accord_migrations")
    postgres.admin_execute(server, "DROP DATABASE IF EXISTS accord_migrations WITH (FORCE)")


def test_upgrade_to_head_matches_models_and_downgrades_to_base(empty_database_url, tmp_path):
    from app import create_app
    from app.extensions import db

    app = create_app("test", SQLALCHEMY_DATABASE_URI=empty_database_url)
    with app.app_context():
        upgrade()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, db.metadata)
        assert differences == [], f"models and migrations differ: {differences}"
        assert "audit_events" in inspect(db.engine).get_table_names()

        downgrade(revision="base")
        remaining = set(inspect(db.engine).get_table_names()) - {"alembic_version"}
        assert remaining == set()
        db.engine.dispose()
