"""Where due items come from: one registry of providers, each reading one area's facts.

A provider is a function ``(session, as_of, horizon) -> Iterable[DueItem]`` that returns every
item of its kind due on or before ``horizon`` (overdue ones included) that still needs doing
on ``as_of``. It must use a fixed number of queries however many items there are (load in
bulk, never one query per row), because the sweep's cost must not grow with the register.

Extension points. Another area writes its provider in its own module, decorates it with
:func:`register_provider`, appends that module's dotted name to :data:`PROVIDER_MODULES` (the
sweep imports them, so no import order matters) and, for a new kind, adds its label to
``app.reminders.due.KIND_LABELS``. The transfers' retention deadlines come that way
(``app.transfers.reminders``). The decisions' due items are read here, from their models:

- ``emergency_review``: an emergency decision's retrospective DPO review, due
  ``emergency_review_days`` (kmisa.yaml) after the decision; subject ``exchange``; the
  sending organisation's DPO; stops once the review is recorded.
- ``referral_waiting``: a referred request waiting for a DPO, due ``referral_waiting_days``
  after it was referred; subject ``exchange``; both parties' DPOs; stops once resolved.

A provider stops reminding by no longer returning the item (the renewal was recorded, the
review was done): the sweep only ever claims what the providers return.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased, joinedload

from app.clock import LONDON, as_utc
from app.errors import NotFound
from app.reminders.due import COORDINATOR, DPO, DueItem
from app.registry import service as registry
from app.registry.models import KmisaVersion, Organisation, Signature
from app.registry.status import SignatureStatus

Provider = Callable[[Session, date, date], Iterable[DueItem]]

#: Every provider the sweep asks, in order. Append with :func:`register_provider`.
PROVIDERS: list[Provider] = []

#: Modules of other areas that register providers when imported, e.g. ``"app.decisions.reminders"``.
PROVIDER_MODULES: list[str] = ["app.transfers.reminders"]


def register_provider(provider: Provider) -> Provider:
    """Add ``provider`` to the sweep (usable as a decorator); registering twice is harmless."""
    if provider not in PROVIDERS:
        PROVIDERS.append(provider)
    return provider


def due_items(session: Session, as_of: date, horizon: date) -> list[DueItem]:
    """Every item due on or before ``horizon``, from every provider."""
    for module in PROVIDER_MODULES:
        importlib.import_module(module)
    items: list[DueItem] = []
    for provider in PROVIDERS:
        items.extend(provider(session, as_of, horizon))
    return items


# --- the register ------------------------------------------------------------------------------

_RENEWABLE = (SignatureStatus.ACTIVE, SignatureStatus.DUE_FOR_RENEWAL, SignatureStatus.EXPIRED)


def _live(as_of: date):
    """Organisations not dissolved on ``as_of``."""
    return (Organisation.dissolved_on.is_(None)) | (Organisation.dissolved_on > as_of)


@register_provider
def signature_renewals(session: Session, as_of: date, horizon: date) -> Iterable[DueItem]:
    """A signature's renewal date; none once a later signature replaces it (it is then
    superseded) or it is withdrawn, or once the organisation is dissolved.

    Only organisations with a signature expiring by ``horizon`` are loaded, with all their
    signatures in the same statement, so the register's own status rule
    (``registry.signature_views``) decides which of them still needs renewing.
    """
    due_soon = select(Signature.organisation_id).where(Signature.expires_on <= horizon)
    organisations = session.scalars(
        select(Organisation)
        .options(joinedload(Organisation.signatures).joinedload(Signature.kmisa_version))
        .where(Organisation.id.in_(due_soon), _live(as_of))
        .order_by(Organisation.id)).unique()
    for organisation in organisations:
        for view in registry.signature_views(organisation, as_of):
            signature = view.signature
            if view.status not in _RENEWABLE or signature.expires_on is None or signature.expires_on > horizon:
                continue
            yield DueItem(
                kind="signature_renewal", subject_type="signature", subject_id=str(signature.id),
                title=f"{organisation.name}: renew the K-MISA signature (version {signature.kmisa_version.label})",
                due_on=signature.expires_on, organisations=(organisation.code,), recipient_roles=(DPO, COORDINATOR),
            )


@register_provider
def kmisa_resigning(session: Session, as_of: date, horizon: date) -> Iterable[DueItem]:
    """Organisations whose only signatures are to K-MISA versions no longer valid must sign the
    current version, due from the day the newest valid version was published."""
    newest = session.scalar(select(KmisaVersion).where(KmisaVersion.is_valid.is_(True))
                            .order_by(KmisaVersion.published_on.desc()).limit(1))
    if newest is None or newest.published_on > horizon:
        return
    rows = session.execute(
        select(Organisation.code, Organisation.name, func.max(case((KmisaVersion.is_valid, 1), else_=0)))
        .join(Signature, Signature.organisation_id == Organisation.id)
        .join(KmisaVersion, KmisaVersion.id == Signature.kmisa_version_id)
        .where(_live(as_of), Signature.signed_on <= as_of)
        .group_by(Organisation.id, Organisation.code, Organisation.name)
        .order_by(Organisation.code))
    for code, name, any_valid in rows:
        if any_valid:
            continue
        yield DueItem(
            kind="kmisa_resign", subject_type="organisation", subject_id=code,
            title=f"{name}: sign K-MISA {newest.label} (its signatures are to versions no longer valid)",
            due_on=newest.published_on, organisations=(code,), recipient_roles=(DPO, COORDINATOR),
        )


@register_provider
def apd_reviews(session: Session, as_of: date, horizon: date) -> Iterable[DueItem]:
    """An appropriate policy document must be reviewed (DPA 2018 Sch 1 para 40: kept under review)."""
    rows = session.execute(select(Organisation.code, Organisation.name, Organisation.apd_review_on)
                           .where(Organisation.apd_review_on <= horizon, _live(as_of))
                           .order_by(Organisation.code))
    for code, name, due_on in rows:
        yield DueItem(
            kind="apd_review", subject_type="organisation", subject_id=code,
            title=f"{name}: review the appropriate policy document",
            due_on=due_on, organisations=(code,), recipient_roles=(DPO, COORDINATOR),
        )


@register_provider
def ico_registrations(session: Session, as_of: date, horizon: date) -> Iterable[DueItem]:
    """An ICO registration (the data protection fee) must be renewed before it lapses."""
    rows = session.execute(
        select(Organisation.code, Organisation.name, Organisation.ico_registration_number,
               Organisation.ico_registration_expires_on)
        .where(Organisation.ico_registration_expires_on <= horizon, _live(as_of))
        .order_by(Organisation.code))
    for code, name, number, due_on in rows:
        yield DueItem(
            kind="ico_registration", subject_type="organisation", subject_id=code,
            title=f"{name}: renew the ICO registration {number or ''}".rstrip(),
            due_on=due_on, organisations=(code,), recipient_roles=(DPO, COORDINATOR),
        )


# --- protocols -------------------------------------------------------------------------------


def _current_protocols(session: Session, as_of: date):
    from app.protocols.service import ProtocolStatus, list_protocols

    return [view for view in list_protocols(session, as_of) if view.status is ProtocolStatus.APPROVED]


def _parties(version) -> tuple[str, ...]:
    codes = list(version.party_codes or [])
    lead = version.subgroup.lead_organisation.code if version.subgroup else None
    if lead and lead not in codes:
        codes.append(lead)
    return tuple(codes)


@register_provider
def protocol_reviews(session: Session, as_of: date, horizon: date) -> Iterable[DueItem]:
    """An approved protocol version in force must be reviewed by its review date; a superseded,
    retired, expired or draft one needs no reminder."""
    for view in _current_protocols(session, as_of):
        version = view.version
        if version.review_on > horizon:
            continue
        yield DueItem(
            kind="protocol_review", subject_type="protocol_version", subject_id=f"{version.code}:v{version.version}",
            title=f"Review the protocol {version.title} (version {version.version})",
            due_on=version.review_on, organisations=_parties(version), recipient_roles=(DPO, COORDINATOR),
        )


@register_provider
def dpia_reviews(session: Session, as_of: date, horizon: date) -> Iterable[DueItem]:
    """The DPIA of an approved protocol version in force must be reviewed (UK GDPR Art 35(11));
    its date is in the protocol file as loaded, not in a column."""
    from app.protocols.service import stored_bundle

    current = _current_protocols(session, as_of)
    if not current:
        return
    try:
        bundle = stored_bundle(session)
    except NotFound:
        return
    for view in current:
        version = view.version
        loaded = bundle.by_key.get((version.code, version.version))
        dpia = loaded.protocol.dpia if loaded is not None else None
        if dpia is None or dpia.review_on > horizon:
            continue
        yield DueItem(
            kind="dpia_review", subject_type="protocol_version", subject_id=f"{version.code}:v{version.version}",
            title=f"Review the DPIA {dpia.reference} for {version.title} (version {version.version})",
            due_on=dpia.review_on, organisations=_parties(version), recipient_roles=(DPO, COORDINATOR),
        )


# --- decisions -----------------------------------------------------------------------------------


def _exchanges_with_parties():
    """Exchanges with the codes and names of the sending and receiving organisations."""
    from app.decisions.models import Exchange

    sender, recipient = aliased(Organisation), aliased(Organisation)
    return (select(Exchange.id, sender.code, sender.name, recipient.code, recipient.name)
            .join(sender, sender.id == Exchange.from_organisation_id)
            .join(recipient, recipient.id == Exchange.to_organisation_id))


@register_provider
def emergency_reviews(session: Session, as_of: date, horizon: date) -> Iterable[DueItem]:
    """Sharing done in an emergency must be reviewed by the sending organisation's DPO after the
    fact, by the review's due date (``emergency_review_days`` after the decision); none once the
    review is recorded."""
    from app.decisions.models import EmergencyReview, Exchange

    rows = session.execute(
        _exchanges_with_parties().add_columns(EmergencyReview.due_on)
        .join(EmergencyReview, EmergencyReview.exchange_id == Exchange.id)
        .where(EmergencyReview.reviewed_at.is_(None), EmergencyReview.due_on <= horizon)
        .order_by(EmergencyReview.due_on, Exchange.id))
    for exchange_id, sender_code, sender_name, _, recipient_name, due_on in rows:
        yield DueItem(
            kind="emergency_review", subject_type="exchange", subject_id=str(exchange_id),
            title=f"Review the emergency sharing {exchange_id} from {sender_name} to {recipient_name}",
            due_on=due_on, organisations=(sender_code,), recipient_roles=(DPO,),
        )


@register_provider
def referrals_waiting(session: Session, as_of: date, horizon: date) -> Iterable[DueItem]:
    """A request the rules referred to a DPO must be decided within ``referral_waiting_days``
    (kmisa.yaml) of being referred; either party's DPO may decide it, so both are told. None
    once it is resolved, or when no policy is loaded (nothing can have been referred)."""
    from app.decisions.models import Exchange, Resolution
    from app.protocols.service import stored_bundle

    try:
        waiting = timedelta(days=stored_bundle(session).kmisa.referral_waiting_days)
    except NotFound:
        return
    # Referred before the end of (horizon - waiting) in London: due on or before the horizon.
    referred_by = datetime.combine(horizon - waiting + timedelta(days=1), time.min, LONDON)
    rows = session.execute(
        _exchanges_with_parties().add_columns(Exchange.requested_at)
        .where(Exchange.outcome == "refer", Exchange.requested_at < referred_by,
               ~select(Resolution.id).where(Resolution.exchange_id == Exchange.id).exists())
        .order_by(Exchange.requested_at, Exchange.id))
    for exchange_id, sender_code, sender_name, recipient_code, recipient_name, requested_at in rows:
        yield DueItem(
            kind="referral_waiting", subject_type="exchange", subject_id=str(exchange_id),
            title=f"Decide the referred request {exchange_id} from {sender_name} to {recipient_name}",
            due_on=as_utc(requested_at).astimezone(LONDON).date() + waiting,
            organisations=(sender_code, recipient_code), recipient_roles=(DPO,),
        )
