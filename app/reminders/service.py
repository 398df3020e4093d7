"""Reminders: the sweep that claims and sends them, notifications, what is due, the outbox page
and calendar feeds. Services flush; the job, command or request around them commits once.

The sweep's number of statements does not grow with the register: providers load in bulk, the
claims already made are read in one query, and the new claims, their few distinct audiences and
one e-mail digest per address are written in three statements on PostgreSQL and a few more on
SQLite (``app.reminders.bulk``). A user's notifications are the claims of the audiences they
belong to; a notification row records what they did with one (acknowledged, snoozed).
"""
from __future__ import annotations

import gc
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from app.audit import service as audit
from app.auth.models import Role, User, UserRole
from app.auth.permissions import require_role
from app.errors import NotFound, ValidationFailed
from app.reminders import due, providers
from app.reminders.bulk import Audience, PlannedClaim, claim_and_fan_out, take_turn
from app.reminders.models import (CalendarFeedToken, Notification, OutboxMessage, ReminderAudienceMember,
                                  ReminderClaim)
from app.reminders.outbox import load_digests
from app.reminders.text import reminder_subject
from app.registry.models import Organisation, Subgroup

SCHEDULER_ACTOR = "system:scheduler"

#: Who may see what falls due: coordinators and administrators everything, DPOs their own organisation's.
DUE_READERS = (Role.ADMIN, Role.COORDINATOR, Role.DPO)
OUTBOX_READERS = (Role.ADMIN, Role.COORDINATOR)
LONGEST_SNOOZE_DAYS = 365


def _uk_date(value: date) -> str:
    return f"{value.day} {value:%B %Y}"


# --- settings and facts ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReminderSettings:
    milestones_days: tuple[int, ...] = due.DEFAULT_MILESTONES_DAYS
    overdue_every_days: int = due.DEFAULT_OVERDUE_EVERY_DAYS

    @property
    def lead_days(self) -> int:
        return max(self.milestones_days, default=0)


def reminder_settings(session: Session) -> ReminderSettings:
    """Milestones from ``kmisa.yaml`` as loaded; the defaults only when no policy is loaded."""
    from app.protocols.service import stored_bundle

    try:
        kmisa = stored_bundle(session).kmisa
    except NotFound:
        return ReminderSettings()
    return ReminderSettings(tuple(kmisa.reminder_milestones_days), kmisa.overdue_reminder_interval_days)


def load_directory(session: Session) -> due.Directory:
    """Every DPO and coordinator, the register's DPO addresses and the chair's organisation."""
    rows = session.execute(
        select(User.id, User.email, User.name, UserRole.role, Organisation.code)
        .join(UserRole, UserRole.user_id == User.id)
        .join(Organisation, Organisation.id == User.organisation_id)
        .where(User.is_enabled.is_(True), UserRole.role.in_([Role.DPO.value, Role.COORDINATOR.value]))
        .order_by(User.id)
    )
    dpo_users: dict[str, list[due.Person]] = {}
    coordinators: list[due.Person] = []
    for user_id, email, name, role, code in rows:
        person = due.Person(user_id, email, name)
        if role == Role.DPO.value:
            dpo_users.setdefault(code, []).append(person)
        else:
            coordinators.append(person)
    dpo_emails = {code: email for code, email in session.execute(
        select(Organisation.code, Organisation.dpo_email).where(Organisation.dpo_email.is_not(None)))}
    chair = session.scalar(
        select(Organisation.code).join(Subgroup, Subgroup.lead_organisation_id == Organisation.id)
        .where(Subgroup.parent_id.is_(None)).order_by(Subgroup.id).limit(1))
    return due.Directory(dpo_users=dpo_users, dpo_emails=dpo_emails, coordinators=coordinators,
                         chair_organisation=chair)


# --- the sweep ------------------------------------------------------------------------------------


class PlannedReminder(NamedTuple):
    """A reminder a sweep would send, with its recipients (a tuple: sweeps make many)."""

    planned: due.Planned
    recipients: due.Recipients

    @property
    def item(self) -> due.DueItem:
        return self.planned.item

    @property
    def milestone(self) -> due.Milestone:
        return self.planned.milestone


@dataclass
class SweepResult:
    as_of: date
    dry_run: bool
    planned: list[PlannedReminder] = field(default_factory=list)
    claimed: int = 0
    messages: int = 0
    notifications: int = 0

    def __str__(self) -> str:
        verb = "would claim" if self.dry_run else "claimed"
        return (f"sweep for {self.as_of.isoformat()}: {verb} {len(self.planned)}, {self.messages} e-mails, "
                f"{self.notifications} notifications")


def _claimed_keys(session: Session, planned: list[due.Planned]) -> set[tuple[str, str, str, date, str]]:
    """The claims already made among ``planned``, read in one query."""
    if not planned:
        return set()
    dues = [p.item.due_on for p in planned]
    codes = sorted({p.milestone.code for p in planned})
    rows = session.execute(
        select(ReminderClaim.kind, ReminderClaim.subject_type, ReminderClaim.subject_id, ReminderClaim.due_on,
               ReminderClaim.milestone)
        .where(ReminderClaim.due_on.between(min(dues), max(dues)), ReminderClaim.milestone.in_(codes)))
    return {tuple(row) for row in rows}  # type: ignore[misc]


def plan_reminders(session: Session, as_of: date, settings: ReminderSettings | None = None,
                   items: Iterable[due.DueItem] | None = None) -> list[PlannedReminder]:
    """What a sweep on ``as_of`` would send: each item's current milestone not yet claimed.

    ``items`` defaults to what every provider returns; the benchmark passes generated ones.
    """
    settings = settings or reminder_settings(session)
    if items is None:
        items = providers.due_items(session, as_of, as_of + timedelta(days=settings.lead_days))
    candidates = due.plan(items, as_of, set(), settings.milestones_days, settings.overdue_every_days)
    claimed = _claimed_keys(session, candidates)
    remaining = [p for p in candidates if p.claim_key not in claimed]
    if not remaining:
        return []
    directory = load_directory(session)
    # Items about the same organisations share their recipients: work each set out once.
    recipients: dict[tuple, due.Recipients] = {}
    planned: list[PlannedReminder] = []
    append = planned.append
    for p in remaining:
        item = p.item
        key = (item.organisations, item.recipient_roles, p.milestone.is_overdue)
        found = recipients.get(key)
        if found is None:
            found = recipients[key] = due.recipients_for(item, p.milestone, directory)
        append(tuple.__new__(PlannedReminder, (p, found)))  # as in _claims_and_audiences
    return planned


def _claims_and_audiences(planned: list[PlannedReminder]) -> tuple[list[PlannedClaim], list[Audience]]:
    """The claims to insert, each naming its audience by index; reminders planned with the same
    recipients (``plan_reminders`` shares them) share one audience."""
    audience_of: dict[int, int] = {}
    audiences: list[Audience] = []
    claims: list[PlannedClaim] = []
    append = claims.append
    for p, recipients in planned:
        index = audience_of.get(id(recipients))
        if index is None:
            index = audience_of[id(recipients)] = len(audiences)
            audiences.append(Audience(recipients.emails, tuple(person.user_id for person in recipients.users)))
        # tuple.__new__ is what PlannedClaim's own constructor calls, less a Python frame per
        # claim: a third of this loop's time in a first sweep of 100,000 items.
        append(tuple.__new__(PlannedClaim, (*p.claim_key, p.item.title[:300], recipients.escalated, index)))
    return claims, audiences


@contextmanager
def _cyclic_collector_paused() -> Iterator[None]:
    """Hold off Python's cycle collector while a sweep plans and writes its claims.

    A first sweep over a large register builds a few hundred thousand small tuples, none of them
    in a cycle; each of the collector's full passes meanwhile walks every object the process
    holds, which cost a sweep of 100,000 items 0.7 s of its 1.7 s in Python. Reference counting
    still frees everything; the collector runs again as soon as the sweep is done.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def sweep(session: Session, *, as_of: date, now: datetime, actor: Any = SCHEDULER_ACTOR,
          dry_run: bool = False, items: Iterable[due.DueItem] | None = None) -> SweepResult:
    """Claim and send every reminder due on ``as_of``, exactly once per milestone.

    A sweep that sends takes its turn first (``bulk.take_turn``): a second scheduler, or an
    operator's command, waits until this one commits, then reads these claims as made and plans
    nothing of them. The unique constraint on claims still refuses a milestone claimed twice.
    The e-mails and notifications are written in the same transaction as the claims; the e-mails
    leave later from the outbox.
    """
    if not dry_run:
        take_turn(session)
    with _cyclic_collector_paused():
        result = SweepResult(as_of=as_of, dry_run=dry_run, planned=plan_reminders(session, as_of, items=items))
        if dry_run or not result.planned:
            return result
        fan_out = claim_and_fan_out(session, *_claims_and_audiences(result.planned), as_of=as_of, now=now)
    result.claimed, result.messages, result.notifications = fan_out.claimed, fan_out.messages, fan_out.notifications
    if fan_out.claimed:
        audit.record(session, action="reminders.sent", actor=actor, subject_type="reminder_sweep",
                     subject_id=as_of.isoformat(),
                     details={"as_of": as_of.isoformat(), "claims": fan_out.claimed, "emails": fan_out.messages,
                              "notifications": fan_out.notifications, "kinds": fan_out.kinds,
                              "first_claim_id": fan_out.first_claim_id, "last_claim_id": fan_out.last_claim_id,
                              "sweep_id": fan_out.sweep_id},
                     occurred_at=now)
    session.flush()
    return result


# --- notifications ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShownReminder:
    """A reminder as one user sees it in the app: its claim, and what they did with it (if anything)."""

    claim: ReminderClaim
    state: Notification | None

    @property
    def id(self) -> int:
        return self.claim.id

    @property
    def kind(self) -> str:
        return self.claim.kind

    @property
    def due_on(self) -> date:
        return self.claim.due_on

    @property
    def created_at(self) -> datetime:
        return self.claim.claimed_at

    @property
    def title(self) -> str:
        return reminder_subject(self.claim.title, self.claim.due_on, self.claim.as_of)

    @property
    def acknowledged_at(self) -> datetime | None:
        return None if self.state is None else self.state.acknowledged_at

    @property
    def snoozed_until(self) -> date | None:
        return None if self.state is None else self.state.snoozed_until

    def is_active_on(self, as_of: date) -> bool:
        return self.state is None or self.state.is_active_on(as_of)


def page_count(total: int, per_page: int) -> int:
    """How many pages ``total`` rows fill, ``per_page`` a page; an empty list still has its page."""
    return max(1, -(-total // per_page))


def _check_page(page: int, per_page: int) -> None:
    if page < 1 or per_page < 1:
        raise ValidationFailed({"page": "Pages are numbered from 1."})


#: Reminders on one page of a user's notifications: a first sweep of a large register can tell a
#: coordinator of thousands.
NOTIFICATIONS_PER_PAGE = 50


@dataclass(frozen=True)
class NotificationLists:
    """One page of a user's reminders to deal with, the soonest snoozed and the latest
    acknowledged, with how many there are of each."""

    active: list[ShownReminder]
    snoozed: list[ShownReminder]
    acknowledged: list[ShownReminder]
    active_total: int = 0
    snoozed_total: int = 0
    acknowledged_total: int = 0
    page: int = 1
    per_page: int = NOTIFICATIONS_PER_PAGE

    @property
    def pages(self) -> int:
        return page_count(self.active_total, self.per_page)


def _told(user: User, *columns):
    """The claims whose audience holds ``user``, beside the user's own notification row, if any."""
    return (select(*columns).select_from(ReminderClaim)
            .join(ReminderAudienceMember, and_(ReminderAudienceMember.audience_id == ReminderClaim.audience_id,
                                               ReminderAudienceMember.user_id == user.id))
            .outerjoin(Notification, and_(Notification.claim_id == ReminderClaim.id, Notification.user_id == user.id)))


_NOT_ACKNOWLEDGED = or_(Notification.id.is_(None), Notification.acknowledged_at.is_(None))
_ACKNOWLEDGED = Notification.acknowledged_at.is_not(None)


def _active(as_of: date):
    return and_(_NOT_ACKNOWLEDGED, or_(Notification.id.is_(None), Notification.snoozed_until.is_(None),
                                       Notification.snoozed_until <= as_of))


def _snoozed(as_of: date):
    return and_(Notification.acknowledged_at.is_(None), Notification.snoozed_until > as_of)


def active_notification_count(session: Session, user: User, as_of: date) -> int:
    return session.scalar(_told(user, func.count()).where(_active(as_of))) or 0


def list_notifications(session: Session, user: User, as_of: date, *, page: int = 1,
                       per_page: int = NOTIFICATIONS_PER_PAGE, listed: int = 50) -> NotificationLists:
    """Page ``page`` of the reminders ``user`` has to deal with (soonest due first), and the
    first ``listed`` snoozed (soonest back first) and acknowledged (latest first)."""
    _check_page(page, per_page)

    def shown(condition, order, limit, offset=0) -> list[ShownReminder]:
        return [ShownReminder(claim, state) for claim, state in session.execute(
            _told(user, ReminderClaim, Notification).where(condition).order_by(*order).limit(limit).offset(offset))]

    def total(condition) -> int:
        return session.scalar(_told(user, func.count()).where(condition)) or 0

    return NotificationLists(
        active=shown(_active(as_of), (ReminderClaim.due_on, ReminderClaim.id), per_page, (page - 1) * per_page),
        snoozed=shown(_snoozed(as_of), (Notification.snoozed_until, ReminderClaim.due_on, ReminderClaim.id), listed),
        acknowledged=shown(_ACKNOWLEDGED, (Notification.acknowledged_at.desc(), ReminderClaim.id.desc()), listed),
        active_total=total(_active(as_of)), snoozed_total=total(_snoozed(as_of)),
        acknowledged_total=total(_ACKNOWLEDGED), page=page, per_page=per_page)


def get_notification(session: Session, user: User, claim_id: int) -> ShownReminder:
    """A reminder ``user`` was told of (by its claim's id); anyone else's is simply not found."""
    row = session.execute(_told(user, ReminderClaim, Notification).where(ReminderClaim.id == claim_id)).first()
    if row is None:
        raise NotFound("There is no such notification")
    return ShownReminder(*row)


def _state(session: Session, user: User, shown: ShownReminder, now: datetime) -> Notification:
    """The user's notification row for ``shown``, made now if this is the first thing they do with
    it; a second request making it at the same moment (a double click) finds the first one's."""
    if shown.state is not None:
        return shown.state
    try:
        with session.begin_nested():
            state = Notification(user_id=user.id, claim_id=shown.claim.id, created_at=now)
            session.add(state)
    except IntegrityError:
        state = session.scalars(select(Notification).where(Notification.user_id == user.id,
                                                           Notification.claim_id == shown.claim.id)).one()
    return state


def acknowledge(session: Session, user: User, claim_id: int, *, now: datetime) -> ShownReminder:
    shown = get_notification(session, user, claim_id)
    if shown.acknowledged_at is None:
        state = _state(session, user, shown, now)
        state.acknowledged_at = now
        state.snoozed_until = None
        session.flush()
        audit.record(session, action="notification.acknowledged", actor=user, organisation=user.organisation.code,
                     subject_type="notification", subject_id=state.id,
                     details={"kind": shown.kind, "subject_type": shown.claim.subject_type,
                              "subject_id": shown.claim.subject_id, "claim_id": shown.claim.id},
                     occurred_at=now)
        shown = ShownReminder(shown.claim, state)
    return shown


def snooze(session: Session, user: User, claim_id: int, *, until: date | None, as_of: date,
           now: datetime) -> ShownReminder:
    """Hide a reminder from ``user``'s list until ``until``, when it shows again."""
    shown = get_notification(session, user, claim_id)
    if shown.acknowledged_at is not None:
        raise ValidationFailed({"until": "This reminder has already been acknowledged"})
    if not isinstance(until, date):
        raise ValidationFailed({"until": "Enter the date to be reminded again"})
    if until <= as_of:
        raise ValidationFailed({"until": "The date to be reminded again must be in the future"})
    if until > as_of + timedelta(days=LONGEST_SNOOZE_DAYS):
        raise ValidationFailed({"until": f"Snooze for at most {LONGEST_SNOOZE_DAYS} days"})
    state = _state(session, user, shown, now)
    state.snoozed_until = until
    session.flush()
    audit.record(session, action="notification.snoozed", actor=user, organisation=user.organisation.code,
                 subject_type="notification", subject_id=state.id,
                 details={"until": until.isoformat(), "kind": shown.kind, "claim_id": shown.claim.id},
                 occurred_at=now)
    return ShownReminder(shown.claim, state)


# --- what is due -------------------------------------------------------------------------------

_URGENCY_ORDER = ("overdue", "due_today", "due_soon", "upcoming")


@dataclass(frozen=True)
class DueRow:
    item: due.DueItem
    urgency: str
    #: The latest reminder claimed for this item (its milestone code and when), if any.
    last_reminder: ReminderClaim | None

    @property
    def kind_label(self) -> str:
        return due.kind_label(self.item.kind)

    @property
    def last_reminder_label(self) -> str:
        if self.last_reminder is None:
            return "Not yet sent"
        claim = self.last_reminder
        return (f"{_uk_date(claim.as_of)}, {due.describe_milestone(claim.milestone)}"
                + (", escalated to the chair" if claim.escalated else ""))


#: Items on one page of what is due: a large register has thousands within 90 days.
DUE_PER_PAGE = 100


@dataclass(frozen=True)
class DuePage:
    """One page of what is due, with how many items there are in all and how many are overdue."""

    rows: list[DueRow]
    total: int
    overdue: int
    page: int = 1
    per_page: int = DUE_PER_PAGE

    @property
    def pages(self) -> int:
        return page_count(self.total, self.per_page)


def due_for(session: Session, user: User, as_of: date, days: int) -> list[due.DueItem]:
    """Everything due within ``days`` and everything overdue, each once, overdue first then by date.

    Coordinators and administrators see the whole partnership; a DPO sees what concerns their
    organisation.
    """
    require_role(user, *DUE_READERS, action="see what falls due")
    items = providers.due_items(session, as_of, as_of + timedelta(days=days))
    if not user.has_role(Role.ADMIN, Role.COORDINATOR):
        items = [i for i in items if user.organisation.code in i.organisations]
    unique = list({item.key: item for item in items}.values())
    unique.sort(key=lambda i: (_URGENCY_ORDER.index(due.urgency(i.due_on, as_of)), i.due_on, i.title))
    return unique


def what_is_due(session: Session, user: User, as_of: date, days: int = 90, *, page: int = 1,
                per_page: int = DUE_PER_PAGE) -> DuePage:
    """Page ``page`` of :func:`due_for`, each item with the latest reminder claimed for it."""
    _check_page(page, per_page)
    items = due_for(session, user, as_of, days)
    shown = items[(page - 1) * per_page:page * per_page]
    latest = _latest_claims(session, [item.key for item in shown])
    rows = [DueRow(item, due.urgency(item.due_on, as_of), latest.get(item.key)) for item in shown]
    overdue = sum(1 for item in items if due.urgency(item.due_on, as_of) == "overdue")
    return DuePage(rows, len(items), overdue, page, per_page)


def _latest_claims(session: Session, keys: list[tuple[str, str, str, date]]
                   ) -> dict[tuple[str, str, str, date], ReminderClaim]:
    """The latest claim of each (kind, subject type, subject id, due date) in ``keys``: one query,
    on the leading columns of the claims' unique constraint."""
    if not keys:
        return {}
    key = tuple_(ReminderClaim.kind, ReminderClaim.subject_type, ReminderClaim.subject_id, ReminderClaim.due_on)
    latest: dict[tuple[str, str, str, date], ReminderClaim] = {}
    for claim in session.scalars(select(ReminderClaim).where(key.in_(keys))
                                 .order_by(ReminderClaim.claimed_at, ReminderClaim.id)):
        latest[(claim.kind, claim.subject_type, claim.subject_id, claim.due_on)] = claim
    return latest


# --- the outbox page ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxView:
    counts: dict[str, int]
    waiting: list[OutboxMessage]
    failed: list[OutboxMessage]
    recently_sent: list[OutboxMessage]


def outbox_view(session: Session, user: User, limit: int = 200) -> OutboxView:
    require_role(user, *OUTBOX_READERS, action="see the outbox")
    counts = dict(session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all())

    def listed(status: str, order) -> list[OutboxMessage]:
        # The page shows each message's subject, which takes a digest's first reminder and its
        # totals: not the 200 reminders it lists (a first sweep's 200 digests listed 40,000).
        return load_digests(session, list(session.scalars(
            select(OutboxMessage).options(selectinload(OutboxMessage.claim))
            .where(OutboxMessage.status == status).order_by(*order).limit(limit))), listed=1)

    return OutboxView(
        counts={status: counts.get(status, 0) for status in ("pending", "failed", "sent")},
        waiting=listed("pending", (OutboxMessage.next_attempt_at, OutboxMessage.id)),
        failed=listed("failed", (OutboxMessage.last_attempt_at.desc(), OutboxMessage.id.desc())),
        recently_sent=listed("sent", (OutboxMessage.sent_at.desc(), OutboxMessage.id.desc()))[:50],
    )


def retry_failed(session: Session, user: User, *, now: datetime) -> int:
    """Put every failed message back in the queue, to be tried at the next delivery."""
    require_role(user, *OUTBOX_READERS, action="send failed e-mail again")
    result = session.execute(update(OutboxMessage).where(OutboxMessage.status == "failed")
                             .values(status="pending", attempts=0, next_attempt_at=now))
    count = result.rowcount or 0
    if count:
        audit.record(session, action="outbox.requeued", actor=user, organisation=user.organisation.code,
                     subject_type="outbox", details={"messages": count}, occurred_at=now)
    session.flush()
    return count


# --- calendar feeds -------------------------------------------------------------------------------

FEED_TOKEN_PREFIX = "cal_"


def _feed_digest(pepper: str, plaintext: str) -> str:
    return hmac.new(pepper.encode(), plaintext.encode(), hashlib.sha256).hexdigest()


def feed_token(session: Session, user: User) -> CalendarFeedToken | None:
    return session.scalar(select(CalendarFeedToken).where(CalendarFeedToken.user_id == user.id,
                                                          CalendarFeedToken.revoked_at.is_(None))
                          .order_by(CalendarFeedToken.id.desc()).limit(1))


def revoke_feed_tokens(session: Session, user: User, *, now: datetime) -> int:
    live = list(session.scalars(select(CalendarFeedToken).where(CalendarFeedToken.user_id == user.id,
                                                                CalendarFeedToken.revoked_at.is_(None))))
    for token in live:
        token.revoked_at = now
    if live:
        audit.record(session, action="calendar_feed.revoked", actor=user, organisation=user.organisation.code,
                     subject_type="calendar_feed", subject_id=user.id, details={"tokens": len(live)}, occurred_at=now)
    session.flush()
    return len(live)


def create_feed_token(session: Session, user: User, *, now: datetime, pepper: str) -> str:
    """A new feed secret for ``user`` (replacing any other); returned once, stored as a hash."""
    require_role(user, *DUE_READERS, action="subscribe to the calendar of due dates")
    revoke_feed_tokens(session, user, now=now)
    plaintext = FEED_TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(CalendarFeedToken(user=user, token_hash=_feed_digest(pepper, plaintext), created_at=now))
    session.flush()
    audit.record(session, action="calendar_feed.created", actor=user, organisation=user.organisation.code,
                 subject_type="calendar_feed", subject_id=user.id, details={}, occurred_at=now)
    return plaintext


def user_for_feed(session: Session, plaintext: str, *, pepper: str) -> User | None:
    """The enabled user whose live feed secret this is, or None."""
    if not plaintext.startswith(FEED_TOKEN_PREFIX) or len(plaintext) > 100:
        return None
    token = session.scalar(select(CalendarFeedToken).options(selectinload(CalendarFeedToken.user))
                           .where(CalendarFeedToken.token_hash == _feed_digest(pepper, plaintext)))
    if token is None or token.revoked_at is not None or not token.user.is_enabled:
        return None
    if not token.user.has_role(*DUE_READERS):
        return None
    return token.user
