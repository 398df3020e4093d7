"""The API's OpenAPI document settings and the registration of every API blueprint."""
from __future__ import annotations

from flask import Flask, request

DESCRIPTION = (
    "Accord's JSON API for partner case-management systems. Authenticate with a bearer token "
    "(`Authorization: Bearer acc_...`) created by a user of your organisation; the token acts as "
    "that user and carries scopes (`read`, `check`, `submit`, `transfer`). Every error has the "
    "same envelope: `{\"error\": {\"code\", \"message\", \"fields\"}}`."
)

SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An Accord API token, acc_..."},
}


def register(app: Flask) -> None:
    from app.api import auth, ratelimit, session
    from app.audit.api import api as audit_api
    from app.auth.api import api as auth_api
    from app.decisions.api import api as decisions_api
    from app.extensions import csrf
    from app.registry.api import api as registry_api
    from app.transfers.api import api as transfers_api

    for blueprint in (registry_api, auth_api, decisions_api, transfers_api, audit_api):
        app.register_api(blueprint)
        csrf.exempt(blueprint)

    ratelimit.init_app(app)
    ratelimit.document(app)
    session.init_app(app)

    @app.before_request
    def _authenticate_api() -> None:
        if request.path.startswith("/api/v1/"):
            auth.authenticate_request()
