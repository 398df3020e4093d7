"""The audit dashboard's figures: the register's health, the referrals waiting, the decisions
made month by month, and what falls due in the next 90 days.

The register (signatures, protocols) is the same for everyone; referrals, decisions and due
items are scoped like the rest of the workspace: a DPO sees those concerning their organisation.
What falls due comes from the reminders' provider registry (``app.reminders.providers``), so the
dashboard and the reminders can never disagree about a date.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session, joinedload

from app.audit.chart import Series
from app.audit.workspace import require_reader, sees_everything
from app.auth.models import User
from app.clock import LONDON
from app.decisions.models import Exchange, Resolution
from app.protocols import service as protocols
from app.registry import service as registry

HORIZON_DAYS = 90
MONTHS = 12
ONE_OFF = "One-off sharing (no protocol)"
SIGNATORY_ORDER = ("active", "due_for_renewal", "expired", "superseded", "withdrawn", "never_signed", "dissolved")


@dataclass(frozen=True)
class Count:
    status: str
    label: str
    count: int


@dataclass(frozen=True)
class DueRow:
    kind: str
    title: str
    due_on: date
    days: int
    organisations: tuple[str, ...]

    @property
    def state(self) -> str:
        return "overdue" if self.days < 0 else "due_today" if self.days == 0 else \
            "due_soon" if self.days <= 30 else "upcoming"


@dataclass(frozen=True)
class Dashboard:
    as_of: date
    signatures: list[Count]
    protocols: list[Count]
    protocols_past_review: int
    referrals_waiting: int
    oldest_referrals: list[Exchange]
    months: list[str]
    decisions: list[Series]
    due: list[DueRow]

    @property
    def decisions_total(self) -> int:
        return sum(sum(s.values) for s in self.decisions)


def build(session: Session, actor: User, *, as_of: date) -> Dashboard:
    require_reader(actor)
    mine = None if sees_everything(actor) else actor.organisation
    signatures = Counter()
    for organisation in registry.list_organisations(session):
        standing = registry.standing(organisation, as_of)
        key = "dissolved" if standing.dissolved else standing.status.value if standing.status else "never_signed"
        signatures[key] += 1
    views = protocols.list_protocols(session, as_of)
    protocol_counts = Counter(view.status.value for view in views)
    months, starts = _months(as_of)
    return Dashboard(
        as_of=as_of,
        signatures=[Count(s, s.replace("_", " ").capitalize(), signatures[s]) for s in SIGNATORY_ORDER
                    if signatures[s]],
        protocols=[Count(s.value, s.label, protocol_counts[s.value]) for s in protocols.ProtocolStatus
                   if protocol_counts[s.value]],
        protocols_past_review=sum(1 for v in views if v.past_review
                                  and v.status is protocols.ProtocolStatus.APPROVED),
        referrals_waiting=session.scalar(select(func.count()).select_from(_waiting(mine).subquery())) or 0,
        oldest_referrals=list(session.scalars(
            _waiting(mine).options(joinedload(Exchange.from_organisation), joinedload(Exchange.to_organisation))
            .order_by(Exchange.requested_at).limit(5))),
        months=months,
        decisions=_decisions_by_month(session, mine, starts),
        due=_due(session, mine, as_of),
    )


def _scope(mine):
    if mine is None:
        return []
    return [or_(Exchange.from_organisation_id == mine.id, Exchange.to_organisation_id == mine.id)]


def _waiting(mine):
    """Referred exchanges no DPO has decided yet."""
    return (select(Exchange).outerjoin(Resolution, Resolution.exchange_id == Exchange.id)
            .where(Exchange.outcome == "refer", Resolution.id.is_(None), *_scope(mine)))


def _months(as_of: date) -> tuple[list[str], list[datetime]]:
    """The last ``MONTHS`` calendar months to ``as_of`` (London), as labels and the instants
    they start, plus the start of the month after."""
    year, month = as_of.year, as_of.month
    firsts = []
    for _ in range(MONTHS):
        firsts.append(date(year, month, 1))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    firsts.reverse()
    following = date(as_of.year + (as_of.month == 12), as_of.month % 12 + 1, 1)
    starts = [datetime.combine(d, datetime.min.time(), LONDON) for d in firsts + [following]]
    return [f"{d:%b %Y}" for d in firsts], starts


def _decisions_by_month(session: Session, mine, starts: list[datetime]) -> list[Series]:
    """Recorded decisions per month per subgroup, counted by the database in one query."""
    bucket = case(*((and_(Exchange.requested_at >= starts[i], Exchange.requested_at < starts[i + 1]), i)
                    for i in range(len(starts) - 1)), else_=-1)
    rows = session.execute(
        select(Exchange.subgroup_code, bucket.label("month"), func.count())
        .where(Exchange.requested_at >= starts[0], Exchange.requested_at < starts[-1], *_scope(mine))
        .group_by(Exchange.subgroup_code, bucket)).all()
    names = {s.code: s.name for s in registry.list_subgroups(session)}
    counts: dict[str, list[int]] = {}
    for subgroup, month, count in rows:
        if month < 0:
            continue
        name = ONE_OFF if subgroup is None else names.get(subgroup, subgroup)
        counts.setdefault(name, [0] * (len(starts) - 1))[month] += count
    ordered = sorted(counts, key=lambda n: (n == ONE_OFF, n))
    return [Series(name, tuple(counts[name])) for name in ordered]


def _due(session: Session, mine, as_of: date) -> list[DueRow]:
    from app.reminders.due import kind_label
    from app.reminders.providers import due_items

    rows = []
    for item in due_items(session, as_of, as_of + timedelta(days=HORIZON_DAYS)):
        if mine is not None and mine.code not in item.organisations:
            continue
        rows.append(DueRow(kind=kind_label(item.kind), title=item.title, due_on=item.due_on,
                           days=(item.due_on - as_of).days, organisations=item.organisations))
    rows.sort(key=lambda r: (r.due_on, r.title))
    return rows
