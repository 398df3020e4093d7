"""Database engine settings that must hold on every connection.

SQLite is the embedded default: WAL so readers never wait for the writer, foreign keys on, a
busy timeout instead of instant "database is locked" errors, and ``BEGIN IMMEDIATE`` for every
transaction that may write, so two writers can never both read the audit chain head (pysqlite's
default deferred transactions let them; DESIGN §11). Requests that only read (GET, HEAD) begin
deferred so they do not queue behind writers.
"""
from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, request
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.extensions import db

#: Set for the duration of a read-only request so its SQLite transaction begins deferred.
_read_only: contextvars.ContextVar[bool] = contextvars.ContextVar("accord_read_only", default=False)

SQLITE_BUSY_TIMEOUT_MS = 30_000


@contextmanager
def read_only() -> Iterator[None]:
    token = _read_only.set(True)
    try:
        yield
    finally:
        _read_only.reset(token)


@contextmanager
def writing() -> Iterator[None]:
    """Begin SQLite transactions with BEGIN IMMEDIATE even in a GET, for the rare read that must
    record something (a download's audit event): a deferred transaction that later writes can
    fail at once with "database is locked" instead of waiting its turn."""
    token = _read_only.set(False)
    try:
        yield
    finally:
        _read_only.reset(token)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take transaction control from pysqlite so the "begin" hook below decides how to begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN" if _read_only.get() else "BEGIN IMMEDIATE")


def init_app(app: Flask) -> None:
    """Bind the engine hooks and mark read-only requests."""
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)

    @app.before_request
    def _mark_read_only() -> None:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            _read_only.set(True)
        else:
            _read_only.set(False)

    @app.teardown_request
    def _clear_read_only(_exc: BaseException | None) -> None:
        _read_only.set(False)
