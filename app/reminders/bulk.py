"""Claiming a sweep's reminders and queueing their e-mail digests, in a fixed number of statements.

A first sweep over a large register claims a hundred thousand milestones. Each claim names its
audience (the addresses e-mailed, the users shown it in the app), and reminders about the same
organisations share one, so a sweep of any size has a few hundred audiences. What the sweep
writes is one row per claim and one e-mail digest per address told of anything: a user's
notifications are the claims of the audiences they belong to, with a row of their own only once
they acknowledge or snooze one. Writing a row per recipient per claim instead (four rows a
claim) cost a first sweep more than three seconds on PostgreSQL in index and foreign-key upkeep
alone.

The claims travel once, as one JSON parameter (``jsonb_array_elements`` on PostgreSQL,
``json_each`` on SQLite), and so do the audiences' members. Dates and times are bound with their
columns' types, so what lands in the tables is exactly what the ORM would write (on SQLite,
datetimes as ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, which sort and compare with the rows the
ORM writes).
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from datetime import date, datetime, timezone
from typing import Any, NamedTuple

from sqlalchemy import bindparam, insert, text
from sqlalchemy.orm import Session

from app.reminders.models import OutboxMessage, ReminderAudience, ReminderClaim, ReminderSweep


class PlannedClaim(NamedTuple):
    """One reminder to claim, and the index of its audience in the sweep's audience list
    (a tuple: a large sweep makes a hundred thousand of them)."""

    kind: str
    subject_type: str
    subject_id: str
    due_on: date
    milestone: str
    title: str
    escalated: bool
    audience: int


def fingerprint(emails: Sequence[str], user_ids: Sequence[int]) -> str:
    """What identifies an audience: the SHA-256 of its members in order (migration 0008 copies it)."""
    members = json.dumps({"emails": list(emails), "users": list(user_ids)}, separators=(",", ":"))
    return hashlib.sha256(members.encode()).hexdigest()


@dataclass(frozen=True)
class Audience:
    """Who hears of a claim: the addresses it is e-mailed to and the users who see it in the app."""

    emails: tuple[str, ...]
    user_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        # One digest per address: an address twice in an audience would list its reminders twice.
        object.__setattr__(self, "emails", tuple(dict.fromkeys(self.emails)))
        object.__setattr__(self, "user_ids", tuple(dict.fromkeys(self.user_ids)))

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.emails, self.user_ids)

    def members(self) -> list[tuple[int, str | None, int | None]]:
        """(position, email, user id) of each member, addresses first."""
        return ([(position, email, None) for position, email in enumerate(self.emails)]
                + [(len(self.emails) + position, None, user) for position, user in enumerate(self.user_ids)])


@dataclass(frozen=True)
class FanOut:
    """What a sweep wrote: claims, e-mail digests, and how many (reminder, user) notifications
    those claims show in the app."""

    claimed: int = 0
    messages: int = 0
    notifications: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    first_claim_id: int | None = None
    last_claim_id: int | None = None
    sweep_id: int | None = None


#: PostgreSQL's working memory for the claims statement: enough for 100,000 claims in memory.
SWEEP_WORK_MEM = "64MB"
#: Key of the PostgreSQL advisory lock sweeps take turns under ("ACCORDRS"); any fixed 64-bit
#: number no other code uses.
SWEEP_LOCK = 0x41434344_52445253


def _index_order(claim: PlannedClaim) -> tuple[date, PlannedClaim]:
    """(due date, kind, subject type, subject id, milestone): the unique constraint's order."""
    return claim.due_on, claim


def take_turn(session: Session) -> None:
    """Wait until no other sweep is between reading what is claimed and committing its claims.

    A sweep takes its turn before it reads which milestones are already claimed, so what it
    reads stays true until it commits: two schedulers, or an operator's command during the
    scheduler's run, then never try to claim the same milestone, and the claims go in without
    ``ON CONFLICT`` (whose per-row check and RETURNING cost a first sweep of 100,000 items 0.4 s
    on PostgreSQL). PostgreSQL: a transaction-scoped advisory lock, released at commit or
    rollback; taking it again in the same transaction is a no-op. SQLite: writing transactions
    already began with BEGIN IMMEDIATE (``app.database``).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK})


def claim_and_fan_out(session: Session, claims: Sequence[PlannedClaim], audiences: Sequence[Audience], *,
                      as_of: date, now: datetime) -> FanOut:
    """Claim ``claims`` for a new sweep and queue one e-mail digest for every address of their
    audiences, in a number of statements that does not depend on how many.

    The caller has taken its turn (``take_turn``) before reading which milestones were already
    claimed, and left those out. A claim that is there all the same is refused by the unique
    constraint, with the whole sweep: nothing is ever claimed, or sent, twice.
    """
    if not claims:
        return FanOut()
    take_turn(session)
    # Inserted in the order of the unique constraint's index: it then takes them page by page
    # instead of all over (0.4 s of a 100,000-claim sweep on PostgreSQL). Planning lists them
    # in nearly that order already (soonest due first), so the sort has little to do.
    claims = sorted(claims, key=_index_order)
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)  # SQLite keeps naive UTC text, as the ORM writes it
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):  # pragma: no cover - only the two supported databases
        raise NotImplementedError(dialect)
    sweep_id = session.execute(insert(ReminderSweep).values(as_of=as_of, ran_at=now)
                               .returning(ReminderSweep.id)).scalar_one()
    if dialect == "postgresql":
        audience_ids = _postgresql_audience_ids(session, audiences, now)
    else:
        audience_ids = _sqlite_audience_ids(session, audiences, now)
    per_audience = Counter(claim.audience for claim in claims)
    _sweep_audiences(session, sweep_id, [audience_ids[index] for index in per_audience])
    insert_claims = _postgresql_claims if dialect == "postgresql" else _sqlite_claims
    first, last = insert_claims(session, claims, audience_ids, sweep_id=sweep_id, as_of=as_of, now=now)
    return FanOut(claimed=len(claims), messages=_queue_digests(session, sweep_id, now),
                  notifications=sum(count * len(audiences[index].user_ids) for index, count in per_audience.items()),
                  kinds=dict(sorted(Counter(claim.kind for claim in claims).items())),
                  first_claim_id=first, last_claim_id=last, sweep_id=sweep_id)


def _typed(statement, names_to_columns: Mapping[str, Any]):
    """Bind the constants with their columns' types, so they are stored as the ORM stores them."""
    return statement.bindparams(*(bindparam(name, type_=column.type) for name, column in names_to_columns.items()))


def _sweep_audiences(session: Session, sweep_id: int, audience_ids: Sequence[int]) -> None:
    """Record the audiences this sweep tells, which its claims then name (``ReminderSweepAudience``)."""
    distinct = sorted(set(audience_ids))
    if session.get_bind().dialect.name == "postgresql":
        rows, ids = "unnest(CAST(:ids AS integer[]))", distinct
    else:
        rows, ids = "value FROM json_each(:ids)", _json(distinct)
    session.execute(text(f"INSERT INTO reminder_sweep_audiences (sweep_id, audience_id) SELECT :sweep, {rows}"),
                    {"sweep": sweep_id, "ids": ids})


# PostgreSQL, audiences: two statements. An audience seen before is found by its fingerprint (the
# no-op update returns it, also when a concurrent sweep has just inserted it and committed); a new
# one gets its members. ``xmax = 0`` is how PostgreSQL tells a row it inserted from one it updated.
# (Joining the new audiences to their members inside one statement left the planner guessing a
# hundred rows a side: with 10,000 organisations, each its own audience, it took a second.)
_POSTGRESQL_AUDIENCES = """
INSERT INTO reminder_audiences (fingerprint, created_at)
SELECT fingerprint, :now FROM unnest(CAST(:fingerprints AS text[])) WITH ORDINALITY AS p(fingerprint, position)
ORDER BY position
ON CONFLICT (fingerprint) DO UPDATE SET fingerprint = EXCLUDED.fingerprint
RETURNING fingerprint, id, (xmax = 0) AS inserted
"""


def _postgresql_audience_ids(session: Session, audiences: Sequence[Audience], now: datetime) -> list[int]:
    unique, index_of = _unique(audiences)
    statement = _typed(text(_POSTGRESQL_AUDIENCES), {"now": ReminderAudience.__table__.c.created_at})
    rows = session.execute(statement, {"fingerprints": [a.fingerprint for a in unique], "now": now}).all()
    found = {fingerprint: audience_id for fingerprint, audience_id, _ in rows}
    new = {audience_id for _, audience_id, inserted in rows if inserted}
    ids = [found[audience.fingerprint] for audience in unique]
    members = _members_json(unique, ids, new)
    if members:
        session.execute(text(
            "INSERT INTO reminder_audience_members (audience_id, position, email, user_id) "
            "SELECT CAST(m->>0 AS integer), CAST(m->>1 AS integer), m->>2, CAST(m->>3 AS integer) "
            "FROM jsonb_array_elements(CAST(:members AS jsonb)) AS m"), {"members": members})
    return [ids[index] for index in index_of]


def _members_json(audiences: Sequence[Audience], ids: Sequence[int], new: set[int]) -> str | None:
    """The members of the audiences just inserted (``new`` ids) as one JSON array of
    [audience id, position, email, user id], or None when every audience was there before."""
    members = [[audience_id, position, email, user_id]
               for audience_id, audience in zip(ids, audiences) if audience_id in new
               for position, email, user_id in audience.members()]
    return _json(members) if members else None


def _unique(audiences: Sequence[Audience]) -> tuple[list[Audience], list[int]]:
    """The distinct audiences (two recipient lists may name the same people), and for each of
    ``audiences`` the index of its own among them."""
    position: dict[str, int] = {}
    unique: list[Audience] = []
    index_of = []
    for audience in audiences:
        key = audience.fingerprint
        if key not in position:
            position[key] = len(unique)
            unique.append(audience)
        index_of.append(position[key])
    return unique, index_of


# PostgreSQL, claims: one statement. The claims arrive as one JSON array of arrays (PlannedClaim's
# fields in order, the audience's id last), which ``jsonb_array_elements`` turns into rows: as
# eight ``unnest`` arrays instead, adapting every element cost the client a second per hundred
# thousand claims.
_POSTGRESQL_CLAIMS = """
WITH claimed AS (
    INSERT INTO reminder_claims (kind, subject_type, subject_id, due_on, milestone, title, escalated, as_of,
                                 claimed_at, sweep_id, audience_id)
    SELECT c->>0, c->>1, c->>2, CAST(c->>3 AS date), c->>4, c->>5, CAST(c->>6 AS boolean), :as_of, :now, :sweep_id,
           CAST(c->>7 AS integer)
    FROM jsonb_array_elements(CAST(:claims AS jsonb)) WITH ORDINALITY AS p(c, position) ORDER BY position
    RETURNING id
)
SELECT min(id), max(id) FROM claimed
"""


def _claims_json(claims: Sequence[PlannedClaim], audience_ids: Sequence[int], stored_date: Callable[[date], str]) -> str:
    """The claims as one JSON array, each an array in PlannedClaim's field order with its
    audience index replaced by the audience's id, and dates as ``stored_date`` writes them
    (worked out once a day: a sweep's claims fall due on a few hundred)."""
    dates = {day: stored_date(day) for day in {claim.due_on for claim in claims}}
    return _json([(kind, subject_type, subject_id, dates[due_on], milestone, title, escalated, audience_ids[audience])
                  for kind, subject_type, subject_id, due_on, milestone, title, escalated, audience in claims])


def _postgresql_claims(session: Session, claims: Sequence[PlannedClaim], audience_ids: Sequence[int], *,
                       sweep_id: int, as_of: date, now: datetime) -> tuple[int, int]:
    """Insert the claims; the first and last id given."""
    table = ReminderClaim.__table__
    params = {"claims": _claims_json(claims, audience_ids, date.isoformat), "as_of": as_of, "now": now,
              "sweep_id": sweep_id}
    # The statement keeps (RETURNING) a row per claim; with the default 4 MB it spills that to
    # disk for a large sweep. Until the transaction ends only.
    session.execute(text("SELECT set_config('work_mem', :work_mem, true)"), {"work_mem": SWEEP_WORK_MEM})
    statement = _typed(text(_POSTGRESQL_CLAIMS), {"as_of": table.c.as_of, "now": table.c.claimed_at})
    first, last = session.execute(statement, params).one()
    return first, last


def _queue_digests(session: Session, sweep_id: int, now: datetime) -> int:
    """One e-mail digest for each address in the audiences the sweep told; how many."""
    return session.execute(_typed(text(
        "INSERT INTO outbox_messages (sweep_id, to_address, status, attempts, next_attempt_at, created_at) "
        "SELECT :sweep, email, 'pending', 0, :now, :now FROM (SELECT DISTINCT member.email "
        "FROM reminder_sweep_audiences AS told JOIN reminder_audience_members AS member USING (audience_id) "
        "WHERE told.sweep_id = :sweep AND member.email IS NOT NULL) AS address ORDER BY email"),
        {"now": OutboxMessage.__table__.c.created_at}), {"sweep": sweep_id, "now": now}).rowcount


# SQLite has no data-modifying CTEs, and the transaction already holds the database's write lock
# (BEGIN IMMEDIATE), so the steps are separate statements, none of them one per row.


def _sqlite_audience_ids(session: Session, audiences: Sequence[Audience], now: datetime) -> list[int]:
    """Insert the audiences not seen before, with their members; the id of each of ``audiences``.
    Holding the write lock, the new ones are those numbered above the highest id before."""
    unique, index_of = _unique(audiences)
    fingerprints = _json([audience.fingerprint for audience in unique])
    highest = session.execute(text("SELECT coalesce(max(id), 0) FROM reminder_audiences")).scalar_one()
    session.execute(_typed(text(
        "INSERT INTO reminder_audiences (fingerprint, created_at) SELECT value, :now FROM json_each(:fingerprints) "
        "WHERE true ORDER BY key ON CONFLICT (fingerprint) DO NOTHING"),
        {"now": ReminderAudience.__table__.c.created_at}), {"fingerprints": fingerprints, "now": now})
    found = dict(session.execute(text(
        "SELECT fingerprint, id FROM reminder_audiences WHERE fingerprint IN (SELECT value FROM json_each(:f))"),
        {"f": fingerprints}).all())
    ids = [found[audience.fingerprint] for audience in unique]
    members = _members_json(unique, ids, {audience_id for audience_id in ids if audience_id > highest})
    if members:
        session.execute(text(
            "INSERT INTO reminder_audience_members (audience_id, position, email, user_id) "
            "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
            "json_extract(value, '$[3]') FROM json_each(:members)"), {"members": members})
    return [ids[index] for index in index_of]


def _stored_date(column, dialect) -> Callable[[date], str]:
    """How SQLite stores a date in ``column``: its type's own bind processing."""
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def _sqlite_claims(session: Session, claims: Sequence[PlannedClaim], audience_ids: Sequence[int], *,
                   sweep_id: int, as_of: date, now: datetime) -> tuple[int, int]:
    """Insert the claims; the first and last id given."""
    table = ReminderClaim.__table__
    dialect = session.get_bind().dialect
    payload = _claims_json(claims, audience_ids, _stored_date(table.c.due_on, dialect))
    # Holding the write lock, the claims this statement inserts are those numbered above the highest before.
    highest = session.execute(text("SELECT coalesce(max(id), 0) FROM reminder_claims")).scalar_one()
    session.execute(_typed(text(
        "INSERT INTO reminder_claims (kind, subject_type, subject_id, due_on, milestone, title, escalated, as_of, "
        "claimed_at, sweep_id, audience_id) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
        "json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'), "
        "json_extract(value, '$[5]'), json_extract(value, '$[6]'), :as_of, :now, :sweep_id, "
        "json_extract(value, '$[7]') FROM json_each(:rows) ORDER BY key"),
        {"as_of": table.c.as_of, "now": table.c.claimed_at}),
        {"rows": payload, "as_of": as_of, "now": now, "sweep_id": sweep_id})
    first, last = session.execute(text("SELECT min(id), max(id) FROM reminder_claims WHERE id > :highest"),
                                  {"highest": highest}).one()
    return first, last


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
