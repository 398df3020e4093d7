"""What falls due, which reminder milestone is current, and who must be told: the pure core.

No Flask, no database, no clock: the sweep passes the facts and the day (``as_of``), so every
rule here is a table-driven unit test.

Reminders are computed from due dates, not from "today" (DESIGN §7). An item due on ``due_on``
has milestones ``due_on - d`` for each ``d`` of the policy's ``reminder_milestones_days``
(90, 30, 7 and 0 by default), then one every ``overdue_reminder_interval_days`` while overdue.
:func:`milestones_for` names only the milestone that is *current* on ``as_of``: the latest one
reached. The sweep claims (kind, subject, due date, milestone) once, so a scheduler that was
down for ten days sends the latest milestone it missed and never the ones before it.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import NamedTuple

DEFAULT_MILESTONES_DAYS: tuple[int, ...] = (90, 30, 7, 0)
DEFAULT_OVERDUE_EVERY_DAYS = 7

#: Recipient roles a due item may name.
DPO = "dpo"
COORDINATOR = "coordinator"

#: What people call each kind of due item; areas that add providers add their kinds here too.
KIND_LABELS: dict[str, str] = {
    "signature_renewal": "K-MISA signature renewal",
    "kmisa_resign": "K-MISA re-signing",
    "protocol_review": "Protocol review",
    "dpia_review": "DPIA review",
    "apd_review": "Appropriate policy document review",
    "ico_registration": "ICO registration renewal",
    "emergency_review": "Retrospective review of emergency sharing",
    "referral_waiting": "Referral waiting for a DPO",
    "retention_deadline": "Retention deadline",
}


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind.replace("_", " ").capitalize())


@dataclass(frozen=True)
class DueItem:
    """Something that must be done by a date, and whom it concerns."""

    kind: str
    subject_type: str
    subject_id: str
    title: str
    due_on: date
    #: Codes of the organisations concerned; their DPOs are told.
    organisations: tuple[str, ...]
    #: Which roles hear of it: ``dpo`` (of the organisations concerned), ``coordinator``.
    recipient_roles: tuple[str, ...] = (DPO, COORDINATOR)

    @property
    def key(self) -> tuple[str, str, str, date]:
        return (self.kind, self.subject_type, self.subject_id, self.due_on)


@dataclass(frozen=True)
class Milestone:
    """One point at which a reminder goes out for an item."""

    #: Stable name stored in the claim: ``before:30``, ``before:0`` (the due day), ``overdue:2``.
    code: str
    #: The day the milestone is reached.
    reached_on: date
    #: Days from the milestone to the due date; negative once overdue.
    days_before: int

    @property
    def is_overdue(self) -> bool:
        return self.days_before < 0


def milestones_for(
    due_on: date,
    as_of: date,
    milestones_days: Sequence[int] = DEFAULT_MILESTONES_DAYS,
    overdue_every_days: int = DEFAULT_OVERDUE_EVERY_DAYS,
) -> Milestone | None:
    """The milestone current on ``as_of``: the latest one reached, or None before the first.

    Once the due date has passed, a reminder falls due every ``overdue_every_days`` days
    (``overdue:1`` a week after the due date, ``overdue:2`` a fortnight after, and so on).
    """
    if overdue_every_days < 1:
        raise ValueError("overdue_every_days must be at least 1")
    return _current(due_on, as_of, _ascending(milestones_days), overdue_every_days)


def _ascending(milestones_days: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted({d for d in milestones_days if d >= 0}))


def _current(due_on: date, as_of: date, ascending: tuple[int, ...], overdue_every_days: int) -> Milestone | None:
    days_until = (due_on - as_of).days
    if -days_until >= overdue_every_days:
        number = -days_until // overdue_every_days
        days_late = number * overdue_every_days
        return Milestone(f"overdue:{number}", due_on + timedelta(days=days_late), -days_late)
    # A milestone d days before is reached once d >= days until due; the latest reached is the smallest.
    index = bisect_left(ascending, days_until)
    if index == len(ascending):
        return None
    days = ascending[index]
    return Milestone(f"before:{days}", due_on - timedelta(days=days), days)


def describe_milestone(code: str) -> str:
    """``before:30`` -> ``30 days before``; ``before:0`` -> ``on the due day``; ``overdue:2`` -> ``overdue (2nd reminder)``."""
    stage, _, number = code.partition(":")
    if stage == "before":
        return "on the due day" if number == "0" else f"{number} day{'' if number == '1' else 's'} before"
    if stage == "overdue" and number.isdigit():
        n = int(number)
        suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        return f"overdue ({n}{suffix} reminder)"
    return code


# --- recipients ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """A user who can be told in the app and by e-mail."""

    user_id: int
    email: str
    name: str


@dataclass(frozen=True)
class Directory:
    """Who holds which role where: the facts the recipient rule needs."""

    #: Organisation code -> its enabled users with the DPO role.
    dpo_users: Mapping[str, Sequence[Person]] = field(default_factory=dict)
    #: Organisation code -> the DPO contact address in the register.
    dpo_emails: Mapping[str, str] = field(default_factory=dict)
    coordinators: Sequence[Person] = ()
    #: The CSP chair's organisation: the lead of the top-level subgroup (the board).
    chair_organisation: str | None = None


@dataclass(frozen=True)
class Recipients:
    """Who is told of one milestone: users in the app, and e-mail addresses."""

    users: tuple[Person, ...]
    emails: tuple[str, ...]
    escalated: bool


def recipients_for(item: DueItem, milestone: Milestone, directory: Directory) -> Recipients:
    """The DPOs of the organisations concerned (users and the register's DPO address), the
    coordinators, and once overdue the DPO of the CSP chair's organisation too, so a deadline
    nobody acts on reaches the partnership's chair."""
    organisations = list(dict.fromkeys(item.organisations))
    escalated = milestone.is_overdue and directory.chair_organisation is not None
    if escalated and directory.chair_organisation not in organisations:
        organisations.append(directory.chair_organisation)
    users: dict[int, Person] = {}
    emails: dict[str, str] = {}

    def add_email(address: str | None) -> None:
        if address and "@" in address:
            emails.setdefault(address.strip().lower(), address.strip())

    for code in organisations:
        if DPO in item.recipient_roles or (escalated and code == directory.chair_organisation):
            for person in directory.dpo_users.get(code, ()):
                users.setdefault(person.user_id, person)
            add_email(directory.dpo_emails.get(code))
    if COORDINATOR in item.recipient_roles:
        for person in directory.coordinators:
            users.setdefault(person.user_id, person)
    for person in users.values():
        add_email(person.email)
    return Recipients(tuple(users.values()), tuple(emails.values()), escalated)


# --- planning --------------------------------------------------------------------------------


class Planned(NamedTuple):
    """A reminder that goes out on ``as_of`` unless its milestone was already claimed (a tuple:
    a sweep over a large register plans a hundred thousand)."""

    item: DueItem
    milestone: Milestone
    #: (kind, subject type, subject id, due date, milestone): what the claim's unique constraint holds.
    claim_key: tuple[str, str, str, date, str]


def plan(
    items: Iterable[DueItem],
    as_of: date,
    already_claimed: frozenset[tuple[str, str, str, date, str]] | set = frozenset(),
    milestones_days: Sequence[int] = DEFAULT_MILESTONES_DAYS,
    overdue_every_days: int = DEFAULT_OVERDUE_EVERY_DAYS,
) -> list[Planned]:
    """The current milestone of every item that has not been claimed yet, most urgent first.

    An item listed twice (two providers, or one provider twice) is planned once.
    """
    if overdue_every_days < 1:
        raise ValueError("overdue_every_days must be at least 1")
    ascending = _ascending(milestones_days)
    # On one day the current milestone depends only on the due date, and due dates repeat.
    current: dict[date, Milestone | None] = {}
    seen: set[tuple[str, str, str, date, str]] = set()
    planned = []
    for item in items:
        try:
            milestone = current[item.due_on]
        except KeyError:
            milestone = current[item.due_on] = _current(item.due_on, as_of, ascending, overdue_every_days)
        if milestone is None:
            continue
        key = (item.kind, item.subject_type, item.subject_id, item.due_on, milestone.code)
        if key in already_claimed or key in seen:
            continue
        seen.add(key)
        planned.append(Planned(item, milestone, key))
    # Most urgent first, as a dry run lists them (the claims are inserted in another order, ``bulk``'s).
    planned.sort(key=lambda p: (p.claim_key[3], p.claim_key))
    return planned


def urgency(due_on: date, as_of: date) -> str:
    """``overdue``, ``due_today``, ``due_soon`` (within 30 days) or ``upcoming``: for status tags."""
    days = (due_on - as_of).days
    if days < 0:
        return "overdue"
    if days == 0:
        return "due_today"
    if days <= 30:
        return "due_soon"
    return "upcoming"
