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


def test_claims_made_before_audiences_keep_who_was_told_and_what_they_did(empty_database_url):
    """Migration 0008 gives each existing claim the audience its e-mails and notifications name,
    so the users told of it still see it, with what they had done with it."""
    from datetime import date

    from sqlalchemy import text

    from app import create_app
    from app.auth.models import User
    from app.extensions import db
    from app.reminders import service

    app = create_app("test", SQLALCHEMY_DATABASE_URI=empty_database_url)
    stamp = "2026-12-01 09:00:00"
    with app.app_context():
        upgrade(revision="0007")
        with db.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO organisations (code, name, kind, is_public_authority, is_competent_authority, "
                "apd_paragraphs, created_at, updated_at) VALUES ('kent-cc', 'Kent County Council', 'council', "
                f"true, false, '[]', '{stamp}', '{stamp}')"))
            for user_id, email in ((1, "one@kent-cc.example"), (2, "two@kent-cc.example")):
                connection.execute(text(
                    "INSERT INTO users (id, email, name, organisation_id, password_hash, session_version, is_enabled, "
                    f"failed_logins, created_at) VALUES ({user_id}, '{email}', 'A DPO', "
                    f"(SELECT id FROM organisations), 'x', 1, true, 0, '{stamp}')"))
            for claim_id, subject in ((1, "a"), (2, "b")):
                connection.execute(text(
                    "INSERT INTO reminder_claims (id, kind, subject_type, subject_id, due_on, milestone, as_of, title, "
                    f"escalated, claimed_at) VALUES ({claim_id}, 'apd_review', 'organisation', '{subject}', "
                    f"'2027-01-01', 'before:30', '2026-12-02', 'Review {subject}', false, '{stamp}')"))
            connection.execute(text(
                "INSERT INTO outbox_messages (claim_id, to_address, status, attempts, next_attempt_at, created_at) "
                f"VALUES (1, 'dpo@kent-cc.example', 'sent', 1, '{stamp}', '{stamp}'), "
                f"(1, 'coordinator@kent-cc.example', 'sent', 1, '{stamp}', '{stamp}'), "
                f"(2, 'dpo@kent-cc.example', 'pending', 0, '{stamp}', '{stamp}')"))
            connection.execute(text(
                "INSERT INTO notifications (user_id, claim_id, created_at, acknowledged_at) VALUES "
                f"(1, 1, '{stamp}', '{stamp}'), (2, 1, '{stamp}', NULL), (1, 2, '{stamp}', NULL)"))
        upgrade()
        with db.engine.connect() as connection:
            members = connection.execute(text(
                "SELECT c.id, m.email, m.user_id FROM reminder_claims AS c JOIN reminder_audience_members AS m "
                "ON m.audience_id = c.audience_id ORDER BY c.id, m.position")).all()
        assert [tuple(row) for row in members] == [
            (1, "dpo@kent-cc.example", None), (1, "coordinator@kent-cc.example", None), (1, None, 1), (1, None, 2),
            (2, "dpo@kent-cc.example", None), (2, None, 1)]
        one, two = db.session.get(User, 1), db.session.get(User, 2)
        lists = service.list_notifications(db.session, one, date(2026, 12, 2))
        assert [n.id for n in lists.acknowledged] == [1] and [n.id for n in lists.active] == [2]
        assert [n.id for n in service.list_notifications(db.session, two, date(2026, 12, 2)).active] == [1]
        db.session.remove()

        # Migration 0011: the day's claims get a sweep, which tells their audiences.
        with db.engine.connect() as connection:
            swept = connection.execute(text(
                "SELECT c.id, s.as_of FROM reminder_claims AS c JOIN reminder_sweep_audiences AS t "
                "ON t.sweep_id = c.sweep_id AND t.audience_id = c.audience_id "
                "JOIN reminder_sweeps AS s ON s.id = t.sweep_id ORDER BY c.id")).all()
        assert [(claim, str(as_of)) for claim, as_of in swept] == [(1, "2026-12-02"), (2, "2026-12-02")]

        # And back, with the claims, e-mails and notifications still there (on SQLite, tables
        # that other rows refer to are rebuilt).
        downgrade(revision="0007")
        with db.engine.connect() as connection:
            kept = [connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                    for table in ("reminder_claims", "outbox_messages", "notifications")]
        assert kept == [2, 3, 3]
        db.engine.dispose()
