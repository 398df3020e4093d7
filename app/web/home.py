"""What the start page shows each role: the things that need their attention."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.auth.models import Role, User
from app.clock import today, utcnow
from app.registry import service as registry
from app.registry.status import SignatureStatus


@dataclass(frozen=True)
class Panel:
    title: str
    count: int
    description: str
    href: str
    #: A standing to show as a status tag instead of the count (its status key, for the tag's colour).
    tag: str | None = None


def panels_for(session: Session, user: User) -> list[Panel]:
    from flask import url_for

    as_of = today()
    panels: list[Panel] = _work_panels(session, user, as_of)
    if user.has_role(Role.ADMIN, Role.COORDINATOR):
        standings = [registry.standing(o, as_of) for o in registry.list_organisations(session)]
        live = [s for s in standings if not s.dissolved]
        due = [s for s in live if s.status is SignatureStatus.DUE_FOR_RENEWAL]
        lapsed = [s for s in live if s.status is None or not s.status.is_current]
        panels.append(Panel("Signatures due for renewal", len(due),
                            "K-MISA signatures that expire within 90 days.",
                            url_for("registry.organisations", status="due_for_renewal")))
        panels.append(Panel("Partners without a current signature", len(lapsed),
                            "Organisations that cannot share until they sign the current K-MISA.",
                            url_for("registry.organisations", status="not_current")))
    own = registry.standing(user.organisation, as_of)
    key = "dissolved" if own.dissolved else (own.status.value if own.status else "never_signed")
    panels.append(Panel(f"{user.organisation.name}'s K-MISA standing", 1 if own.status and own.status.is_current else 0,
                        "Whether your organisation may share under the K-MISA today.",
                        url_for("registry.organisation", code=user.organisation.code), tag=key))
    from app.reminders.service import active_notification_count

    panels.append(Panel("Notifications", active_notification_count(session, user, as_of),
                        "Renewal and review reminders waiting for you to acknowledge.",
                        url_for("reminders.notifications")))
    return panels


#: How far back "recent" reaches for decisions an auditor reads and allowed requests not yet sent.
RECENT = timedelta(days=30)


def _work_panels(session: Session, user: User, as_of: date) -> list[Panel]:
    """What waits on this person because of their roles, most pressing first."""
    from flask import url_for

    from app.decisions import service as decisions
    from app.decisions.models import Exchange, Resolution
    from app.protocols import service as protocols

    panels: list[Panel] = []
    since = utcnow() - RECENT
    if user.has_role(Role.OFFICER):
        mine = select(func.count(Exchange.id)).where(Exchange.requested_by_id == user.id)
        awaiting = mine.where(Exchange.outcome == "refer", ~Exchange.resolution.has())
        ready = mine.where(Exchange.requested_at >= since).where(or_(
            Exchange.outcome.in_(("allow", "allow_emergency")),
            Exchange.resolution.has(and_(Resolution.decision == "approved", Resolution.valid_until >= as_of))))
        panels.append(Panel("Your requests awaiting a DPO", session.scalar(awaiting),
                            "Requests you made that a data protection officer has still to decide.",
                            url_for("decisions.exchanges", status="awaiting_dpo")))
        panels.append(Panel("Allowed requests ready to send", session.scalar(ready),
                            "Your requests of the last 30 days that you may now send as encrypted transfers.",
                            url_for("decisions.exchanges")))
    if user.has_role(Role.DPO):
        reviews = decisions.emergency_reviews(session, user)
        own = user.organisation.code
        to_sign = [v for v in protocols.list_protocols(session, as_of)
                   if v.status is protocols.ProtocolStatus.DRAFT and own in v.version.awaiting_codes]
        panels.append(Panel("Referrals waiting for your decision", len(decisions.referral_queue(session, user)),
                            "Requests involving your organisation that a DPO must approve or refuse.",
                            url_for("decisions.referrals")))
        panels.append(Panel("Emergency sharing to review", len(reviews),
                            f"{sum(1 for r in reviews if r.due_on < as_of)} overdue. Every emergency disclosure "
                            "needs a review after the fact.", url_for("decisions.referrals")))
        panels.append(Panel("Protocols awaiting your sign-off", len(to_sign),
                            "Protocol versions that cannot be used until your organisation signs them off.",
                            url_for("protocols.index")))
    if user.has_role(Role.OFFICER, Role.DPO):
        panels.extend(_received_file_panels(session, user))
    if user.has_role(Role.ADMIN, Role.COORDINATOR):
        past_review = [v for v in protocols.list_protocols(session, as_of)
                       if v.status is protocols.ProtocolStatus.APPROVED and v.past_review]
        panels.append(Panel("Protocols past their review date", len(past_review),
                            "Approved protocols that must be reviewed: sharing under them goes to a DPO, "
                            "then stops.", url_for("protocols.index")))
    if user.has_role(Role.AUDITOR):
        recent = session.scalar(select(func.count(Exchange.id)).where(Exchange.requested_at >= since))
        panels.append(Panel("Decisions in the last 30 days", recent,
                            "Every request to share that was recorded, with the reasons for its answer.",
                            url_for("decisions.exchanges")))
        panels.append(Panel("Emergency sharing not yet reviewed", len(decisions.emergency_reviews(session, user)),
                            "Emergency disclosures still waiting for a DPO's review after the fact.",
                            url_for("decisions.exchanges", outcome="allow_emergency")))
    return panels


def _received_file_panels(session: Session, user: User) -> list[Panel]:
    """Files sent to the user's organisation: unread ones, and destroyed ones whose copies it must confirm destroyed."""
    from flask import url_for

    from app.transfers.models import Transfer, TransferDownload

    received = select(func.count(Transfer.id)).where(Transfer.recipient_organisation_id == user.organisation_id)
    unread = received.where(Transfer.destroyed_at.is_(None),
                            ~select(TransferDownload.id).where(TransferDownload.transfer_id == Transfer.id).exists())
    to_confirm = received.where(Transfer.destruction_confirmation_requested_at.is_not(None),
                                Transfer.destruction_confirmed_at.is_(None))
    return [
        Panel("Files waiting to be downloaded", session.scalar(unread),
              f"Encrypted files sent to {user.organisation.name} that nobody there has downloaded yet.",
              url_for("transfers.index")),
        Panel("Destroyed files to confirm", session.scalar(to_confirm),
              "Files whose retention has ended: confirm that your own copies are destroyed too.",
              url_for("transfers.index")),
    ]
