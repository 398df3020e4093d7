"""Inserting many rows in one statement, so a sweep's query count does not grow with its size.

``executemany`` and SQLAlchemy's batched inserts still send one statement per row or per page
of rows. Here the rows travel as a single JSON parameter that the database unpacks
(``json_each`` on SQLite, ``jsonb_array_elements`` on PostgreSQL), so a thousand claims and a
hundred thousand claims are both one round trip. Values are converted with each column type's
own bind processing first, so what lands in the table is exactly what the ORM would write
(on SQLite, datetimes as ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, which sorts and compares with
the rows the ORM writes).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import Table, bindparam, text
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

_PG_TYPES = {"INTEGER": "integer", "BIGINT": "bigint", "BOOLEAN": "boolean", "DATE": "date",
             "DATETIME": "timestamptz", "TIMESTAMP": "timestamptz", "TEXT": "text"}


def _pg_type(column) -> str:
    name = column.type.compile(dialect=_postgres_dialect()).upper()
    if name.startswith(("VARCHAR", "CHARACTER VARYING")):
        return "text"
    if name.startswith("TIMESTAMP"):
        return "timestamptz"
    return _PG_TYPES.get(name, name.lower())


def _postgres_dialect():
    from sqlalchemy.dialects import postgresql

    return postgresql.dialect()


def _converter(column, dialect) -> Callable[[Any], Any] | None:
    """A function turning a Python value into the JSON value the column's bind processing gives,
    or None where the value passes through as it is (text and whole numbers).

    Dates and datetimes repeat a great deal in a sweep (one ``now``, a few due dates), so their
    conversions are remembered.
    """
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    python_type = _python_type(column)
    if python_type in (str, int) and processor is None:
        return None
    memo: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        if value is None:
            return None
        try:
            return memo[value]
        except KeyError:
            pass
        original = value
        if isinstance(value, datetime) and value.tzinfo is not None and dialect.name == "sqlite":
            value = value.astimezone(timezone.utc)  # SQLite stores naive UTC text
        converted = _encode(processor(value) if processor is not None else value)
        memo[original] = converted
        return converted

    return convert


def _python_type(column) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:  # pragma: no cover - every column used here has one
        return None


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def insert_json(
    session: Session,
    table: Table,
    rows: Sequence[Sequence[Any]],
    *,
    columns: Sequence[str],
    constants: Mapping[str, Any] | None = None,
    on_conflict_do_nothing: Sequence[str] | None = None,
    returning: Sequence[str] = (),
) -> list[Row]:
    """Insert ``rows`` (tuples in ``columns`` order) with one statement, every row also taking
    the ``constants`` (column -> one value for all rows, bound once). Returns the ``returning``
    columns of the rows actually inserted: a row in conflict is skipped and not returned."""
    if not rows:
        return []
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer.quote
    constants = dict(constants or {})
    converters = [_converter(table.c[name], dialect) for name in columns]
    if any(converters):
        payload = [[value if convert is None else convert(value) for value, convert in zip(row, converters)]
                   for row in rows]
    else:
        payload = [list(row) for row in rows]
    params: dict[str, Any] = {"rows": json.dumps(payload, separators=(",", ":"))}
    if dialect.name == "postgresql":
        values = [f"CAST(value->>{index} AS {_pg_type(table.c[name])})" for index, name in enumerate(columns)]
        # Types come from the table definition; the rows are bound.
        source = "FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r(value)"
    elif dialect.name == "sqlite":
        values = [f"json_extract(value, '$[{index}]')" for index in range(len(columns))]
        # "WHERE true" resolves SQLite's parsing ambiguity between a join's ON and the upsert's ON CONFLICT.
        source = "FROM json_each(:rows) WHERE true"
    else:  # pragma: no cover - only the two supported databases
        raise NotImplementedError(dialect.name)
    for index, (name, value) in enumerate(constants.items()):
        values.append(f":constant_{index}")
        params[f"constant_{index}"] = value
    targets = ", ".join(quote(name) for name in (*columns, *constants))
    sql = f"INSERT INTO {quote(table.name)} ({targets}) SELECT {', '.join(values)} {source}"  # nosec B608
    if on_conflict_do_nothing:
        sql += f" ON CONFLICT ({', '.join(quote(name) for name in on_conflict_do_nothing)}) DO NOTHING"
    if returning:
        sql += " RETURNING " + ", ".join(quote(name) for name in returning)
        statement = text(sql).columns(*(table.c[name] for name in returning))
    else:
        statement = text(sql)
    # The constants are bound with their columns' types, so they are stored as the ORM stores them.
    statement = statement.bindparams(*(bindparam(f"constant_{index}", type_=table.c[name].type)
                                       for index, name in enumerate(constants)))
    result = session.execute(statement, params)
    return list(result) if returning else []
