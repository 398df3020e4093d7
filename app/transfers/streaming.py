"""The HTTP side of moving a payload, shared by the API and the web pages: reading an upload
without buffering it, and answering a download whose audit record is committed before the
first byte leaves."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from urllib.parse import quote, unquote

from flask import Response, current_app, request, stream_with_context
from werkzeug.http import parse_options_header

from app import database
from app.auth.models import User
from app.clock import utcnow
from app.extensions import db
from app.transfers import service
from app.transfers.cipher import TransferTampered
from app.transfers.keys import keyring_for
from app.transfers.rules import DEFAULT_FILENAME

logger = logging.getLogger(__name__)


def max_payload_bytes() -> int:
    return int(current_app.config["MAX_PAYLOAD_BYTES"])


def limit_request_body(max_bytes: int) -> None:
    """Refuse a declared length over ``max_bytes`` now, and let Werkzeug stop reading past it.

    The app-wide ``MAX_CONTENT_LENGTH`` is the small form limit; only the upload routes raise
    it, per request, and only for a body they read as a stream. The extra byte lets the service
    see an overrun itself and answer with its own message.
    """
    service.refuse_oversized(request.content_length, max_bytes)
    request.max_content_length = max_bytes + 1


def filename_from_headers() -> str | None:
    """The file name from ``X-Accord-Filename`` (percent-encoded UTF-8) or ``Content-Disposition``."""
    header = request.headers.get("X-Accord-Filename")
    if header:
        return unquote(header, errors="replace")
    disposition = request.headers.get("Content-Disposition")
    if disposition:
        _kind, options = parse_options_header(disposition)
        return options.get("filename")
    return None


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266)."""
    fallback = filename.encode("ascii", "ignore").decode("ascii").replace('"', "_").replace("\\", "_").strip()
    return (f'attachment; filename="{fallback or DEFAULT_FILENAME}"; '
            f"filename*=UTF-8''{quote(filename, safe='')}")


def open_download(user: User, transfer_id: str) -> service.Download:
    """Verify the transfer and commit the download's audit record and receipt.

    A GET begins its SQLite transaction deferred; recording the download needs the write lock,
    so there the read that authenticated the request is ended first and this transaction begins
    IMMEDIATE (PostgreSQL carries on in the same transaction). A failed integrity check is
    committed too, so the attempt stays on the record.
    """
    if db.session.get_bind().dialect.name == "sqlite":
        db.session.commit()
    with database.writing():
        try:
            download = service.open_download(db.session, user, transfer_id, keyring_for(current_app.config),
                                             now=utcnow())
        except service.TransferUnreadable:
            db.session.commit()
            raise
        database.commit(db.session)
    return download


def payload_response(download: service.Download) -> Response:
    """Stream the plaintext as an attachment the browser never renders."""
    body = stream_with_context(_released(download))
    response = Response(body, status=200, content_type=download.media_type, direct_passthrough=True)
    response.headers["Content-Length"] = str(download.size)
    response.headers["Content-Disposition"] = content_disposition(download.filename)
    response.headers["X-Content-SHA256"] = download.sha256
    response.headers["Cache-Control"] = "no-store"
    # Even if a browser were persuaded to render it, it could run nothing and load nothing.
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


def _released(download: service.Download) -> Iterator[bytes]:
    try:
        yield from download.plaintext(db.session)
    except TransferTampered:
        # Ending the body short of its Content-Length makes the client see a failed download.
        logger.error("transfer %s changed while it was being downloaded; the response was cut short",
                     download.transfer_id)
        raise
    finally:
        db.session.rollback()
