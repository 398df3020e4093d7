"""Bearer-token authentication for /api/v1; the token's user is the acting user."""
from __future__ import annotations

from datetime import datetime

from flask import current_app, g, request
from sqlalchemy.exc import OperationalError

from app.api import ratelimit
from app.auth import tokens
from app.auth.models import User
from app.clock import utcnow
from app.errors import AccordError
from app.extensions import db


class Unauthenticated(AccordError):
    status_code = 401
    code = "unauthenticated"


class MissingScope(AccordError):
    status_code = 403
    code = "insufficient_scope"


#: Why a token is refused, whichever check refused it: telling them apart would help a guesser.
TOKEN_REFUSED = "The API token is unknown, expired or revoked."

#: API paths anyone may read: the document and the explorer.
PUBLIC_PATHS = ("/api/v1/openapi.json", "/api/v1/swagger")


def is_public(path: str) -> bool:
    """The document itself, and the explorer's page and assets; nothing that merely starts alike."""
    return any(path == public or path.startswith(public + "/") for public in PUBLIC_PATHS)


#: Endpoints whose first statement is their one write, which confirms the revisions the
#: request's authentication took as read (``tokens.authenticate(confirm_with_write=True)``).
CONFIRMED_BY_WRITE: set[str] = set()


def confirmed_by_its_write(blueprint):
    """Mark a view as one whose write confirms its authentication's revisions: it passes
    ``g.unconfirmed_revisions`` to that write and, on ``tokens.RevisionsMoved``, rolls back,
    calls ``authenticate_again`` and starts over."""
    def mark(view):
        CONFIRMED_BY_WRITE.add(f"{blueprint.name}.{view.__name__}")
        return view
    return mark


def authenticate_request() -> None:
    """Run before every API request; sets ``g.api_user``, ``g.api_scopes`` and
    ``g.register_revision`` (read with the token) or refuses with 401; and
    ``g.unconfirmed_revisions``, for a view ``confirmed_by_its_write``.

    Every request counts against a rate limit: its token's once the token is known, the client's
    address before that (the public document, a missing or a bad token), so 429 comes before 401.
    """
    if is_public(request.path):
        ratelimit.hit_address()
        return
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        ratelimit.hit_address()
        raise Unauthenticated("Send an API token as `Authorization: Bearer <token>`.")
    now = utcnow()
    session = db.session()  # not the scoped proxy, which looks the session up again on every call
    authenticated = tokens.authenticate(session, credential.strip(), now=now,
                                        pepper=current_app.config["TOKEN_PEPPER"],
                                        confirm_with_write=request.endpoint in CONFIRMED_BY_WRITE)
    if authenticated is None:
        ratelimit.hit_address()
        raise Unauthenticated(TOKEN_REFUSED)
    ratelimit.hit_token(authenticated.token_id)
    if tokens.use_is_due(session, authenticated.token_id, now):
        if authenticated.unconfirmed is not None:
            authenticated = _authenticate_reading(credential.strip(), now)  # a use of a live token only
        _record_use(authenticated.token_id, now)
    _keep(authenticated)


def authenticate_again() -> None:
    """After ``tokens.RevisionsMoved`` (and a rollback): the request's authentication again,
    reading the revisions, or 401 if the token no longer stands."""
    header = request.headers.get("Authorization", "")
    _keep(_authenticate_reading(header.partition(" ")[2].strip(), utcnow()))


def _authenticate_reading(credential: str, now: datetime) -> tokens.Authenticated:
    authenticated = tokens.authenticate(db.session(), credential, now=now, pepper=current_app.config["TOKEN_PEPPER"])
    if authenticated is None:
        raise Unauthenticated(TOKEN_REFUSED)
    return authenticated


def _keep(authenticated: tokens.Authenticated) -> None:
    g.api_user = authenticated.user
    g.api_scopes = authenticated.scopes
    g.register_revision = authenticated.register_revision
    g.unconfirmed_revisions = authenticated.unconfirmed


def _record_use(token_id: int, now: datetime) -> None:
    """Note the token's use and commit it at once, before the request does anything else.

    It must not wait for the request's outcome: a dry-run check never commits, and a failed
    request was still a use. It is bookkeeping, not a change to audit, and best effort: on SQLite
    a read-only request's transaction cannot take the write lock if another writer committed
    since it began, and then the next request notes the use instead.
    """
    try:
        tokens.record_use(db.session, token_id, now)
        db.session.commit()
    except OperationalError:
        db.session.rollback()
    else:
        tokens.use_recorded(db.session, token_id, now)


def api_user(scope: str) -> User:
    """The acting user, if their token carries ``scope``."""
    if scope not in g.get("api_scopes", frozenset()):
        raise MissingScope(f"This operation needs a token with the `{scope}` scope.")
    return g.api_user
