"""Asking to share, following requests, and the DPO's referral and emergency-review queues."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app import database
from app.auth.models import Role
from app.auth.permissions import require_role
from app.clock import today, utcnow
from app.decisions import forms, service
from app.errors import ValidationFailed
from app.extensions import db
from app.protocols import service as protocols
from app.registry import service as registry
from app.web.forms import apply_errors

bp = Blueprint("decisions", __name__)

#: Which form field shows an error about which request field.
FORM_FIELDS = {
    "special_category_condition.article9": "special_article9",
    "special_category_condition.schedule1_paragraph": "special_paragraph",
    "criminal_offence_condition.route": "criminal_route",
    "criminal_offence_condition.schedule1_paragraph": "criminal_paragraph",
    "emergency.category": "emergency_category",
    "emergency.justification": "emergency_justification",
    "protocol.code": "protocol",
    "protocol.version": "protocol",
}


@bp.before_request
@login_required
def _signed_in() -> None:
    """Every page here needs a signed-in user."""


def _exchange_form() -> forms.ExchangeForm:
    form = forms.ExchangeForm()
    bundle = protocols.stored_bundle(db.session)
    own = current_user.organisation.code
    organisations = [(o.code, o.name) for o in registry.list_organisations(db.session) if o.code != own]
    views = protocols.list_protocols(db.session, today())
    offered = [(f"{v.version.code}:v{v.version.version}",
                f"{v.version.title} – version {v.version.version} ({v.status.label.lower()})")
               for v in views if own in v.version.party_codes and v.status is not protocols.ProtocolStatus.RETIRED]
    form.fill_choices(bundle, organisations, offered)
    return form


def _show_errors(form, exc: ValidationFailed) -> None:
    mapped = {}
    for field, message in exc.errors.items():
        name = FORM_FIELDS.get(field, field.split(".")[0])
        mapped.setdefault(name, message)
    apply_errors(form, ValidationFailed(mapped))


@bp.route("/exchanges/new", methods=["GET", "POST"])
def exchange_new():
    require_role(current_user, *service.REQUESTERS, action="ask to share")
    form = _exchange_form()
    decision = None
    if form.validate_on_submit():
        recording = bool(form.submit.data)
        data = form.request_data(current_user.organisation.code, include_as_of=not recording)
        try:
            if recording:
                exchange = service.record(db.session, current_user, data, now=utcnow())
                database.commit(db.session)
                flash(_recorded_message(exchange), "success")
                return redirect(url_for("decisions.exchange", exchange_id=exchange.id))
            decision = service.check(db.session, current_user, data, now=utcnow()).to_dict()
        except ValidationFailed as exc:
            db.session.rollback()
            _show_errors(form, exc)
    status = 422 if form.errors else 200
    return render_template("decisions/exchange_form.html", form=form, decision=decision,
                           title="Ask whether you may share"), status


def _recorded_message(exchange) -> str:
    return {
        "allow": f"Request {exchange.id} recorded: you may share. Send the data as an encrypted transfer.",
        "allow_emergency": f"Request {exchange.id} recorded as emergency sharing: you may share now; "
                           "a DPO will review it afterwards.",
        "refer": f"Request {exchange.id} recorded and referred to a data protection officer.",
        "deny": f"Request {exchange.id} recorded: you may not share. The reasons are below.",
    }[exchange.outcome]


@bp.get("/exchanges")
def exchanges():
    filters = service.ExchangeFilters(outcome=request.args.get("outcome") or None,
                                      status=request.args.get("status") or None,
                                      before_id=request.args.get("before_id", type=int), limit=50)
    items = service.list_exchanges(db.session, current_user, filters)
    return render_template("decisions/exchanges.html", exchanges=items, filters=filters, title="Requests to share")


@bp.get("/exchanges/<int:exchange_id>")
def exchange(exchange_id: int):
    item = service.get_exchange(db.session, current_user, exchange_id)
    involved = current_user.organisation_id in (item.from_organisation_id, item.to_organisation_id)
    return render_template(
        "decisions/exchange.html", exchange=item, decision=item.decision, title=f"Request {item.id}",
        can_resolve=current_user.has_role(Role.DPO) and involved and item.status == "awaiting_dpo"
        and item.requested_by_id != current_user.id,
        can_review=current_user.has_role(Role.DPO) and involved and item.emergency_review is not None
        and item.emergency_review.reviewed_at is None)


@bp.route("/exchanges/<int:exchange_id>/resolve", methods=["GET", "POST"])
def resolve(exchange_id: int):
    require_role(current_user, Role.DPO, action="decide a referral")
    item = service.get_exchange(db.session, current_user, exchange_id)
    form = forms.ResolutionForm()
    if form.validate_on_submit():
        try:
            service.resolve(db.session, current_user, item, decision=form.decision.data, reasons=form.reasons.data,
                            valid_until=form.valid_until.data, now=utcnow())
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            flash(f"Your decision on request {item.id} is recorded.", "success")
            return redirect(url_for("decisions.exchange", exchange_id=item.id))
    return render_template("decisions/resolve.html", form=form, exchange=item, decision=item.decision,
                           title=f"Decide request {item.id}"), 422 if form.errors else 200


@bp.route("/exchanges/<int:exchange_id>/emergency-review", methods=["GET", "POST"])
def emergency_review(exchange_id: int):
    require_role(current_user, Role.DPO, action="review emergency sharing")
    item = service.get_exchange(db.session, current_user, exchange_id)
    form = forms.EmergencyReviewForm()
    if form.validate_on_submit():
        try:
            service.review_emergency(db.session, current_user, item, conclusion=form.conclusion.data,
                                     notes=form.notes.data, now=utcnow())
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            flash(f"Your review of request {item.id} is recorded.", "success")
            return redirect(url_for("decisions.exchange", exchange_id=item.id))
    return render_template("decisions/emergency_review.html", form=form, exchange=item, decision=item.decision,
                           title=f"Review emergency request {item.id}"), 422 if form.errors else 200


@bp.get("/referrals")
def referrals():
    items = service.referral_queue(db.session, current_user)
    reviews = service.emergency_reviews(db.session, current_user)
    return render_template("decisions/referrals.html", exchanges=items, reviews=reviews, as_of=today(),
                           title="Referrals and emergency reviews")


@bp.get("/exchanges/patterns")
def patterns():
    require_role(current_user, Role.COORDINATOR, Role.DPO, Role.AUDITOR, Role.ADMIN,
                 action="see ad hoc sharing patterns")
    return render_template("decisions/patterns.html", patterns=service.ad_hoc_patterns(db.session, now=utcnow()),
                           title="Organisations that keep sharing one-off")
