"""The DPO's audit workspace: finding events, and the full record of a decision or a transfer.

Who sees what: auditors, coordinators and administrators see every event; a DPO sees the
events concerning their organisation (its ``organisation`` or ``counterparty``) unless they also
hold one of those roles. The scoping is applied here, so an event, exchange or transfer of
another organisation is simply not found.

Every filter is an equality on a column indexed together with ``seq`` (or a short date range),
and pages are keyset pages by ``seq``, newest first, so a page costs the same at a thousand
events as at a million. A filter on "the organisations concerned" is an OR over two columns,
which no single index serves in ``seq`` order, so it is asked as a UNION of two index walks
(each at most a page long) and the page is taken from their union.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, union
from sqlalchemy.orm import Session

from app.audit import chain
from app.audit.models import AuditEvent
from app.auth.models import Role, User
from app.auth.permissions import require_role
from app.clock import LONDON
from app.errors import NotFound, ValidationFailed

#: Who may use the workspace at all.
AUDIT_READERS = (Role.DPO, Role.AUDITOR, Role.COORDINATOR, Role.ADMIN)
#: Who sees every organisation's events.
OVERSEERS = (Role.AUDITOR, Role.COORDINATOR, Role.ADMIN)
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: The longest between the time an event records (a request's "now") and its append: requests
#: and jobs take seconds, a large upload minutes; a week is a wide margin. The date filter uses it.
MAX_APPEND_DELAY = timedelta(days=7)

#: Actions people filter by, for the form's suggestions (any exact action may be typed).
KNOWN_ACTIONS = (
    "exchange.recorded", "exchange.referral_approved", "exchange.referral_refused", "exchange.emergency_reviewed",
    "transfer.sent", "transfer.downloaded", "transfer.receipt", "transfer.destroyed", "transfer.destruction_confirmed",
    "transfer.integrity_failed", "protocol.loaded", "protocol.signed_off", "policy_document.loaded",
    "organisation.created", "organisation.updated", "signature.recorded", "signature.withdrawn",
    "subgroup.created", "subgroup.updated", "auth.signed_in", "auth.signed_out", "auth.sign_in_failed",
    "auth.sign_in_refused", "auth.password_changed", "user.created", "user.roles_changed", "token.created",
    "token.revoked", "keys.added", "keys.rewrapped", "keys.retired", "reminders.sent", "audit.checkpoint",
    "audit.verified",
)
OUTCOMES = ("allow", "allow_emergency", "refer", "deny")


def require_reader(actor: User | None) -> None:
    """``actor`` None is the command line, whose operator holds the database anyway."""
    if actor is not None:
        require_role(actor, *AUDIT_READERS, action="read the audit trail")


def sees_everything(actor: User | None) -> bool:
    return actor is None or actor.has_role(*OVERSEERS)


@dataclass(frozen=True)
class EventFilters:
    """What the workspace, the API and the exports filter by; empty means any."""

    organisation: str | None = None
    protocol: str | None = None
    subgroup: str | None = None
    outcome: str | None = None
    actor: str | None = None
    action: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    since: date | None = None
    until: date | None = None

    def __post_init__(self) -> None:
        errors = {}
        if self.since and self.until and self.until < self.since:
            errors["until"] = "The end date must be the same as or after the start date"
        if self.subject_id and not self.subject_type:
            errors["subject_type"] = "Choose the kind of subject as well as its id"
        if errors:
            raise ValidationFailed(errors)

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in self.__dataclass_fields__)

    def as_args(self) -> dict[str, str]:
        """The filters as GET parameters (dates as ISO), for links and exports."""
        args = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value:
                args[name] = value.isoformat() if isinstance(value, date) else str(value)
        return args


@dataclass(frozen=True)
class EventPage:
    events: list[AuditEvent]
    #: ``before`` for the next (older) page, None on the oldest.
    older: int | None
    #: ``after`` for the previous (newer) page, None on the newest.
    newer: int | None


# --- filtering --------------------------------------------------------------------------------


def _start_of(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), LONDON)


def _common_conditions(filters: EventFilters, session: Session | None = None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    for name in ("protocol", "subgroup", "outcome", "actor", "action", "subject_type", "subject_id"):
        value = getattr(filters, name)
        if value:
            conditions.append(getattr(AuditEvent, name) == value)
    if filters.since:
        conditions.append(AuditEvent.occurred_at >= _start_of(filters.since))
    if filters.until:
        conditions.append(AuditEvent.occurred_at < _start_of(filters.until + timedelta(days=1)))
    if session is not None and (filters.since or filters.until):
        conditions.extend(_sequence_bounds(session, filters))
    return conditions


def _sequence_bounds(session: Session, filters: EventFilters) -> list[ColumnElement[bool]]:
    """A date range as a range of sequence numbers, so the page walks ``seq`` (in order) rather
    than sorting every event of the range. Events are appended in ``seq`` order no later than
    ``MAX_APPEND_DELAY`` after the time they record, so an event that happened more than that
    before the range was appended before every event in it, and one that happened that long
    after it, after every event in it: their sequence numbers bound the range."""
    bounds: list[ColumnElement[bool]] = []
    if filters.since:
        edge = _start_of(filters.since) - MAX_APPEND_DELAY
        before = session.scalar(select(AuditEvent.seq).where(AuditEvent.occurred_at < edge)
                                .order_by(AuditEvent.occurred_at.desc()).limit(1))
        if before is not None:
            bounds.append(AuditEvent.seq > before)
    if filters.until:
        edge = _start_of(filters.until + timedelta(days=1)) + MAX_APPEND_DELAY
        after = session.scalar(select(AuditEvent.seq).where(AuditEvent.occurred_at >= edge)
                               .order_by(AuditEvent.occurred_at).limit(1))
        if after is not None:
            bounds.append(AuditEvent.seq < after)
    return bounds


def _branches(filters: EventFilters, actor: User | None) -> list[list[ColumnElement[bool]]]:
    """The organisation scope and filter as alternatives, each a conjunction of equalities that
    one index serves: their union is the set of events in view."""
    mine = None if sees_everything(actor) else actor.organisation.code  # type: ignore[union-attr]
    wanted = filters.organisation
    if mine is None:
        if not wanted:
            return [[]]
        return [[AuditEvent.organisation == wanted], [AuditEvent.counterparty == wanted]]
    if not wanted or wanted == mine:
        return [[AuditEvent.organisation == mine], [AuditEvent.counterparty == mine]]
    return [[AuditEvent.organisation == mine, AuditEvent.counterparty == wanted],
            [AuditEvent.organisation == wanted, AuditEvent.counterparty == mine]]


def _in_view(filters: EventFilters, actor: User | None) -> ColumnElement[bool]:
    """The same set as one condition, for streaming exports and single lookups."""
    branches = _branches(filters, actor)
    scope = or_(*(and_(*branch) for branch in branches)) if branches != [[]] else None
    conditions = _common_conditions(filters)
    if scope is not None:
        conditions.append(scope)
    return and_(*conditions) if conditions else AuditEvent.seq.is_not(None)


def search_events(session: Session, actor: User | None, filters: EventFilters, *, before: int | None = None,
                  after: int | None = None, limit: int = PAGE_SIZE) -> EventPage:
    """A page of the events in view, newest first; ``before``/``after`` are keyset cursors."""
    require_reader(actor)
    limit = min(max(int(limit), 1), MAX_PAGE_SIZE)
    newest_first = after is None
    cursor: list[ColumnElement[bool]] = []
    if before is not None:
        cursor.append(AuditEvent.seq < before)
    if after is not None:
        cursor.append(AuditEvent.seq > after)
    order = AuditEvent.seq.desc() if newest_first else AuditEvent.seq.asc()
    common = _common_conditions(filters, session) + cursor
    branches = _branches(filters, actor)
    if len(branches) == 1:
        query = select(AuditEvent).where(*branches[0], *common).order_by(order).limit(limit + 1)
        events = list(session.scalars(query))
    else:
        walks = [select(AuditEvent.seq).where(*branch, *common).order_by(order).limit(limit + 1).subquery()
                 for branch in branches]
        seqs = union(*(select(walk.c.seq) for walk in walks)).subquery()
        query = select(AuditEvent).where(AuditEvent.seq.in_(select(seqs.c.seq))).order_by(order).limit(limit + 1)
        events = list(session.scalars(query))
    more = len(events) > limit
    events = events[:limit]
    if not newest_first:
        events.reverse()
    if not events:
        return EventPage([], None, None)
    if newest_first:
        older = events[-1].seq if more else None
        newer = events[0].seq if before is not None else None
    else:
        older = events[-1].seq
        newer = events[0].seq if more else None
    return EventPage(events, older, newer)


def stream_events(session: Session, actor: User | None, filters: EventFilters, *, upto: int,
                  batch: int = 2000) -> Iterator[chain.EventRecord]:
    """Every event in view up to ``upto`` in chain order, as plain records read in keyset
    batches: memory stays bounded and no ORM object piles up in the session."""
    require_reader(actor)
    condition = _in_view(filters, actor)
    columns = [getattr(AuditEvent, name) for name in _RECORD_FIELDS]
    last = 0
    while True:
        rows = session.execute(select(*columns).where(condition, AuditEvent.seq > last, AuditEvent.seq <= upto)
                               .order_by(AuditEvent.seq).limit(batch)).all()
        for row in rows:
            yield chain.EventRecord(*row)
        if len(rows) < batch:
            return
        last = rows[-1].seq


_RECORD_FIELDS = ("seq", "occurred_at", "action", "actor", "organisation", "subject_type", "subject_id", "details",
                  "prev_hash", "hash", "mac")


def is_whole_chain(filters: EventFilters, actor: User | None) -> bool:
    """Whether the view is every event (so an export of it verifies as a chain)."""
    return filters.is_empty and sees_everything(actor)


def get_event(session: Session, actor: User, seq: int) -> AuditEvent:
    """The event with this sequence number that ``actor`` may see."""
    require_reader(actor)
    event = session.scalar(select(AuditEvent).where(AuditEvent.seq == seq, _in_view(EventFilters(), actor)))
    if event is None:
        raise NotFound(f"There is no audit event {seq} that you can see")
    return event


def neighbours(session: Session, actor: User, seq: int) -> tuple[int | None, int | None]:
    """The events in view either side of ``seq``, for "previous" and "next" links."""
    condition = _in_view(EventFilters(), actor)
    before = session.scalar(select(AuditEvent.seq).where(condition, AuditEvent.seq < seq)
                            .order_by(AuditEvent.seq.desc()).limit(1))
    after = session.scalar(select(AuditEvent.seq).where(condition, AuditEvent.seq > seq)
                           .order_by(AuditEvent.seq).limit(1))
    return before, after


def subject_events(session: Session, actor: User, subject_type: str, subject_id: str) -> list[AuditEvent]:
    """Every event about one subject in view, in chain order (a generic timeline); for a
    subject of another organisation a DPO gets an empty one."""
    require_reader(actor)
    filters = EventFilters(subject_type=subject_type, subject_id=subject_id)
    return list(session.scalars(select(AuditEvent).where(_in_view(filters, actor)).order_by(AuditEvent.seq)))


def _events_about(session: Session, subjects: list[tuple[str, str]]) -> list[AuditEvent]:
    if not subjects:
        return []
    condition = or_(*(and_(AuditEvent.subject_type == kind, AuditEvent.subject_id == ident)
                      for kind, ident in subjects))
    return list(session.scalars(select(AuditEvent).where(condition).order_by(AuditEvent.seq)))


# --- the record of one decision, and the life of one transfer -----------------------------------


@dataclass(frozen=True)
class ExchangeRecord:
    exchange: Any
    transfers: list[Any]
    events: list[AuditEvent]


def exchange_record(session: Session, actor: User, exchange_id: int) -> ExchangeRecord:
    """A decision's full record: the request, every finding, the resolution, its transfers and
    every event about any of them, in chain order."""
    require_reader(actor)
    from app.decisions import service as decisions
    from app.transfers.models import Transfer

    exchange = decisions.get_exchange(session, actor, exchange_id)  # scoped as decisions are
    transfers = list(session.scalars(select(Transfer).where(Transfer.exchange_id == exchange.id)
                                     .order_by(Transfer.created_at)))
    subjects = [("exchange", str(exchange.id))] + [("transfer", t.id) for t in transfers]
    return ExchangeRecord(exchange, transfers, _events_about(session, subjects))


@dataclass(frozen=True)
class TransferTimeline:
    transfer: Any
    events: list[AuditEvent] = field(default_factory=list)


def transfer_timeline(session: Session, actor: User, transfer_id: str) -> TransferTimeline:
    """A transfer from the decision that allowed it to its destruction: the exchange's events
    and the transfer's own, in chain order."""
    require_reader(actor)
    from app.transfers.models import Transfer

    transfer = session.get(Transfer, transfer_id)
    if transfer is None or not (sees_everything(actor) or actor.organisation_id in (
            transfer.sender_organisation_id, transfer.recipient_organisation_id)):
        raise NotFound(f"There is no transfer {transfer_id} that you can see")
    subjects = [("exchange", str(transfer.exchange_id)), ("transfer", transfer.id)]
    return TransferTimeline(transfer, _events_about(session, subjects))
