"""Database engine settings that must hold on every connection.

SQLite is the embedded default: WAL so readers never wait for the writer, foreign keys on, a
busy timeout instead of instant "database is locked" errors, and ``BEGIN IMMEDIATE`` for every
transaction that may write, so two writers can never both read the audit chain head (pysqlite's
default deferred transactions let them; DESIGN §11). Requests that only read (GET, HEAD) begin
deferred so they do not queue behind writers.

PostgreSQL: a pooled connection that has sat idle for ``DATABASE_PING_AFTER_SECONDS`` is pinged
before it is handed out, and replaced if the server has gone (restarted, failed over, or closed it
as idle). A connection returned to the pool within that time is handed out as it is: under load
that is every one of them, and a ping on every checkout (``pool_pre_ping``) cost each request a
round trip.
"""
from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, request
from sqlalchemy import event, exc
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


#: Where a pooled connection notes when it was last returned (``time.monotonic()``).
_RETURNED_AT = "accord_returned_at"


def ping_idle_connections(engine: Engine, after_seconds: float) -> None:
    """Check a pooled connection is alive before reuse if it was idle longer than ``after_seconds``.

    The pool's documented way to refuse a connection: ``DisconnectionError`` from a checkout
    listener makes it discard that connection and try another (or a new one), up to three times.
    """

    def _note_time(_dbapi_connection, record) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    # A new connection is as good as one just returned.
    event.listen(engine, "connect", _note_time)
    event.listen(engine, "checkin", _note_time)

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection, record, _proxy) -> None:
        returned = record.info.get(_RETURNED_AT)
        if returned is not None and time.monotonic() - returned < after_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise exc.DisconnectionError(f"A pooled connection failed its check: {error}") from error


def init_app(app: Flask) -> None:
    """Bind the engine hooks and mark read-only requests."""
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)
        elif not app.config["SQLALCHEMY_ENGINE_OPTIONS"].get("pool_pre_ping"):
            ping_idle_connections(engine, app.config["DATABASE_PING_AFTER_SECONDS"])

    @app.before_request
    def _mark_read_only() -> None:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            _read_only.set(True)
        else:
            _read_only.set(False)

    @app.teardown_request
    def _clear_read_only(_exc: BaseException | None) -> None:
        _read_only.set(False)
