"""Bearer-token authentication for /api/v1; the token's user is the acting user."""
from __future__ import annotations

from flask import current_app, g, request

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


#: API paths anyone may read: the document and the explorer.
PUBLIC_PATHS = ("/api/v1/openapi.json", "/api/v1/swagger")


def authenticate_request() -> None:
    """Run before every API request; sets ``g.api_user`` and ``g.api_scopes`` or refuses with 401."""
    if request.path.startswith(PUBLIC_PATHS):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthenticated("Send an API token as `Authorization: Bearer <token>`.")
    token = tokens.authenticate(db.session, credential.strip(), now=utcnow(),
                                pepper=current_app.config["TOKEN_PEPPER"])
    if token is None:
        raise Unauthenticated("The API token is unknown, expired or revoked.")
    g.api_user = token.user
    g.api_scopes = frozenset(token.scopes)


def api_user(scope: str) -> User:
    """The acting user, if their token carries ``scope``."""
    if scope not in g.get("api_scopes", frozenset()):
        raise MissingScope(f"This operation needs a token with the `{scope}` scope.")
    return g.api_user
