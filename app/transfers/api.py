"""Transfers through /api/v1: send a payload as the raw request body, list and read transfers,
download a payload as the raw response body, and confirm the destruction of copies."""
from __future__ import annotations

from datetime import datetime
from http import HTTPStatus

from flask import Response, current_app, request, url_for
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy.orm.attributes import set_committed_value

from app import database
from app.api.auth import api_user
from app.api.errors import standard_responses
from app.auth.models import User
from app.clock import as_utc, utcnow
from app.decisions import service as decisions
from app.decisions.schemas import ExchangePath
from app.errors import ValidationFailed
from app.extensions import db
from app.transfers import service, streaming
from app.transfers.keys import keyring_for
from app.transfers.models import Transfer
from app.transfers.schemas import TransferList, TransferOut, TransferPath, TransferQuery, UploadHeaders

tag = Tag(name="Transfers", description="Send, receive and account for encrypted transfers of personal data")
api = APIBlueprint("transfers_api", __name__, url_prefix="/api/v1", abp_tags=[tag],
                   abp_security=[{"bearerAuth": []}], abp_responses=standard_responses(401, 403, 422))

_BINARY = {"schema": {"type": "string", "format": "binary"}}

UPLOAD = {
    "requestBody": {
        "required": True,
        "description": (
            "The file itself as the raw body (not JSON, not a form), streamed: any size up to the configured "
            "maximum (`ACCORD_MAX_PAYLOAD_BYTES`, 1 GiB by default). `Content-Type` is the file's media type. "
            "Name the file in `X-Accord-Filename` (percent-encoded UTF-8) or `Content-Disposition: attachment; "
            "filename=...`; optionally give its SHA-256 in `X-Content-SHA256`."),
        "content": {"application/octet-stream": _BINARY, "*/*": _BINARY},
    },
}

PAYLOAD = {
    "description": "The plaintext, streamed, after the whole transfer passed its integrity check",
    "content": {"application/octet-stream": _BINARY},
    "headers": {
        "X-Content-SHA256": {"description": "Hex SHA-256 of the body, as recorded when it was sent",
                             "schema": {"type": "string"}},
        "Content-Disposition": {"description": "attachment, with the file name", "schema": {"type": "string"}},
    },
}


def transfer_out(transfer: Transfer, user: User, now: datetime) -> dict:
    if transfer.destroyed_at is None:
        confirmation = "not_due"
    elif transfer.destruction_confirmed_at is not None:
        confirmation = "confirmed"
    elif transfer.destruction_confirmation_requested_at is None:
        confirmation = "not_needed"
    else:
        confirmation = "overdue" if transfer.confirmation_overdue(now) else "pending"
    return TransferOut(
        id=transfer.id, exchange_id=transfer.exchange_id, status=transfer.status(now),
        from_org=transfer.sender_organisation.code, to_org=transfer.recipient_organisation.code,
        sent_by=transfer.sender.email, filename=transfer.filename, media_type=transfer.media_type,
        size=transfer.size, sha256=transfer.sha256, created_at=as_utc(transfer.created_at),
        retention_until=as_utc(transfer.retention_until),
        destroyed_at=as_utc(transfer.destroyed_at) if transfer.destroyed_at else None,
        destruction_method=transfer.destruction_method, destruction_confirmation=confirmation,
        destruction_confirmed_by=transfer.destruction_confirmed_by.email if transfer.destruction_confirmed_by else None,
        destruction_confirmed_at=as_utc(transfer.destruction_confirmed_at) if transfer.destruction_confirmed_at
        else None,
        downloads=[{"downloaded_by": d.user.email, "downloaded_at": as_utc(d.downloaded_at), "bytes": d.bytes}
                   for d in transfer.downloads],
        payload_available=service.may_download(user, transfer),
    ).model_dump(mode="json")


@api.post("/exchanges/<int:exchange_id>/transfer", openapi_extensions=UPLOAD,
          responses={201: TransferOut, **standard_responses(404, 409, 413)})
def send_transfer(path: ExchangePath, header: UploadHeaders):
    """Send a file under an exchange that may proceed: encrypted as it arrives, stored whole or not at all.

    Only officers and DPOs of the sending organisation, with a token that has the `transfer` scope. A body
    declared larger than the maximum is refused with 413 before anything is read; one that runs over
    while streaming is refused with 413 and nothing is stored.
    """
    user = api_user("transfer")
    exchange = decisions.get_exchange(db.session, user, path.exchange_id)
    now = utcnow()
    service.require_may_send(user, exchange, now=now)
    max_bytes = streaming.max_payload_bytes()
    streaming.limit_request_body(max_bytes)
    filename = streaming.filename_from_headers()
    if not filename:
        raise ValidationFailed({"filename": "Name the file in the X-Accord-Filename header or in "
                                            "Content-Disposition: attachment; filename=..."})
    transfer = service.send(db.session, user, exchange, request.stream, filename=filename,
                            media_type=request.headers.get("Content-Type"), now=now,
                            keyring=keyring_for(current_app.config), max_bytes=max_bytes,
                            expected_sha256=header.sha256)
    database.commit(db.session)
    # Just sent, so nobody has downloaded it: said, so that describing it asks the database nothing.
    set_committed_value(transfer, "downloads", [])
    body = transfer_out(transfer, user, now)
    return body, HTTPStatus.CREATED, {"Location": url_for("transfers_api.get_transfer", transfer_id=transfer.id)}


@api.get("/transfers", responses={200: TransferList})
def list_transfers(query: TransferQuery):
    """Transfers your organisation received (inbox) or sent (outbox), newest first."""
    user = api_user("read")
    now = utcnow()
    filters = service.TransferFilters(box=query.box, status=query.status, exchange_id=query.exchange_id,
                                      limit=query.limit)
    return {"transfers": [transfer_out(t, user, now) for t in service.list_transfers(db.session, user, filters,
                                                                                       now=now)]}


@api.get("/transfers/<transfer_id>", responses={200: TransferOut, **standard_responses(404)})
def get_transfer(path: TransferPath):
    """One transfer's metadata, if your organisation sent or received it; any other id is not found."""
    user = api_user("read")
    return transfer_out(service.get_transfer(db.session, user, path.transfer_id), user, utcnow())


@api.get("/transfers/<transfer_id>/payload", responses={200: PAYLOAD, **standard_responses(404, 409, 410)})
def download_payload(path: TransferPath):
    """Download the payload: recipient officers and DPOs only, with the `transfer` scope.

    The whole transfer is authenticated and its SHA-256 checked before the first byte is sent; a transfer
    that fails is refused with 409 and nothing is released. Every download is recorded in the audit trail,
    and the sender gets a receipt, before the body starts. A destroyed transfer answers 410.
    """
    user = api_user("transfer")
    if request.method == "HEAD":
        # The metadata either party may read anyway; a HEAD is neither a download nor audited as one.
        transfer = service.get_transfer(db.session, user, path.transfer_id)
        return Response(status=200, content_type=transfer.media_type,
                        headers={"Content-Length": str(transfer.size), "X-Content-SHA256": transfer.sha256})
    return streaming.payload_response(streaming.open_download(user, path.transfer_id))


@api.post("/transfers/<transfer_id>/destruction-confirmation",
          responses={201: TransferOut, **standard_responses(404, 409)})
def confirm_destruction(path: TransferPath):
    """The recipient confirms it destroyed any copies it made, once Accord has destroyed its own."""
    user = api_user("transfer")
    now = utcnow()
    transfer = service.get_transfer(db.session, user, path.transfer_id)
    service.confirm_destruction(db.session, user, transfer, now=now)
    db.session.commit()
    return transfer_out(transfer, user, now), HTTPStatus.CREATED
