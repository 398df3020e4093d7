"""What a reminder says, written from its claim: the same words in the e-mail and in the app.

Pure. The claim is immutable, so writing the text when the e-mail is sent (rather than storing a
copy per recipient) says exactly what would have been stored, and keeps the sweep's writes small.
A digest (one e-mail per address per sweep) of a single reminder says what that reminder says.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Protocol

from app.reminders.due import kind_label


#: A digest lists at most this many reminders (overdue ones and the soonest due first) and says
#: how many more there are: a first sweep can tell a coordinator of thousands at once.
DIGEST_LISTED = 200

_FOOTER = ("{these} to the data protection officers of the organisations concerned and to the CSP "
           "coordinators. Sign in to Accord and open Notifications to acknowledge or snooze {it}; "
           "coordinators see everything that falls due on the What is due page.")


class ClaimFacts(Protocol):
    kind: str
    title: str
    due_on: date
    as_of: date
    escalated: bool


class DigestFacts(Protocol):
    claims: Sequence[ClaimFacts]
    total: int
    overdue: int


def _uk_date(value: date) -> str:
    return f"{value.day} {value:%B %Y}"


def when(due_on: date, as_of: date) -> str:
    """``due in 30 days``, ``due today`` or ``overdue by 14 days``, as it stood on ``as_of``."""
    days = (due_on - as_of).days
    if days > 0:
        return f"due in {days} day{'' if days == 1 else 's'}"
    if days == 0:
        return "due today"
    return f"overdue by {-days} day{'' if days == -1 else 's'}"


def reminder_subject(title: str, due_on: date, as_of: date) -> str:
    prefix = "Overdue" if due_on < as_of else "Reminder"
    return f"{prefix}: {title} ({when(due_on, as_of)})"[:300]


def reminder_text(claim: ClaimFacts) -> tuple[str, str]:
    """The subject and body of the reminder ``claim`` records."""
    lines = [
        kind_label(claim.kind),
        "",
        claim.title,
        f"Due on {_uk_date(claim.due_on)}: {when(claim.due_on, claim.as_of)}.",
    ]
    if claim.escalated:
        lines.append("It is overdue, so the CSP chair's organisation has been told as well.")
    lines += ["", _FOOTER.format(these="This reminder goes", it="it")]
    return reminder_subject(claim.title, claim.due_on, claim.as_of), "\n".join(lines)


def digest_text(digest: DigestFacts) -> tuple[str, str]:
    """The subject and body of one sweep's reminders to one address."""
    if digest.total == 1 and len(digest.claims) == 1:
        return reminder_text(digest.claims[0])
    overdue = f", {digest.overdue} overdue" if digest.overdue else ""
    subject = f"Accord reminders: {digest.total} due or overdue{overdue}"
    lines = [f"{digest.total} reminders from Accord{overdue}:", ""]
    for claim in digest.claims:
        escalated = " The CSP chair's organisation has been told as well." if claim.escalated else ""
        lines.append(f"- {kind_label(claim.kind)}: {claim.title}. Due on {_uk_date(claim.due_on)}: "
                     f"{when(claim.due_on, claim.as_of)}.{escalated}")
    if digest.total > len(digest.claims):
        more = digest.total - len(digest.claims)
        lines.append(f"- and {more} more: see them all on the Notifications page.")
    lines += ["", _FOOTER.format(these="These reminders go", it="each")]
    return subject, "\n".join(lines)
