"""The audit trail through /api/v1, for auditors and DPOs with a `read` token."""
from __future__ import annotations

from flask_openapi3 import APIBlueprint, Tag

from app.api.auth import api_user
from app.api.errors import standard_responses
from app.audit import chain, export, service, workspace
from app.audit.schemas import CheckpointOut, EventList, EventQuery, VerifyOut
from app.auth.models import Role, User
from app.auth.permissions import require_role
from app.clock import utcnow
from app.extensions import db

tag = Tag(name="Audit", description="The tamper-evident audit trail, its verification and signed checkpoints")
api = APIBlueprint("audit_api", __name__, url_prefix="/api/v1/audit", abp_tags=[tag],
                   abp_security=[{"bearerAuth": []}], abp_responses=standard_responses(401, 403, 422))

#: Who may read the trail through the API (the web workspace also admits coordinators and admins).
API_READERS = (Role.AUDITOR, Role.DPO)


def _reader() -> User:
    user = api_user("read")
    require_role(user, *API_READERS, action="read the audit trail through the API")
    return user


@api.get("/events", responses={200: EventList})
def list_events(query: EventQuery):
    """Events in view, newest first: every organisation's for auditors, a DPO's own organisation's."""
    user = _reader()
    filters = workspace.EventFilters(**query.model_dump(exclude={"before", "after", "limit"}))
    page = workspace.search_events(db.session, user, filters, before=query.before, after=query.after,
                                   limit=query.limit)
    return {"events": [_event_out(e) for e in page.events], "older": page.older, "newer": page.newer}


def _event_out(event) -> dict:
    return {"seq": event.seq, "occurred_at": chain.format_timestamp(event.occurred_at), "action": event.action,
            "actor": event.actor, "organisation": event.organisation, "counterparty": event.counterparty,
            "subject_type": event.subject_type, "subject_id": event.subject_id, "details": event.details,
            "prev_hash": event.prev_hash, "hash": event.hash, "mac": event.mac}


@api.get("/verify", responses={200: VerifyOut})
def verify():
    """Recompute the whole chain now and compare it with the latest signed checkpoint."""
    _reader()
    stored = service.latest_checkpoint(db.session)
    report = service.verify_current(db.session)
    return {**report.to_dict(), "checkpoint_seq": None if stored is None else stored.seq}


@api.get("/checkpoints/latest", responses={200: CheckpointOut})
def latest_checkpoint():
    """The latest signed checkpoint and the public key that checks it."""
    _reader()
    return {**export.checkpoint_document(db.session), "retrieved_at": utcnow().isoformat()}
