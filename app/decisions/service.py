"""Checking and recording exchanges, DPO referrals, emergency reviews, impact and ad hoc patterns.

The engine is pure; this module feeds it. It keeps one snapshot of the register and the loaded
policies per database, rebuilt only when the register revision moves, adds the live ad hoc
count for the pair in question, and stores the decision with its audit event in the caller's
transaction.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, func, or_, select
from sqlalchemy.orm import Session, joinedload, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from app.audit import service as audit
from app.auth import tokens
from app.auth.models import Role, User
from app.auth.permissions import require_role
from app.clock import LONDON, as_utc
from app.database import NotInserted, insert_row_reading, new_row
from app.decisions.engine import Decision, ExchangeRequest, OrganisationFacts, Snapshot, decide
from app.decisions.models import EmergencyReview, Exchange, Resolution
from app.decisions.snapshot import InvalidRequest, build_snapshot, request_from_dict
from app.errors import Conflict, NotFound, ValidationFailed
from app.policies.loader import PolicyBundle
from app.protocols import service as protocols
from app.protocols.models import ProtocolSignOff, ProtocolVersion
from app.registry import service as registry
from app.registry.models import Organisation, Signature
from app.registry.status import SignatureFacts

#: Who may ask Accord to check or record an exchange.
REQUESTERS = (Role.OFFICER, Role.DPO, Role.COORDINATOR, Role.ADMIN)
#: Who sees every exchange, not only their organisation's.
OVERSEERS = (Role.AUDITOR, Role.COORDINATOR, Role.ADMIN)
#: The longest a DPO's approval of a referral may last.
MAX_APPROVAL = timedelta(days=366)


# --- the snapshot -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Register:
    """What checking and recording read from the register, as of one revision."""

    revision: int
    snapshot: Snapshot
    #: Organisation ids by code (codes never change), so recording an exchange looks up neither party.
    organisation_ids: Mapping[str, int]


_registers: dict[str, Register] = {}
_registers_lock = threading.Lock()


def register_facts(session: Session) -> tuple[list[OrganisationFacts], list[SignatureFacts]]:
    organisations = []
    for org in session.scalars(select(Organisation).options(joinedload(Organisation.successor))):
        organisations.append(OrganisationFacts(
            code=org.code, name=org.name, kind=org.kind, is_public_authority=org.is_public_authority,
            is_competent_authority=org.is_competent_authority,
            status="dissolved" if org.dissolved_on is not None else "active", dissolved_on=org.dissolved_on,
            successor=org.successor.code if org.successor else None,
            ico_registration_expires_on=org.ico_registration_expires_on, dpo_email=org.dpo_email,
            apd_paragraphs=frozenset(org.apd_paragraphs or ()), apd_review_on=org.apd_review_on,
        ))
    signatures = [
        SignatureFacts(s.organisation.code, s.kmisa_version.label, s.signed_on, s.expires_on, s.withdrawn_on)
        for s in session.scalars(select(Signature).options(joinedload(Signature.organisation),
                                                           joinedload(Signature.kmisa_version)))
    ]
    return organisations, signatures


def signoff_map(session: Session) -> dict[tuple[str, int], set[str]]:
    result: dict[tuple[str, int], set[str]] = {}
    rows = session.execute(select(ProtocolVersion.code, ProtocolVersion.version, Organisation.code)
                           .join(ProtocolSignOff, ProtocolSignOff.protocol_version_id == ProtocolVersion.id)
                           .join(Organisation, Organisation.id == ProtocolSignOff.organisation_id))
    for code, version, organisation in rows:
        result.setdefault((code, version), set()).add(organisation)
    return result


def build_current_snapshot(session: Session, bundle: PolicyBundle | None = None,
                           extra_signoffs: Mapping[tuple[str, int], Iterable[str]] | None = None) -> Snapshot:
    organisations, signatures = register_facts(session)
    signoffs = signoff_map(session)
    for key, codes in (extra_signoffs or {}).items():
        signoffs.setdefault(key, set()).update(codes)
    return build_snapshot(bundle or protocols.stored_bundle(session), organisations, signatures, signoffs)


def current_register(session: Session, revision: int | None = None) -> Register:
    """The register for this database, rebuilt only when the register revision has moved.

    ``revision`` is the revision if the caller has just read it (an API request reads it with
    its token); otherwise it is read here.
    """
    key = session.get_bind().url.render_as_string(hide_password=True)
    if revision is None:
        revision = registry.current_revision(session)
    cached = _registers.get(key)
    if cached is not None and cached.revision == revision:
        return cached
    register = Register(revision, build_current_snapshot(session),
                        dict(session.execute(select(Organisation.code, Organisation.id)).all()))
    with _registers_lock:
        _registers[key] = register
    return register


def current_snapshot(session: Session) -> Snapshot:
    return current_register(session).snapshot


def _with_live_ad_hoc_count(session: Session, register: Register, request: ExchangeRequest) -> Snapshot:
    """The snapshot with this pair's one-off count in the K-MISA window, counted now."""
    snapshot = register.snapshot
    if request.protocol is not None:
        return snapshot
    as_of = request.as_of
    moment = as_of if isinstance(as_of, datetime) else datetime.combine(as_of, datetime.max.time(), LONDON)
    since = moment - timedelta(days=snapshot.kmisa.ad_hoc_window_days)
    ids = register.organisation_ids
    if request.from_org not in ids or request.to_org not in ids:
        return snapshot
    a, b = ids[request.from_org], ids[request.to_org]
    count = session.scalar(select(func.count()).select_from(Exchange).where(
        Exchange.is_one_off.is_(True), Exchange.purpose == request.purpose,
        Exchange.requested_at > since, Exchange.requested_at <= moment,
        or_((Exchange.from_organisation_id == a) & (Exchange.to_organisation_id == b),
            (Exchange.from_organisation_id == b) & (Exchange.to_organisation_id == a))))
    first, second = sorted((request.from_org, request.to_org))
    return dataclasses.replace(snapshot, ad_hoc_counts={(first, second, request.purpose): count or 0})


# --- checking and recording --------------------------------------------------------------------


def parse_request(data: Mapping[str, Any], *, default_as_of: date | datetime) -> ExchangeRequest:
    try:
        return request_from_dict(data, default_as_of=default_as_of)
    except InvalidRequest as exc:
        raise ValidationFailed({field or "request": message for field, message in exc.problems}) from None


def check(session: Session, actor: User, data: Mapping[str, Any], *, now: datetime,
          register_revision: int | None = None) -> Decision:
    """A dry run: what the answer is (or was, or would be on ``as_of``). Nothing is recorded.

    ``register_revision``: as for ``current_register``."""
    require_role(actor, *REQUESTERS, action="check an exchange")
    request = parse_request(data, default_as_of=now)
    register = current_register(session, register_revision)
    return decide(request, _with_live_ad_hoc_count(session, register, request))


def record(session: Session, actor: User, data: Mapping[str, Any], *, now: datetime,
           register_revision: int | None = None, unconfirmed: tuple[int, int] | None = None) -> Exchange:
    """Record a proposed exchange and its decision, decided as of now, with its audit event,
    which is the transaction's last write: commit with ``app.database.commit``.

    ``register_revision``: as for ``current_register``. ``unconfirmed``: the revisions an API
    authentication took as read (``tokens.Authenticated.unconfirmed``); the exchange's INSERT
    holds them as its condition, and raises ``tokens.RevisionsMoved`` having written nothing if
    either moved."""
    require_role(actor, *REQUESTERS, action="submit an exchange")
    if data.get("as_of") is not None:
        raise ValidationFailed({"as_of": "A recorded exchange is always decided as of now: remove as_of, "
                                         "or use the check for a past or future date"})
    request = parse_request(data, default_as_of=now)
    if request.from_org != actor.organisation.code and not actor.has_role(Role.ADMIN):
        raise ValidationFailed({"from_org": f"You act for {actor.organisation.name}: from_org must be "
                                            f"{actor.organisation.code}"})
    register = current_register(session, register_revision)
    snapshot = register.snapshot
    decision = decide(request, _with_live_ad_hoc_count(session, register, request))
    ids = register.organisation_ids
    missing = [c for c in (request.from_org, request.to_org) if c not in ids]
    if missing:
        raise ValidationFailed({("from_org" if c == request.from_org else "to_org"):
                                f"There is no organisation with the code {c!r}" for c in missing})
    protocol = snapshot.protocols.get((decision.protocol_code, decision.protocol_version)) \
        if decision.protocol_code else None
    exchange = new_row(
        Exchange, from_organisation_id=ids[request.from_org], to_organisation_id=ids[request.to_org],
        requested_by_id=actor.id, requested_at=now, purpose=request.purpose, protocol_code=decision.protocol_code,
        protocol_version=decision.protocol_version, protocol_hash=decision.protocol_hash,
        subgroup_code=protocol.subgroup if protocol else None, bundle_hash=decision.bundle_hash,
        outcome=decision.outcome.value, is_one_off=request.protocol is None,
        emergency_category=request.emergency.category if request.emergency else None,
        retention_months=request.retention_months, request=request.to_dict(), decision=decision.to_dict(),
        resolution=None, emergency_review=None,
    )
    # Drafted first: the lock taken next is held, and every other submission waits, until the
    # event commits.
    event = audit.draft(action="exchange.recorded", actor=actor, organisation=request.from_org,
                        subject_type="exchange", occurred_at=now, details=_audit_details(exchange, decision))
    # The exchange's INSERT also takes the audit chain's lock and reads its head (PostgreSQL).
    condition = {} if unconfirmed is None else {"only_if": tokens.revisions_unchanged(),
                                                "only_if_values": tokens.revisions_values(unconfirmed)}
    try:
        exchange, head = insert_row_reading(session, exchange, audit.head_columns(session), **condition)
    except NotInserted:
        raise tokens.RevisionsMoved() from None
    if decision.emergency_accepted:
        due = decision.retrospective_review_due or (now.astimezone(LONDON).date() + timedelta(days=snapshot.kmisa.emergency_review_days))
        session.add(EmergencyReview(exchange=exchange, due_on=due))
    audit.append_at_commit(session, event, subject_id=exchange.id, locked_head=head or None)
    # Read with the exchange, as a load would put it; by id above, as ``actor`` may be the
    # principal's detached copy (``tokens.Authenticated.user``), which no session may take in.
    set_committed_value(exchange, "requested_by", actor)
    return exchange


def _audit_details(exchange: Exchange, decision: Decision) -> dict[str, Any]:
    return {
        "outcome": decision.outcome.value,
        "from_org": exchange.request["from_org"], "to_org": exchange.request["to_org"],
        "purpose": exchange.purpose,
        "protocol": f"{exchange.protocol_code}:v{exchange.protocol_version}" if exchange.protocol_code else None,
        "protocol_hash": exchange.protocol_hash, "subgroup": exchange.subgroup_code,
        "bundle_hash": exchange.bundle_hash, "kmisa_versions": list(decision.kmisa_versions),
        "reasons": [f"{f.rule}:{f.outcome.value}" for f in decision.reasons],
        "emergency": exchange.emergency_category,
    }


# --- reading, scoped -------------------------------------------------------------------------------


def _scoped(query, actor: User):
    if actor.has_role(*OVERSEERS):
        return query
    org = actor.organisation_id
    return query.where(or_(Exchange.from_organisation_id == org, Exchange.to_organisation_id == org))


def get_exchange(session: Session, actor: User, exchange_id: int) -> Exchange:
    """The exchange with this id that ``actor`` may see; any other is simply not found."""
    if actor.has_role(*OVERSEERS):
        exchange = session.scalar(_exchange_by_id(scoped=False), {"exchange_id": exchange_id})
    else:
        exchange = session.scalar(_exchange_by_id(scoped=True),
                                  {"exchange_id": exchange_id, "organisation_id": actor.organisation_id})
    if exchange is None:
        raise NotFound(f"There is no exchange {exchange_id} that you can see")
    return exchange


@cache
def _exchange_by_id(*, scoped: bool) -> Select:
    """One statement for everything an API answer or a page shows about an exchange; ``scoped``
    to those of one organisation. Built once: building it with its five joined loads, and working
    out its cache key, cost more CPU than running it (every upload and every read runs it)."""
    query = select(Exchange).where(Exchange.id == bindparam("exchange_id"))
    if scoped:
        organisation = bindparam("organisation_id")
        query = query.where(or_(Exchange.from_organisation_id == organisation,
                                Exchange.to_organisation_id == organisation))
    return query.options(
        joinedload(Exchange.from_organisation), joinedload(Exchange.to_organisation),
        joinedload(Exchange.requested_by), joinedload(Exchange.resolution), joinedload(Exchange.emergency_review))


@dataclass(frozen=True)
class ExchangeFilters:
    outcome: str | None = None
    status: str | None = None
    organisation: str | None = None
    protocol: str | None = None
    since: date | None = None
    until: date | None = None
    limit: int = 50
    before_id: int | None = None


def list_exchanges(session: Session, actor: User, filters: ExchangeFilters) -> list[Exchange]:
    query = _scoped(select(Exchange), actor).options(
        joinedload(Exchange.from_organisation), joinedload(Exchange.to_organisation),
        selectinload(Exchange.resolution), selectinload(Exchange.emergency_review))
    if filters.outcome:
        query = query.where(Exchange.outcome == filters.outcome)
    if filters.status == "awaiting_dpo":
        query = query.where(Exchange.outcome == "refer", ~Exchange.resolution.has())
    if filters.organisation:
        org = session.scalar(select(Organisation.id).where(Organisation.code == filters.organisation))
        query = query.where(or_(Exchange.from_organisation_id == org, Exchange.to_organisation_id == org))
    if filters.protocol:
        query = query.where(Exchange.protocol_code == filters.protocol)
    if filters.since:
        query = query.where(Exchange.requested_at >= datetime.combine(filters.since, datetime.min.time(), LONDON))
    if filters.until:
        query = query.where(Exchange.requested_at < datetime.combine(filters.until + timedelta(days=1),
                                                                     datetime.min.time(), LONDON))
    if filters.before_id:
        query = query.where(Exchange.id < filters.before_id)
    return list(session.scalars(query.order_by(Exchange.id.desc()).limit(min(max(filters.limit, 1), 200))).unique())


# --- DPO referrals and emergency reviews ----------------------------------------------------------


def referral_queue(session: Session, actor: User) -> list[Exchange]:
    """Referred exchanges involving the DPO's organisation that nobody has decided yet."""
    require_role(actor, Role.DPO, action="see the referral queue")
    return list_exchanges(session, actor, ExchangeFilters(status="awaiting_dpo", limit=200,
                                                          organisation=actor.organisation.code))


def resolve(session: Session, actor: User, exchange: Exchange, *, decision: str, reasons: str,
            valid_until: date | None, now: datetime) -> Resolution:
    """A DPO approves or refuses a referred exchange, recording why (the ICO request form's fields)."""
    require_role(actor, Role.DPO, action="decide a referral")
    if actor.organisation_id not in (exchange.from_organisation_id, exchange.to_organisation_id):
        raise NotFound(f"There is no exchange {exchange.id} that you can see")
    if exchange.outcome != "refer":
        raise Conflict(f"Exchange {exchange.id} was not referred (it was decided '{exchange.outcome}').")
    if exchange.resolution is not None:
        raise Conflict(f"Exchange {exchange.id} was already {exchange.resolution.decision} by "
                       f"{exchange.resolution.decided_by.name}.")
    errors: dict[str, str] = {}
    if decision not in ("approved", "refused"):
        errors["decision"] = "Select whether you approve or refuse the exchange"
    if not (reasons or "").strip():
        errors["reasons"] = "Enter the reasons for your decision, as you would on the ICO data sharing request form"
    if exchange.requested_by_id == actor.id:
        errors["decision"] = "You asked for this exchange: another DPO must decide it"
    today = as_utc(now).astimezone(LONDON).date()
    if decision == "approved":
        if valid_until is None:
            errors["valid_until"] = "Enter the date the approval lasts until"
        elif valid_until < today:
            errors["valid_until"] = "The approval must last until today or later"
        elif valid_until > today + MAX_APPROVAL:
            errors["valid_until"] = "An approval can last at most a year: ask again after that"
    if errors:
        raise ValidationFailed(errors)
    resolution = Resolution(exchange=exchange, decision=decision, reasons=reasons.strip(), decided_by=actor,
                            decided_at=now, valid_until=valid_until if decision == "approved" else None)
    session.add(resolution)
    session.flush()
    audit.record(session, action=f"exchange.referral_{decision}", actor=actor, organisation=actor.organisation.code,
                 subject_type="exchange", subject_id=exchange.id, occurred_at=now,
                 details={"decision": decision, "valid_until": valid_until.isoformat() if valid_until else None,
                          "protocol": f"{exchange.protocol_code}:v{exchange.protocol_version}"
                          if exchange.protocol_code else None, "subgroup": exchange.subgroup_code})
    return resolution


def emergency_reviews(session: Session, actor: User, *, open_only: bool = True) -> list[EmergencyReview]:
    require_role(actor, Role.DPO, Role.AUDITOR, action="see emergency reviews")
    query = select(EmergencyReview).join(Exchange).options(joinedload(EmergencyReview.exchange))
    if not actor.has_role(Role.AUDITOR):
        org = actor.organisation_id
        query = query.where(or_(Exchange.from_organisation_id == org, Exchange.to_organisation_id == org))
    if open_only:
        query = query.where(EmergencyReview.reviewed_at.is_(None))
    return list(session.scalars(query.order_by(EmergencyReview.due_on)))


def review_emergency(session: Session, actor: User, exchange: Exchange, *, conclusion: str, notes: str,
                     now: datetime) -> EmergencyReview:
    require_role(actor, Role.DPO, action="review emergency sharing")
    review = exchange.emergency_review
    if review is None or actor.organisation_id not in (exchange.from_organisation_id, exchange.to_organisation_id):
        raise NotFound(f"There is no emergency review for exchange {exchange.id} that you can see")
    if review.reviewed_at is not None:
        raise Conflict(f"The emergency sharing of exchange {exchange.id} was already reviewed.")
    errors = {}
    if conclusion not in ("justified", "not_justified"):
        errors["conclusion"] = "Select whether the emergency sharing was justified"
    if not (notes or "").strip():
        errors["notes"] = "Enter what you found"
    if errors:
        raise ValidationFailed(errors)
    review.conclusion, review.notes, review.reviewed_by, review.reviewed_at = conclusion, notes.strip(), actor, now
    session.flush()
    audit.record(session, action="exchange.emergency_reviewed", actor=actor, organisation=actor.organisation.code,
                 subject_type="exchange", subject_id=exchange.id, occurred_at=now,
                 details={"conclusion": conclusion, "due_on": review.due_on.isoformat(),
                          "late": as_utc(now).astimezone(LONDON).date() > review.due_on})
    return review


# --- patterns and impact ------------------------------------------------------------------------


@dataclass(frozen=True)
class AdHocPattern:
    first: Organisation
    second: Organisation
    purpose: str
    count: int
    last_at: datetime


def ad_hoc_patterns(session: Session, *, now: datetime, window_days: int | None = None,
                    threshold: int | None = None) -> list[AdHocPattern]:
    """Pairs of organisations that keep sharing one-off for the same purpose and should have a protocol."""
    try:
        kmisa = protocols.stored_bundle(session).kmisa
        window_days = window_days or kmisa.ad_hoc_threshold.window_days
        threshold = threshold or kmisa.ad_hoc_threshold.count
    except NotFound:
        window_days, threshold = window_days or 90, threshold or 3
    since = now - timedelta(days=window_days)
    first = func.min(Exchange.from_organisation_id, Exchange.to_organisation_id) \
        if session.get_bind().dialect.name == "sqlite" else func.least(Exchange.from_organisation_id,
                                                                       Exchange.to_organisation_id)
    second = func.max(Exchange.from_organisation_id, Exchange.to_organisation_id) \
        if session.get_bind().dialect.name == "sqlite" else func.greatest(Exchange.from_organisation_id,
                                                                          Exchange.to_organisation_id)
    rows = session.execute(
        select(first.label("a"), second.label("b"), Exchange.purpose, func.count().label("n"),
               func.max(Exchange.requested_at).label("last"))
        .where(Exchange.is_one_off.is_(True), Exchange.requested_at > since)
        .group_by(first, second, Exchange.purpose)
        .having(func.count() >= threshold)
        .order_by(func.count().desc())
    ).all()
    organisations = {o.id: o for o in session.scalars(select(Organisation))}
    return [AdHocPattern(organisations[r.a], organisations[r.b], r.purpose, r.n, r.last) for r in rows]


@dataclass(frozen=True)
class ImpactChange:
    exchange: Exchange
    before: str
    after: str
    changed_rules: list[dict[str, Any]]


def impact(session: Session, proposed: Mapping[str, bytes], *, since: date, until: date) -> tuple[int, list[ImpactChange]]:
    """Replay the requests recorded in a period against proposed protocol files.

    Each proposed file is treated as signed off by all its parties and as the version every
    recorded request under that protocol would have cited; each request is decided as of when
    it was recorded, so only the policy change differs.
    """
    current = protocols.stored_bundle(session)
    try:
        bundle = protocols.stored_bundle(session, extra_sources=dict(proposed))
    except Exception as exc:  # the loader's PolicyError lists file, line and field
        problems = getattr(exc, "problems", None)
        if problems is None:
            raise
        raise ValidationFailed({"proposed": "; ".join(str(p) for p in problems)}) from None
    proposed_keys = {lp.key for lp in bundle.protocols} - {lp.key for lp in current.protocols}
    if not proposed_keys:
        raise ValidationFailed({"proposed": "The proposed files add no new protocol version: give each a new "
                                            "version number"})
    newest = {code: version for code, version in sorted(proposed_keys)}
    signoffs = {key: {p.organisation for p in bundle.protocol(*key).protocol.parties} for key in proposed_keys}
    snapshot = build_current_snapshot(session, bundle=bundle, extra_signoffs=signoffs)
    baseline = build_current_snapshot(session, bundle=current)
    start = datetime.combine(since, datetime.min.time(), LONDON)
    end = datetime.combine(until + timedelta(days=1), datetime.min.time(), LONDON)
    exchanges = session.scalars(select(Exchange).where(Exchange.requested_at >= start, Exchange.requested_at < end,
                                                       Exchange.protocol_code.in_(list(newest)))
                                .order_by(Exchange.id)).all()
    changes = []
    for exchange in exchanges:
        data = {k: v for k, v in exchange.request.items() if k != "as_of"}
        moment = as_utc(exchange.requested_at)
        original = decide(parse_request(data, default_as_of=moment), baseline)
        data["protocol"] = {"code": exchange.protocol_code, "version": newest[exchange.protocol_code]}
        replayed = decide(parse_request(data, default_as_of=moment), snapshot)
        if replayed.outcome != original.outcome:
            before = {f.rule: f for f in original.findings}
            changed = [{"rule": f.rule, "before": before[f.rule].outcome.value, "after": f.outcome.value,
                        "message": f.message} for f in replayed.findings
                       if f.rule in before and before[f.rule].outcome != f.outcome]
            changes.append(ImpactChange(exchange, original.outcome.value, replayed.outcome.value, changed))
    return len(exchanges), changes
