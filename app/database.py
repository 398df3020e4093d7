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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from flask import Flask, request
from sqlalchemy import ColumnElement, Insert, Select, Table, bindparam, event, exc, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import MANYTOONE, Session, make_transient_to_detached

from app.extensions import db

#: Set for the duration of a read-only request so its SQLite transaction begins deferred.
_read_only: contextvars.ContextVar[bool] = contextvars.ContextVar("accord_read_only", default=False)

SQLITE_BUSY_TIMEOUT_MS = 30_000

Model = TypeVar("Model")


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


def insert_row(session: Session, obj: Model) -> Model:
    """Write the new ``obj`` with one Core INSERT and attach it to ``session`` as persistent.

    For the rows every submission writes (the exchange and its audit event): for one object the
    unit of work spent as much CPU deciding what to flush as the INSERT took to run. Whatever the
    session already holds unflushed is flushed first, so the rows this one refers to exist. A
    many-to-one relationship set on ``obj`` fills its foreign key, as a flush would; columns left
    unset take their defaults and come back with RETURNING, with the primary key, so reading the
    object afterwards queries nothing. Any other relationship must be unset or None: ``obj`` is
    attached as though loaded (SQLAlchemy's ``make_transient_to_detached``), and a related object
    that is new would never be written. On PostgreSQL the INSERT goes straight to psycopg
    (``_DriverInsert``) unless a column left unset has a default made in Python.
    """
    return insert_row_reading(session, obj)[0]


def new_row(model: type[Model], **values: Any) -> Model:
    """A new ``model`` object for ``insert_row``, made as a load makes one: ``values`` (column
    attributes, and relationships given as None: known to have none) go straight into its
    ``__dict__``, without the attribute events of the constructor, which ``insert_row`` has no
    use for (the exchange's twenty took 20 us of CPU, against 1). Unknown names are refused, as
    the constructor refuses them."""
    mapper = inspect(model)
    unknown = [name for name, value in values.items()
               if name not in _column_attribute_names(mapper)
               and not (value is None and name in mapper.relationships)]
    if unknown:
        raise TypeError(f"{', '.join(sorted(unknown))}: not a column of {model.__name__} (or a relationship "
                        "given other than as None)")
    obj = mapper.class_manager.new_instance()
    obj.__dict__.update(values)
    return obj


@cache
def _column_attribute_names(mapper) -> frozenset[str]:
    return frozenset(attribute.key for attribute in mapper.column_attrs)


class NotInserted(Exception):
    """``insert_row_reading``'s condition (``only_if``) did not hold: nothing was written."""


def insert_row_reading(session: Session, obj: Model, also: tuple[ColumnElement, ...] = (), *,
                       only_if: ColumnElement[bool] | None = None, only_if_values: dict | None = None
                       ) -> tuple[Model, tuple]:
    """``insert_row``, with the INSERT also returning the values of ``also``: expressions the
    database works out in the same round trip (the audit chain's head, read under its lock).

    ``only_if``: a condition the database checks as it inserts (``INSERT ... SELECT ... WHERE``),
    its parameters in ``only_if_values``, built once by the caller like ``also``; when it does
    not hold, nothing is written, ``also`` is not worked out, and ``NotInserted`` is raised."""
    state = inspect(obj)
    if state.key is not None or state.session_id is not None:
        raise ValueError(f"{obj!r} is already in a session: insert_row writes new objects only")
    session.flush()
    # A staged row is no longer the transaction's last write, and ``also`` may read its table.
    write_staged(session)
    mapper, values, filled = state.mapper, _column_values(state), {}
    for relationship in mapper.relationships:
        related = state.dict.get(relationship.key)
        if related is None:
            continue
        related_state = inspect(related)
        if relationship.direction is not MANYTOONE or related_state.key is None:
            raise ValueError(f"insert_row cannot write {type(obj).__name__}.{relationship.key}: "
                             "set it after the insert, or add the object to the session instead")
        for local, remote in relationship.local_remote_pairs:
            filled[local.key] = getattr(related, related_state.mapper.get_property_by_column(remote).key)
    values.update(filled)
    table = mapper.local_table
    missing = tuple(column.key for column in table.columns if column.key not in values)
    connection = session.connection()
    keys = frozenset(values)
    parameters = values if only_if is None else {**values, **(only_if_values or {})}
    driver_insert = _driver_insert(connection.dialect, table, keys, missing, also, only_if)
    if driver_insert is not None:
        row = driver_insert.run(connection, parameters)
    else:
        result = connection.execute(_insert(table, missing, also, only_if, keys), parameters)
        row = result.one_or_none() if missing or also or only_if is not None else ()
    if row is None:
        raise NotInserted(f"{table.name}: the condition of the INSERT did not hold")
    # The foreign keys filled above and what came back, put in place as a load would (without
    # the attribute events, spent for nothing on an object about to be marked as loaded): on
    # PostgreSQL this runs holding the chain's lock when the INSERT took it.
    loaded, attributes = state.dict, _attribute_keys(mapper)
    for key, value in (*filled.items(), *zip(missing, row)):
        loaded.setdefault(attributes[key], value)
    make_transient_to_detached(obj)
    session.add(obj)
    return obj, tuple(row[len(missing):])


@cache
def _attribute_keys(mapper) -> dict[str, str]:
    """The mapped attribute of each of the table's columns, by column key."""
    return {column.key: mapper.get_property_by_column(column).key for column in mapper.local_table.columns}


def _column_values(state) -> dict:
    """The column values set on a new object, by column key."""
    return {attribute.columns[0].key: state.dict[attribute.key] for attribute in state.mapper.column_attrs
            if attribute.key in state.dict}


@cache
def _insert(table: Table, returning: tuple[str, ...], also: tuple[ColumnElement, ...] = (),
            only_if: ColumnElement[bool] | None = None, keys: frozenset[str] = frozenset()) -> Insert:
    """Built once per table, set of columns read back, extra expressions, condition and set of
    columns given: building a statement, and working out its cache key, costs more than running a
    small one. With ``only_if``, the row's values (``keys``, one parameter each) are selected where
    the condition holds; without it, ``keys`` changes nothing."""
    statement = table.insert()
    if only_if is not None:
        given = sorted(keys)
        statement = statement.from_select(given, select(*(bindparam(key, type_=table.columns[key].type)
                                                          for key in given)).where(only_if))
    columns = (*(table.columns[key] for key in returning), *also)
    return statement.returning(*columns) if columns else statement


@dataclass(frozen=True)
class _DriverInsert:
    """An INSERT as SQLAlchemy would send it to psycopg, compiled once, to send it straight.

    For the two rows every submission writes: SQLAlchemy's execution path cost about as much CPU
    again as psycopg's for each, and the audit event's is spent holding the chain's lock. The
    values go through the same conversions (the dialect's bind processors: JSON wrapped for
    psycopg, the audit details in their canonical text), and what RETURNING reads through the
    result processors, as SQLAlchemy's path would.
    """

    sql: str
    #: Binds that carry their own value (the literals of expressions returned with the row).
    fixed: dict[str, Any]
    #: (bind, conversion) for every bind whose type converts its value.
    conversions: tuple[tuple[str, Callable[[Any], Any]], ...]
    #: A conversion, or None, for each value RETURNING reads.
    results: tuple[Callable[[Any], Any] | None, ...]

    def parameters(self, values: dict) -> dict:
        parameters = {**self.fixed, **values}
        for name, convert in self.conversions:
            parameters[name] = convert(parameters[name])
        return parameters

    def send(self, connection, driver, values: dict):
        """Send the INSERT on ``driver``, ``connection``'s psycopg connection (its errors left to
        the caller's ``_driver``); the cursor."""
        parameters = self.parameters(values)
        _announce(connection, self.sql, parameters)
        return driver.execute(self.sql, parameters)

    def run(self, connection, values: dict) -> tuple | None:
        """Send the INSERT on ``connection``; the row RETURNING reads, if it reads anything, or
        None if it inserted nothing (its condition did not hold)."""
        with _driver(connection, self.sql) as driver:
            cursor = self.send(connection, driver, values)
            if not self.results:
                return ()
            row = cursor.fetchone()
        if row is None:
            return None
        return tuple(value if convert is None else convert(value) for convert, value in zip(self.results, row))


@cache
def _driver_insert(dialect, table: Table, keys: frozenset[str], returning: tuple[str, ...] = (),
                   also: tuple[ColumnElement, ...] = (), only_if: ColumnElement[bool] | None = None
                   ) -> _DriverInsert | None:
    """``_insert`` compiled for psycopg for rows giving the columns ``keys``; None for a database
    other than PostgreSQL, or where SQLAlchemy has work to do at execution (a Python-side default
    of a column not given, a bind name it must escape): then its own path runs the statement."""
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        return None
    compiled = _insert(table, returning, also, only_if, keys).compile(dialect=dialect, column_keys=sorted(keys))
    if compiled.insert_prefetch or compiled.escaped_bind_names or compiled.positiontup:
        return None
    fixed, conversions = {}, []
    for bind, name in compiled.bind_names.items():
        if name not in keys:
            fixed[name] = bind.effective_value
        convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if convert is not None:
            conversions.append((name, convert))
    read = (*(table.columns[key] for key in returning), *also)
    results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None) for column in read)
    return _DriverInsert(compiled.string, fixed, tuple(conversions), results)


#: Where a session keeps the rows staged to go with its COMMIT (``stage_insert``).
_STAGED = "accord_staged_rows"


def stage_insert(session: Session, table: Table, values: dict) -> None:
    """Write a row of ``table`` (``values``: every column by key, the primary key included) with
    the transaction's COMMIT.

    On PostgreSQL ``commit`` sends the staged INSERTs and the COMMIT in one round trip (psycopg's
    pipeline mode). It is for the last row a transaction writes while it holds a lock every
    writer waits for (the audit chain's): each round trip, and each wait for the interpreter to
    read its answer, is time the lock is held; so is building an ORM object, and no object is
    made. A plain ``session.commit()`` still writes staged rows (first, before the final flush),
    and a rollback drops them; a statement run between staging and committing does not see them,
    so stage only what nothing reads back before the commit. SQLite has no round trip to save:
    the row is written at once.
    """
    if values.keys() != _column_keys(table):
        missing, unknown = _column_keys(table) - values.keys(), values.keys() - _column_keys(table)
        wrong = f"lacks {', '.join(sorted(missing))}" if missing else f"has no column {', '.join(sorted(unknown))}"
        raise ValueError(f"stage_insert writes rows whose every column is given: {table.name} {wrong}")
    # The row belongs to the session's transaction, begun here if need be: its rollback drops it.
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        session.flush()
        connection.execute(_insert(table, ()), values)
        return
    session.info.setdefault(_STAGED, []).append((table, values))


@cache
def _column_keys(table: Table) -> frozenset[str]:
    return frozenset(column.key for column in table.columns)


def write_staged(session: Session) -> None:
    """Write the staged rows now, each with its own statement (before a read that must see them)."""
    for table, values in session.info.pop(_STAGED, ()):
        _write_row(session.connection(), table, values)


def _write_row(connection, table: Table, values: dict, driver=None) -> None:
    """One row of ``table``, every column given: straight on psycopg where ``_driver_insert``
    compiles it (on ``driver`` when the caller holds it, inside its error handling), otherwise
    through SQLAlchemy."""
    insert = _driver_insert(connection.dialect, table, frozenset(values))
    if insert is None:
        connection.execute(_insert(table, ()), values)
    elif driver is None:
        insert.run(connection, values)
    else:
        insert.send(connection, driver, values)


def commit(session: Session) -> None:
    """Commit ``session``; on PostgreSQL its staged rows go in the same round trip as the COMMIT.

    Pending ORM changes are flushed first, as ``session.commit()`` would. Should the database
    refuse or the connection drop, the error is SQLAlchemy's, as any statement's would be, so
    the usual handlers answer (a lost connection: 503, saying the request may have been saved).
    """
    staged = session.info.get(_STAGED)
    if not staged:
        session.commit()
        return
    session.flush()
    connection = session.connection()
    del session.info[_STAGED]
    with _driver(connection, "COMMIT", on_error=session.rollback) as driver:
        with driver.pipeline():
            for table, values in staged:
                _write_row(connection, table, values, driver)
            # Queued like the INSERTs, so that leaving the pipeline sends one Sync for all of
            # them (``driver.commit()`` would sync here, and leaving would sync again).
            driver.execute("COMMIT", prepare=False)
    # The transaction is over; this closes SQLAlchemy's side of it (psycopg sends nothing more).
    session.commit()


def read_row(session: Session, statement: Select, sql: str) -> tuple:
    """The one row ``statement`` reads, in the session's transaction; on PostgreSQL ``sql`` (the
    same statement, compiled once by the caller, without parameters) runs straight on psycopg.

    For the statement every API request runs first: SQLAlchemy's execution path cost about as
    much CPU again as psycopg's. Errors are SQLAlchemy's, as ``commit``'s are.
    """
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return tuple(connection.execute(statement).one())
    row = _fetch_row(connection, sql)
    if row is None:
        raise exc.NoResultFound("No row was found when one was required")
    return row


def _fetch_row(connection, sql: str) -> tuple | None:
    """The first row ``sql`` (no parameters) reads, sent straight on ``connection``'s psycopg
    connection."""
    _announce(connection, sql, ())
    with _driver(connection, sql) as driver:
        return driver.execute(sql).fetchone()


def _announce(connection, sql: str, parameters) -> None:
    """Tell the engine's ``before_cursor_execute`` listeners, if it has any (the tests' statement
    log does), of a statement sent past SQLAlchemy, as its own path would."""
    if connection._has_events or connection.engine._has_events:
        connection.dispatch.before_cursor_execute(connection, None, sql, parameters, None, False)


@contextmanager
def _driver(connection, statement: str, on_error=None) -> Iterator:
    """``connection``'s psycopg connection, for statements sent past SQLAlchemy: a driver error
    becomes the exception SQLAlchemy would have raised (a lost connection is invalidated, and
    the usual handlers answer: 503, saying the request may have been saved)."""
    driver = connection.connection.driver_connection
    dialect = connection.dialect
    try:
        yield driver
    except dialect.loaded_dbapi.Error as error:
        disconnected = dialect.is_disconnect(error, driver, None)
        if disconnected:
            connection.invalidate(error)
        if on_error is not None:
            on_error()
        raise exc.DBAPIError.instance(statement, None, error, dialect.loaded_dbapi.Error,
                                      connection_invalidated=disconnected, dialect=dialect) from error


def _drop_staged(session: Session, *_args) -> None:
    session.info.pop(_STAGED, None)


#: PostgreSQL assigns a transaction an id at its first write (a row written, changed, deleted or
#: locked), and not before: NULL here means the transaction has only read.
_WROTE_NOTHING = "SELECT txid_current_if_assigned() IS NULL"


def end_reads_with_commit(session: Session) -> None:
    """End a PostgreSQL transaction that only read with COMMIT rather than ROLLBACK.

    The two are the same to PostgreSQL when nothing was written, but psycopg forgets every
    statement a connection has prepared when one of its transactions rolls back (and tells the
    server to, a round trip): dry-run checks and reads, which never commit, kept discarding the
    statements every request prepares. A transaction that wrote anything is left to roll back, as
    before. PostgreSQL is asked, once, at the end: noting each statement as it ran (a listener
    on the engine) cost every statement of every request ~20 us of SQLAlchemy's event dispatch.
    """
    if not session.in_transaction():
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return
    from psycopg.pq import TransactionStatus

    if connection.connection.driver_connection.info.transaction_status == TransactionStatus.IDLE:
        session.commit()  # nothing was run: psycopg has no transaction to end, and sends nothing
        return
    # Straight to psycopg: through SQLAlchemy the question cost as much again as its round trip.
    try:
        (wrote_nothing,) = _fetch_row(connection, _WROTE_NOTHING)
    except exc.DBAPIError:  # a failed transaction, a lost connection: the rollback will see to it
        return
    if wrote_nothing:
        session.commit()


def init_app(app: Flask) -> None:
    """Bind the engine hooks and mark read-only requests."""
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)
        elif not app.config["SQLALCHEMY_ENGINE_OPTIONS"].get("pool_pre_ping"):
            ping_idle_connections(engine, app.config["DATABASE_PING_AFTER_SECONDS"])

    # A plain commit still writes staged rows; a rollback forgets them. (Every session: the
    # listeners are harmless where nothing is staged.)
    if not event.contains(Session, "before_commit", write_staged):
        event.listen(Session, "before_commit", write_staged)
        event.listen(Session, "after_soft_rollback", _drop_staged)

    @app.before_request
    def _mark_read_only() -> None:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            _read_only.set(True)
        else:
            _read_only.set(False)

    @app.teardown_request
    def _clear_read_only(exc: BaseException | None) -> None:
        _read_only.set(False)
        if exc is None:
            end_reads_with_commit(db.session())
