"""Verifying the chain as the database stores it, fast enough for a million events.

``chain.verify_chain`` takes event objects, and building a million of them from ORM rows costs
more than verifying them. So the chain is read as plain column tuples (``COPY ... TO STDOUT`` on
PostgreSQL, a raw cursor on SQLite) with the timestamp already formatted by the database and the
details left as the canonical text they were stored as (``models.CanonicalJSON``), and checked by
``chain.verify_rows``; on a long chain the upper half is checked by a forked child process at the
same time, each process on its own connection, and the halves are joined at the boundary.

Anything out of the ordinary (a gap, a mismatch, a child that fails) sends verification down the
exact path: ``chain.verify_chain`` over events built from the rows again, so whatever is wrong is
reported exactly as ``verify_chain`` reports it, with the filter columns checked on the side.
No Flask here: the service passes the session's connection and the database URL in.
"""
from __future__ import annotations

import enum
import gc
import itertools
import json
import multiprocessing
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import URL

from app.audit import chain
from app.audit.indexing import indexed_values, row_columns_match

#: From this many events the upper half of the chain is verified by a second process.
PARALLEL_FROM = 100_000


class StorageProblem(enum.StrEnum):
    """What only the database copy can get wrong, beside the chain's own ``chain.Problem``."""

    COLUMN_MISMATCH = "column_mismatch"


# --------------------------------------------------------------------------- reading rows

#: The fast path's rows: ``chain.ROW_COLUMNS`` (the canonical text assembled by the database, in
#: C, from the stored columns), then what ``indexing.row_columns_match`` reads.
_FAST_SELECT = (
    "seq, prev_hash, hash, mac, {text}, subject_type, subject_id, protocol, subgroup, outcome, counterparty"
    " FROM audit_events WHERE seq > {after} AND seq <= {upto} ORDER BY seq"
)
_SQLITE_TEXT = (
    "'{\"action\":' || json_quote(action) || ',\"actor\":' || json_quote(actor)"
    " || ',\"details\":' || details || ',\"occurred_at\":\"' || replace(occurred_at, ' ', 'T')"
    " || 'Z\",\"organisation\":' || json_quote(organisation) || ',\"prev_hash\":\"' || prev_hash"
    " || '\",\"seq\":' || seq || ',\"subject_id\":' || json_quote(subject_id)"
    " || ',\"subject_type\":' || json_quote(subject_type) || ',\"v\":1}'"
)


def _pg_json_string(column: str, nullable: bool = True) -> str:
    """``column`` as a JSON string in canonical form, assembled by PostgreSQL.

    A value with no quote and no backslash is wrapped in quotes as it is, which costs PostgreSQL
    a third of ``to_json`` over a million rows. That is the canonical form unless the value holds
    a control character, and canonical text never holds one raw: such a text cannot match its
    hash, and the exact path decides. Wrapped values hold no bare quote, so the text still
    parses back into exactly one set of columns, and no edit to them can keep the hash.
    """
    value = (f"(CASE WHEN strpos({column}, '\"') = 0 AND strpos({column}, '\\') = 0 "
             f"THEN '\"' || {column} || '\"' ELSE to_json({column})::text END)")
    return f"COALESCE({value}, 'null')" if nullable else value


def _pg_concatenation(parts: list[str]) -> str:
    """``a || b || c ...`` nested as a balanced tree: each ``||`` copies both sides, so a chain
    copies the growing text once per part, and a tree only about log2(parts) times."""
    if len(parts) == 1:
        return parts[0]
    middle = len(parts) // 2
    return f"({_pg_concatenation(parts[:middle])} || {_pg_concatenation(parts[middle:])})"


_PG_TEXT = _pg_concatenation([
    "'{\"action\":'", _pg_json_string("action", nullable=False), "',\"actor\":'", _pg_json_string("actor"),
    "',\"details\":'", "details::text", "',\"occurred_at\":\"'",
    "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    "'\",\"organisation\":'", _pg_json_string("organisation"), "',\"prev_hash\":\"'", "prev_hash",
    "'\",\"seq\":'", "seq", "',\"subject_id\":'", _pg_json_string("subject_id"),
    "',\"subject_type\":'", _pg_json_string("subject_type"), "',\"v\":1}'",
])
#: Fields of a fast-path COPY line.
_FAST_FIELDS = 11

#: The exact path's rows: the stored columns, the timestamp formatted by the database.
_SELECT = (
    "seq, {timestamp}, action, actor, organisation, subject_type, subject_id, details,"
    " prev_hash, hash, mac, protocol, subgroup, outcome, counterparty"
    " FROM audit_events WHERE seq > {after} AND seq <= {upto} ORDER BY seq"
)
_PG_TIMESTAMP = "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
#: SQLAlchemy stores SQLite timestamps as ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC.
_SQLITE_TIMESTAMP = "replace(occurred_at, ' ', 'T') || 'Z'"

_NULL = "\\N"
_COPY_ESCAPE = re.compile(r"\\(.)")
_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_FIELDS = 15


def read_rows(connection: Any, dialect: str, *, after: int, upto: int) -> Iterator[tuple[Any, ...]]:
    """The stored columns of rows ``after < seq <= upto`` in sequence order from a DB-API
    connection (psycopg or sqlite3), streamed: PostgreSQL sends them with COPY, which costs a third
    of a cursor's fetch."""
    after, upto = int(after), int(upto)
    if dialect == "postgresql":
        return _postgresql_rows(connection, _SELECT.format(timestamp=_PG_TIMESTAMP, after=after, upto=upto), _copy_row)
    if dialect == "sqlite":
        return _sqlite_rows(connection, _SELECT.format(timestamp=_SQLITE_TIMESTAMP, after=after, upto=upto))
    raise ValueError(f"audit verification does not know the {dialect} database")


def read_fast_rows(connection: Any, dialect: str, *, after: int, upto: int) -> Iterator[tuple[Any, ...]]:
    """Rows ``after < seq <= upto`` for ``chain.verify_rows``, each event's canonical text put
    together by the database."""
    after, upto = int(after), int(upto)
    if dialect == "postgresql":
        query = _FAST_SELECT.format(text=_PG_TEXT, after=after, upto=upto)
        return _postgresql_rows(connection, query, _fast_copy_row, "WITH (NULL '')")
    if dialect == "sqlite":
        return _sqlite_rows(connection, _FAST_SELECT.format(text=_SQLITE_TEXT, after=after, upto=upto))
    raise ValueError(f"audit verification does not know the {dialect} database")


def _sqlite_rows(connection: Any, query: str) -> Iterator[tuple[Any, ...]]:
    cursor = connection.cursor()
    try:
        cursor.arraysize = 1000
        cursor.execute("SELECT " + query)
        while batch := cursor.fetchmany():
            yield from batch
    finally:
        cursor.close()


def _postgresql_rows(connection: Any, query: str, parse: Callable[[str], tuple[Any, ...]],
                     options: str = "") -> Iterator[tuple[Any, ...]]:
    """The rows of a COPY, in a transaction block of psycopg's own: within the caller's
    transaction that is a savepoint, rolled back if the reader stops before the end.

    Verification stops reading at the first problem; psycopg then cancels the rest of the COPY,
    and inside a transaction a cancelled statement aborts it, so whatever the caller did next
    (read again to name the problem, record the failure) would fail with InFailedSqlTransaction.
    """
    with connection.transaction():
        yield from _copied_lines(connection, query, parse, options)


def _copied_lines(connection: Any, query: str, parse: Callable[[str], tuple[Any, ...]],
                  options: str) -> Iterator[tuple[Any, ...]]:
    pending = b""
    with connection.cursor() as cursor, cursor.copy(f"COPY (SELECT {query}) TO STDOUT {options}") as copy:
        for block in copy:  # one whole row per block, in practice; lines may still be split
            if not pending and block[-1] == 10:  # ends with a newline: whole lines only
                lines = str(block, "utf-8")[:-1]
                if "\n" in lines:
                    yield from map(parse, lines.split("\n"))
                else:
                    yield parse(lines)
                continue
            data = pending + block if pending else bytes(block)
            cut = data.rfind(b"\n")
            if cut < 0:
                pending = data
                continue
            pending = data[cut + 1:]
            for line in data[:cut].decode().split("\n"):
                yield parse(line)


def _fast_copy_row(line: str) -> tuple[Any, ...]:
    """A fast-path line, copied with ``NULL ''``, as ``chain.ROW_COLUMNS`` and then the columns
    ``indexing.row_columns_match`` reads. No backslash unless a value holds an escape.

    An empty text reads as NULL here. The canonical text is assembled by the database from the
    values themselves, so that cannot hide an edit to the hashed columns; a filter column
    holding "" is read as empty, which passes only where the details copy nothing into it."""
    fields = line.split("\t")
    if len(fields) != _FAST_FIELDS:
        raise ValueError(f"unexpected COPY line with {len(fields)} fields")
    if "\\" in line:
        fields = [_COPY_ESCAPE.sub(_unescape, field) for field in fields]
    seq, prev_hash, hash_, mac, text, subject_type, subject_id, protocol, subgroup, outcome, counterparty = fields
    return (int(seq), prev_hash, hash_, mac, text, subject_type or None, subject_id or None, protocol or None,
            subgroup or None, outcome or None, counterparty or None)


def _copy_row(line: str) -> tuple[Any, ...]:
    """One line of COPY's text format: tab-separated, ``\\N`` for NULL, backslash escapes."""
    fields = line.split("\t")
    if len(fields) != _FIELDS:
        raise ValueError(f"unexpected COPY line with {len(fields)} fields")
    if line.count("\\") != fields.count(_NULL):  # an escape inside a value, e.g. JSON's \"
        values: list[Any] = [None if f == _NULL else _COPY_ESCAPE.sub(_unescape, f) for f in fields]
        values[0] = int(values[0])
        return tuple(values)
    seq, occurred_at, action, actor, organisation, subject_type, subject_id, details, prev_hash, hash_, mac, \
        protocol, subgroup, outcome, counterparty = fields
    n = _NULL
    return (
        int(seq), occurred_at, action, None if actor == n else actor, None if organisation == n else organisation,
        None if subject_type == n else subject_type, None if subject_id == n else subject_id, details,
        prev_hash, hash_, mac, None if protocol == n else protocol, None if subgroup == n else subgroup,
        None if outcome == n else outcome, None if counterparty == n else counterparty,
    )


def _unescape(match: re.Match[str]) -> str:
    char = match.group(1)
    return _COPY_ESCAPES.get(char, char)


# --------------------------------------------------------------------------- where the rows are


@dataclass(frozen=True)
class Database:
    """How a second process reaches the same database: never through the parent's connection."""

    dialect: str
    #: libpq connection string (PostgreSQL) or file path (SQLite); None when unreachable (memory).
    address: str | None

    @classmethod
    def from_url(cls, url: URL) -> Database:
        dialect = url.get_backend_name()
        if dialect == "postgresql":
            return cls(dialect, url.set(drivername="postgresql").render_as_string(hide_password=False))
        if dialect == "sqlite" and url.database and url.database != ":memory:" and "mode=memory" not in str(url):
            return cls(dialect, url.database)
        return cls(dialect, None)

    def connect(self) -> Any:
        if self.dialect == "postgresql":
            import psycopg

            return psycopg.connect(self.address, autocommit=True)
        import sqlite3

        return sqlite3.connect(f"file:{self.address}?mode=ro", uri=True, timeout=30)


# --------------------------------------------------------------------------- the fast path


@dataclass(frozen=True)
class _Segment:
    """A verified stretch of the chain: it starts after ``anchor`` and ends at ``head``."""

    anchor_seq: int
    anchor_hash: str
    head_seq: int
    head_hash: str
    checked: int
    checkpoint_verified: bool


def fast_report(
    connection: Any,
    database: Database,
    *,
    head_seq: int,
    key: bytes | None,
    checkpoint: chain.Checkpoint | None,
    public_key: Ed25519PublicKey | None,
    progress: Callable[[int], None] | None = None,
    parallel: bool = True,
) -> chain.VerifyReport | None:
    """The report of a chain that verifies, or None when the exact path must look.

    ``connection`` is the caller's DB-API connection; with ``parallel`` and a long chain, a
    forked child verifies the upper half over its own connection meanwhile."""
    dialect = database.dialect
    if not parallel or head_seq < PARALLEL_FROM or database.address is None or not _can_fork():
        rows = read_fast_rows(connection, dialect, after=0, upto=head_seq)
        return chain.verify_rows(rows, key=key, checkpoint=checkpoint, public_key=public_key,
                                 progress=progress, row_check=row_columns_match)

    if checkpoint is not None and public_key is None:
        raise ValueError("a checkpoint can only be trusted with the public key that signed it")
    middle = head_seq // 2
    lower_checkpoint = checkpoint if checkpoint is not None and checkpoint.seq <= middle else None
    upper_checkpoint = checkpoint if checkpoint is not None and checkpoint.seq > middle else None
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, name="accord-audit-verify", daemon=True,
                            args=(sender, database, middle, head_seq, key, upper_checkpoint, public_key))
    gc.freeze()  # the child's collector then leaves the parent's objects (and their pages) alone
    try:
        child.start()
    finally:
        gc.unfreeze()
    sender.close()
    try:
        lower = _segment(read_fast_rows(connection, dialect, after=0, upto=middle), key=key,
                         checkpoint=lower_checkpoint, public_key=public_key, progress=progress, first=True)
        try:
            status, upper = receiver.recv()
        except EOFError:
            status, upper = "error", None
    finally:
        receiver.close()
        child.join()
    if lower is None or status != "ok" or upper is None:
        return None
    if (lower.head_seq, lower.head_hash) != (upper.anchor_seq, upper.anchor_hash) or upper.head_seq != head_seq:
        return None
    if checkpoint is not None and not (lower.checkpoint_verified or upper.checkpoint_verified):
        return None
    checked = lower.checked + upper.checked
    if progress is not None:
        progress(checked)
    return chain.joined_report(checked=checked, head_seq=upper.head_seq, head_hash=upper.head_hash,
                               checkpoint=checkpoint, checkpoint_verified=checkpoint is not None,
                               macs_checked=key is not None)


def _can_fork() -> bool:
    """Fork only a process with no other thread running. A thread holding a lock at the moment
    of the fork (OpenSSL's while an API request hashes its token, the resolver's, the logging
    module's) leaves it held for ever in the child, which would hang on it, and the verification
    with it. Server workers and the scheduler run threads, so they verify in one process;
    ``accord audit verify`` and the benchmarks, single-threaded, use two."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _segment(rows: Iterator[tuple[Any, ...]], *, key: bytes | None,
             checkpoint: chain.Checkpoint | None, public_key: Ed25519PublicKey | None,
             progress: Callable[[int], None] | None, first: bool) -> _Segment | None:
    """Verify one stretch; the first starts at the genesis, a later one at its first row's
    prev_hash, which the join then compares with the head of the stretch before."""
    head = next(rows, None)
    if head is None:
        return None
    anchor_seq, anchor_hash = (0, chain.GENESIS_HASH) if first else (head[0] - 1, head[1])
    try:
        report = chain.verify_rows(itertools.chain((head,), rows), key=key, checkpoint=checkpoint,
                                   public_key=public_key, start_after=(anchor_seq, anchor_hash),
                                   progress=progress, row_check=row_columns_match)
    except ValueError:  # a malformed anchor: the exact path will say what is wrong
        return None
    if report is None:
        return None
    return _Segment(anchor_seq, anchor_hash, report.head_seq, report.head_hash, report.checked,
                    report.checkpoint_verified)


def _child(sender: Any, database: Database, after: int, upto: int, key: bytes | None,
           checkpoint: chain.Checkpoint | None, public_key: Ed25519PublicKey | None) -> None:
    """The forked half: its own connection, never the parent's (shared sockets and file locks)."""
    try:
        connection = database.connect()
        try:
            rows = read_fast_rows(connection, database.dialect, after=after, upto=upto)
            segment = _segment(rows, key=key, checkpoint=checkpoint, public_key=public_key,
                               progress=None, first=False)
        finally:
            connection.close()
        sender.send(("ok", segment))
    except BaseException:  # noqa: BLE001  # the parent falls back to the exact path
        sender.send(("error", None))
    finally:
        sender.close()


# --------------------------------------------------------------------------- the exact path


class _Unreadable:
    """Stands in for a stored value that cannot be read back, so ``verify_chain`` reports the
    event as malformed instead of verification crashing."""

    def __init__(self, text: Any):
        self.text = text


def _timestamp(text: Any) -> datetime | _Unreadable:
    """Read back a timestamp as the database formatted it; a SQLite value written by another
    tool may carry its own offset, to which the query appended a "Z"."""
    for candidate in (text, text[:-1] if isinstance(text, str) and text.endswith("Z") else None):
        try:
            return chain.parse_timestamp(candidate)
        except (TypeError, ValueError):
            continue
    return _Unreadable(text)


def _details(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return _Unreadable(text)


def exact_report(
    rows: Iterable[tuple[Any, ...]],
    *,
    key: bytes | None,
    checkpoint: chain.Checkpoint | None,
    public_key: Ed25519PublicKey | None,
    progress: Callable[[int], None] | None = None,
    start_after: tuple[int, str] | None = None,
) -> chain.VerifyReport:
    """``verify_chain`` over the rows, plus the filter columns: an authentic event whose column
    disagrees with its hashed details is reported unless the chain breaks before it."""
    anchor_seq, anchor_hash = start_after or (0, chain.GENESIS_HASH)
    mismatch: list[tuple[int, str, Any, Any, str]] = []  # seq, column, stored, expected, previous hash
    previous_hash = [anchor_hash]

    def events() -> Iterator[chain.EventRecord]:
        for row in rows:
            details = _details(row[7])
            record = chain.EventRecord(
                seq=row[0], occurred_at=_timestamp(row[1]), action=row[2], actor=row[3], organisation=row[4],  # type: ignore[arg-type]
                subject_type=row[5], subject_id=row[6], details=details, prev_hash=row[8], hash=row[9], mac=row[10],
            )
            if not mismatch:
                expected = indexed_values(row[5], row[6], details if isinstance(details, dict) else {})
                for column, stored, wanted in zip(expected._fields, row[11:15], expected):
                    if stored != wanted:
                        mismatch.append((row[0], column, stored, wanted, previous_hash[0]))
                        break
                previous_hash[0] = row[9]
            yield record

    report = chain.verify_chain(events(), key=key, checkpoint=checkpoint, public_key=public_key,
                                start_after=start_after, progress=progress)
    if not mismatch:
        return report
    seq, column, stored, wanted, before = mismatch[0]
    if not report.ok and (report.first_bad_seq is None or report.first_bad_seq <= seq):
        return report
    return chain.VerifyReport(
        ok=False, checked=seq - 1 - anchor_seq, head_seq=seq - 1, head_hash=before, first_bad_seq=seq,
        problem=StorageProblem.COLUMN_MISMATCH,  # type: ignore[arg-type]  # a problem of the copy, not the chain
        message=(f"event {seq}: its {column} column holds {stored!r} but its hashed details say "
                 f"{wanted!r} — the row was edited to change what the filters show"),
        checkpoint_verified=checkpoint is not None and checkpoint.seq <= seq, macs_checked=key is not None,
    )
