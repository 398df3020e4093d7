"""Exchanges through /api/v1: check (dry run), record, read, and the DPO's decisions on referrals."""
from __future__ import annotations

from http import HTTPStatus

from flask import Response, current_app, g
from flask_openapi3 import APIBlueprint, Tag
from pydantic_core import to_json, to_jsonable_python

from app import database
from app.api.auth import api_user, authenticate_again, confirmed_by_its_write
from app.api.errors import standard_responses
from app.auth import tokens
from app.clock import utcnow
from app.decisions import service
from app.decisions.models import Exchange
from app.decisions.schemas import (
    DecisionOut,
    EmergencyReviewIn,
    ExchangeList,
    ExchangeOut,
    ExchangePath,
    ExchangeQuery,
    ExchangeRequestIn,
    ResolutionIn,
)
from app.errors import AccordError
from app.extensions import db

tag = Tag(name="Exchanges", description="Check and record proposed exchanges of personal data")
api = APIBlueprint("decisions_api", __name__, url_prefix="/api/v1", abp_tags=[tag],
                   abp_security=[{"bearerAuth": []}], abp_responses=standard_responses(401, 403, 422))


def exchange_out(exchange: Exchange) -> dict:
    """The exchange in the shape of ``ExchangeOut``, serialised as pydantic would but without
    validating it again: the stored decision already has that shape (the engine wrote it), and
    building the model re-checked twenty findings on every response."""
    return to_jsonable_python(_exchange_fields(exchange))


def json_response(body: dict, status: int = HTTPStatus.OK) -> Response:
    """``body`` as JSON, encoded by pydantic-core in one step (dates and times as ``ExchangeOut``
    has them) instead of made JSON-ready and then encoded again by the standard library, which
    also sorted the keys of every one of the decision's findings."""
    return current_app.response_class(to_json(body), status=status, mimetype="application/json")


def _exchange_fields(exchange: Exchange) -> dict:
    resolution = exchange.resolution
    review = exchange.emergency_review
    return {
        "id": exchange.id, "status": exchange.status, "may_proceed": exchange.may_proceed,
        "requested_at": exchange.requested_at, "requested_by": exchange.requested_by.email,
        "from_org": exchange.from_org, "to_org": exchange.to_org,
        "request": exchange.request, "decision": exchange.decision,
        "resolution": None if resolution is None else {
            "decision": resolution.decision, "reasons": resolution.reasons,
            "decided_by": resolution.decided_by.email, "decided_at": resolution.decided_at,
            "valid_until": resolution.valid_until},
        "emergency_review": None if review is None else {
            "due_on": review.due_on, "reviewed_by": review.reviewed_by.email if review.reviewed_by else None,
            "reviewed_at": review.reviewed_at, "conclusion": review.conclusion, "notes": review.notes},
    }


@api.post("/exchanges/check", responses={200: DecisionOut})
def check_exchange(body: ExchangeRequestIn):
    """Dry run: the decision with every finding, recorded nowhere. `as_of` asks what it was or would be then."""
    user = api_user("check")
    decision = service.check(db.session, user, body.model_dump(mode="json", exclude_unset=True), now=utcnow(),
                             register_revision=g.register_revision)
    return json_response(decision.to_dict())


@api.post("/exchanges", responses={201: ExchangeOut})
@confirmed_by_its_write(api)
def record_exchange(body: ExchangeRequestIn):
    """Record a proposed exchange: decided as of now, stored with its audit event in one transaction."""
    # The session itself, not the scoped proxy: every call through ``db.session`` looks the
    # session up from the app context again, and recording one makes some twenty.
    session = db.session()
    data = body.model_dump(mode="json", exclude_unset=True)
    unconfirmed = g.unconfirmed_revisions
    try:
        exchange = service.record(session, api_user("submit"), data, now=utcnow(),
                                  register_revision=g.register_revision, unconfirmed=unconfirmed)
    except (tokens.RevisionsMoved, AccordError):
        if unconfirmed is None:
            raise
        # The write found the register or the token's standing moved since this worker last
        # read them, or the request was refused on what it last read: decided again, on what
        # the database holds now.
        session.rollback()
        authenticate_again()
        exchange = service.record(session, api_user("submit"), data, now=utcnow(),
                                  register_revision=g.register_revision)
    database.commit(session)
    return json_response(_exchange_fields(exchange), HTTPStatus.CREATED)


@api.get("/exchanges", responses={200: ExchangeList})
def list_exchanges(query: ExchangeQuery):
    """Exchanges your organisation sent or received (all of them for auditors and coordinators), newest first."""
    user = api_user("read")
    filters = service.ExchangeFilters(**query.model_dump())
    exchanges = service.list_exchanges(db.session, user, filters)
    next_before = exchanges[-1].id if len(exchanges) == query.limit else None
    return {"exchanges": [exchange_out(e) for e in exchanges], "next_before_id": next_before}


@api.get("/exchanges/<int:exchange_id>", responses={200: ExchangeOut, **standard_responses(404)})
def get_exchange(path: ExchangePath):
    """One exchange, if your organisation is party to it."""
    user = api_user("read")
    return json_response(_exchange_fields(service.get_exchange(db.session, user, path.exchange_id)))


@api.post("/exchanges/<int:exchange_id>/resolution",
          responses={201: ExchangeOut, **standard_responses(404, 409)})
def resolve_exchange(path: ExchangePath, body: ResolutionIn):
    """A DPO of either organisation approves or refuses a referred exchange, with reasons."""
    user = api_user("submit")
    exchange = service.get_exchange(db.session, user, path.exchange_id)
    service.resolve(db.session, user, exchange, decision=body.decision, reasons=body.reasons,
                    valid_until=body.valid_until, now=utcnow())
    db.session.commit()
    return exchange_out(exchange), HTTPStatus.CREATED


@api.post("/exchanges/<int:exchange_id>/emergency-review",
          responses={201: ExchangeOut, **standard_responses(404, 409)})
def review_emergency(path: ExchangePath, body: EmergencyReviewIn):
    """A DPO records the retrospective review of emergency sharing."""
    user = api_user("submit")
    exchange = service.get_exchange(db.session, user, path.exchange_id)
    service.review_emergency(db.session, user, exchange, conclusion=body.conclusion, notes=body.notes, now=utcnow())
    db.session.commit()
    return exchange_out(exchange), HTTPStatus.CREATED
