"""Claiming a sweep's reminders and queueing what they send, in a fixed number of statements.

A first sweep over a large register claims a hundred thousand milestones and queues twice as
many e-mails and more notifications. ``executemany`` and SQLAlchemy's batched inserts send
one statement per row or per page of rows, and building a row object per recipient in Python
costs more than the database's own work. Here the claims travel once, as arrays (PostgreSQL,
``unnest``) or one JSON parameter (SQLite, ``json_each``), with the few distinct audiences
(who is told of a claim) beside them, and the database makes the e-mail and notification rows
itself from claims x audience members. Dates and times are bound with their columns' types, so
what lands in the tables is exactly what the ORM would write (on SQLite, datetimes as
``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, which sort and compare with the rows the ORM writes).
"""
from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, NamedTuple

from sqlalchemy import Table, bindparam, select, text
from sqlalchemy.orm import Session


def _stored_date(column, dialect) -> Callable[[date], str]:
    """How SQLite stores a date in ``column`` (its type's own bind processing), remembered: a
    sweep's hundred thousand claims fall due on a few hundred days."""
    return functools.cache(column.type.dialect_impl(dialect).bind_processor(dialect))


# --- claiming a sweep's reminders and fanning them out to their recipients ---------------------


class PlannedClaim(NamedTuple):
    """One reminder to claim, and the index of its audience in the sweep's audience lists
    (a tuple: a large sweep makes a hundred thousand of them)."""

    kind: str
    subject_type: str
    subject_id: str
    due_on: date
    milestone: str
    title: str
    escalated: bool
    audience: int


@dataclass(frozen=True)
class Audience:
    """Who hears of a claim: the addresses it is e-mailed to and the users who see it in the app.

    Items about the same organisations share one audience, so a sweep sends a few hundred of
    them to the database however many reminders it claims.
    """

    emails: tuple[str, ...]
    user_ids: tuple[int, ...]


@dataclass(frozen=True)
class FanOut:
    """What a sweep wrote: claims (those another sweep had not claimed first), e-mails, notifications."""

    claimed: int = 0
    messages: int = 0
    notifications: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    first_claim_id: int | None = None
    last_claim_id: int | None = None


_CLAIM_KEY = ("kind", "subject_type", "subject_id", "due_on", "milestone")
#: PostgreSQL's working memory for the sweep's statement: enough for 100,000 claims in memory.
SWEEP_WORK_MEM = "64MB"


def claim_and_fan_out(session: Session, claims: Sequence[PlannedClaim], audiences: Sequence[Audience], *,
                      as_of: date, now: datetime) -> FanOut:
    """Claim ``claims`` (in their order) and queue an e-mail and a notification for every member
    of each new claim's audience, in a number of statements that does not depend on how many.

    The e-mails and notifications are made in the database from the claims and the audiences
    (claims x members), rather than sent there one row per recipient: a first sweep over a
    large register writes twice as many messages as claims. A claim that is already there
    (another sweep made it first) is skipped with everything it would have sent.
    """
    if not claims:
        return FanOut()
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)  # SQLite keeps naive UTC text, as the ORM writes it
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return _claim_and_fan_out_postgresql(session, claims, audiences, as_of=as_of, now=now)
    if dialect == "sqlite":
        return _claim_and_fan_out_sqlite(session, claims, audiences, as_of=as_of, now=now)
    raise NotImplementedError(dialect)  # pragma: no cover - only the two supported databases


def _claims_table() -> Table:
    from app.reminders.models import ReminderClaim

    return ReminderClaim.__table__


def _typed(statement, names_to_columns: Mapping[str, Any]):
    """Bind the constants with their columns' types, so they are stored as the ORM stores them."""
    return statement.bindparams(*(bindparam(name, type_=column.type) for name, column in names_to_columns.items()))


# PostgreSQL: one statement. The claims arrive as arrays (one per column) that ``unnest`` turns
# into rows; data-modifying CTEs insert the claims, then the e-mails and notifications of the
# claims actually inserted (RETURNING), and the final SELECT counts what was written.
_POSTGRESQL_FAN_OUT = """
WITH planned AS (
    SELECT * FROM unnest(CAST(:kind AS text[]), CAST(:subject_type AS text[]), CAST(:subject_id AS text[]),
                         CAST(:due_on AS date[]), CAST(:milestone AS text[]), CAST(:title AS text[]),
                         CAST(:escalated AS boolean[]), CAST(:audience AS integer[]))
        WITH ORDINALITY AS p(kind, subject_type, subject_id, due_on, milestone, title, escalated, audience, position)
), claimed AS (
    INSERT INTO reminder_claims (kind, subject_type, subject_id, due_on, milestone, title, escalated, as_of, claimed_at)
    SELECT kind, subject_type, subject_id, due_on, milestone, title, escalated, :as_of, :now
    FROM planned ORDER BY position
    ON CONFLICT (kind, subject_type, subject_id, due_on, milestone) DO NOTHING
    RETURNING id, kind, subject_type, subject_id, due_on, milestone
), fresh AS (
    SELECT claimed.id, claimed.kind, planned.audience
    FROM claimed JOIN planned USING (kind, subject_type, subject_id, due_on, milestone)
), emails AS (
    INSERT INTO outbox_messages (claim_id, to_address, status, attempts, next_attempt_at, created_at)
    SELECT fresh.id, member.address, 'pending', 0, :now, :now
    FROM fresh JOIN unnest(CAST(:email_audience AS integer[]), CAST(:email_address AS text[]))
        AS member(audience, address) USING (audience)
    ORDER BY fresh.id
    RETURNING 1
), notes AS (
    INSERT INTO notifications (user_id, claim_id, created_at)
    SELECT member.user_id, fresh.id, :now
    FROM fresh JOIN unnest(CAST(:user_audience AS integer[]), CAST(:user_id AS integer[]))
        AS member(audience, user_id) USING (audience)
    ORDER BY fresh.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM emails), (SELECT count(*) FROM notes),
       (SELECT min(id) FROM fresh), (SELECT max(id) FROM fresh),
       (SELECT json_object_agg(kind, n) FROM (SELECT kind, count(*) AS n FROM fresh GROUP BY kind) AS k)
"""


def _claim_and_fan_out_postgresql(session: Session, claims: Sequence[PlannedClaim], audiences: Sequence[Audience],
                                  *, as_of: date, now: datetime) -> FanOut:
    table = _claims_table()
    params: dict[str, Any] = {name: [getattr(claim, name) for claim in claims]
                              for name in (*_CLAIM_KEY, "title", "escalated", "audience")}
    params["email_audience"], params["email_address"] = _members(audiences, "emails")
    params["user_audience"], params["user_id"] = _members(audiences, "user_ids")
    params.update(as_of=as_of, now=now)
    # The statement sorts, joins and keeps (RETURNING) a row per claim; with the default 4 MB
    # it spills all of that to disk for a large sweep. Until the transaction ends only.
    session.execute(text("SELECT set_config('work_mem', :work_mem, true)"), {"work_mem": SWEEP_WORK_MEM})
    statement = _typed(text(_POSTGRESQL_FAN_OUT), {"as_of": table.c.as_of, "now": table.c.claimed_at})
    claimed, messages, notifications, first, last, kinds = session.execute(statement, params).one()
    return FanOut(claimed, messages, notifications, dict(sorted((kinds or {}).items())), first, last)


def _members(audiences: Sequence[Audience], attribute: str) -> tuple[list[int], list[Any]]:
    """Two parallel lists, (audience index, member), flattening every audience's ``attribute``."""
    indexes: list[int] = []
    members: list[Any] = []
    for index, audience in enumerate(audiences):
        for member in getattr(audience, attribute):
            indexes.append(index)
            members.append(member)
    return indexes, members


# SQLite has no data-modifying CTEs, and the transaction already holds the database's write
# lock (BEGIN IMMEDIATE), so: note the highest claim id, insert the claims in order, and the
# new ones are the rows above it. Each new claim's audience is matched in the database: CROSS
# JOIN keeps the claims as the outer loop (SQLite indexes the small audience table on the fly)
# instead of reading every claim again for every member.
_SQLITE_MEMBERS = ("WITH member(audience, value) AS MATERIALIZED ("
                   "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:members)) "
                   "SELECT {claim_id} AS claim_id, member.value AS member "
                   "FROM json_each(:fresh) AS claim CROSS JOIN member ON member.audience = {audience}")
#: How the new claims are sent: when every claim went in, their ids are consecutive and only
#: each one's audience travels (the n-th is ``first_id + n``); otherwise (id, audience) pairs.
_SQLITE_ALL_NEW = {"claim_id": ":first_id + claim.key", "audience": "claim.value"}
_SQLITE_SOME_NEW = {"claim_id": "json_extract(claim.value, '$[0]')", "audience": "json_extract(claim.value, '$[1]')"}


def _claim_and_fan_out_sqlite(session: Session, claims: Sequence[PlannedClaim], audiences: Sequence[Audience],
                              *, as_of: date, now: datetime) -> FanOut:
    from app.reminders.models import Notification, OutboxMessage

    table = _claims_table()
    dialect = session.get_bind().dialect
    highest = session.execute(text("SELECT coalesce(max(id), 0) FROM reminder_claims")).scalar_one()
    # Each claim is a tuple, so it goes as a JSON array as it is (in PlannedClaim's field order,
    # which the SELECT below follows); its due date as SQLite stores dates, true and false as 1 and 0.
    payload = json.dumps(claims, separators=(",", ":"), default=_stored_date(table.c.due_on, dialect))
    inserted = session.execute(_typed(text(
        "INSERT INTO reminder_claims (kind, subject_type, subject_id, due_on, milestone, title, escalated, as_of, "
        "claimed_at) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
        "json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), "
        "json_extract(value, '$[6]'), :as_of, :now FROM json_each(:rows) WHERE true ORDER BY key "
        "ON CONFLICT (kind, subject_type, subject_id, due_on, milestone) DO NOTHING"),
        {"as_of": table.c.as_of, "now": table.c.claimed_at}),
        {"rows": payload, "as_of": as_of, "now": now})
    # Every claim went in, and SQLite numbered them after the highest id in insertion order (a new
    # row's id is one more than the largest, and the last one is ``highest + len(claims)``).
    if inserted.rowcount <= 0:  # another sweep claimed them all first
        return FanOut()
    all_new = inserted.rowcount == len(claims) and inserted.lastrowid == highest + len(claims)
    fresh = _fresh_claims(session, claims, highest, all_new)
    if not fresh:
        return FanOut()
    if all_new:
        shape, fresh_json = _SQLITE_ALL_NEW, _json([claim.audience for claim in claims])
    else:
        shape, fresh_json = _SQLITE_SOME_NEW, _json([[claim_id, claims[index].audience] for claim_id, index in fresh])
    members = _SQLITE_MEMBERS.format(**shape)
    emails, users = _members(audiences, "emails"), _members(audiences, "user_ids")
    shared = {"fresh": fresh_json, "now": now, "first_id": fresh[0][0]}
    messages = session.execute(_typed(text(
        "INSERT INTO outbox_messages (claim_id, to_address, status, attempts, next_attempt_at, created_at) "
        f"SELECT claim_id, member, 'pending', 0, :now, :now FROM ({members}) WHERE true"),  # nosec B608 - constants, values are bound
        {"now": OutboxMessage.__table__.c.created_at}),
        {**shared, "members": _json(list(zip(*emails)))}).rowcount
    notifications = session.execute(_typed(text(
        "INSERT INTO notifications (user_id, claim_id, created_at) "
        f"SELECT member, claim_id, :now FROM ({members}) WHERE true"),  # nosec B608 - constants, values are bound
        {"now": Notification.__table__.c.created_at}),
        {**shared, "members": _json(list(zip(*users)))}).rowcount
    kinds = Counter(claims[index].kind for _, index in fresh)
    return FanOut(len(fresh), messages, notifications, dict(sorted(kinds.items())), fresh[0][0], fresh[-1][0])


def _fresh_claims(session: Session, claims: Sequence[PlannedClaim], highest: int,
                  all_new: bool) -> list[tuple[int, int]]:
    """(claim id, index in ``claims``) of each claim just inserted, in id order: the ids after
    ``highest`` when ``all_new``; otherwise some were claimed already, and the new ones are read
    back and matched by key."""
    if all_new:
        return [(highest + 1 + index, index) for index in range(len(claims))]
    by_key = {tuple(getattr(claim, name) for name in _CLAIM_KEY): index for index, claim in enumerate(claims)}
    table = _claims_table()
    rows = session.execute(select(table.c.id, *(table.c[name] for name in _CLAIM_KEY))
                           .where(table.c.id > highest).order_by(table.c.id))
    return [(row[0], by_key[tuple(row[1:])]) for row in rows if tuple(row[1:]) in by_key]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
