"""The transfers' due items for the reminder sweep: each live transfer's retention deadline.

The recipient's DPO hears ahead of the day Accord destroys a transfer, so that copies made from
it can be destroyed on time too; the item stops once the destruction is recorded.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from app.clock import LONDON, as_utc
from app.registry.models import Organisation
from app.reminders.due import DPO, DueItem
from app.reminders.providers import register_provider
from app.transfers.models import Transfer


@register_provider
def retention_deadlines(session: Session, as_of: date, horizon: date) -> Iterable[DueItem]:
    end = datetime.combine(horizon + timedelta(days=1), time.min, LONDON)
    sender, recipient = aliased(Organisation), aliased(Organisation)
    rows = session.execute(
        select(Transfer.id, Transfer.retention_until, sender.name, recipient.code)
        .join(sender, sender.id == Transfer.sender_organisation_id)
        .join(recipient, recipient.id == Transfer.recipient_organisation_id)
        .where(Transfer.destroyed_at.is_(None), Transfer.retention_until < end)
        .order_by(Transfer.retention_until))
    for transfer_id, retention_until, sender_name, recipient_code in rows:
        yield DueItem(
            kind="retention_deadline", subject_type="transfer", subject_id=transfer_id,
            title=f"Transfer {transfer_id[:8]} from {sender_name}: its retention period ends and Accord destroys it; "
                  "destroy any copies too",
            due_on=as_utc(retention_until).astimezone(LONDON).date(), organisations=(recipient_code,),
            recipient_roles=(DPO,))
