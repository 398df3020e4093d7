"""Sessions, security headers and the per-request CSP nonce.

Headers are set deliberately here rather than by an extension whose defaults miss
``base-uri`` and ``frame-ancestors`` and whose HTTPS redirect also catches API calls (DESIGN §11).
"""
from __future__ import annotations

import secrets

from flask import Flask, g, request
from werkzeug.routing import IntegerConverter

from app.api.errors import MAX_ROW_ID
from app.errors import NotFound, ValidationFailed
from app.extensions import db, login_manager

#: Pages that embed the third-party API explorer, whose assets need inline script and style.
DOCS_PREFIXES = ("/api/v1/swagger",)


def is_docs_page(path: str) -> bool:
    """The explorer's own page and assets, and nothing that merely starts with the same letters."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in DOCS_PREFIXES)


def csp_nonce() -> str:
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


#: The API explorer's own policy: its third-party page needs inline script and style.
_DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def content_security_policy(nonce: str) -> str:
    return "; ".join([
        "default-src 'self'",
        f"script-src 'self' 'nonce-{nonce}'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


class RowIdConverter(IntegerConverter):
    """``<int:...>`` in every route, bounded by the largest row id (PostgreSQL's INTEGER): a
    larger number is simply no page (404) instead of an integer the database driver cannot take."""

    def __init__(self, map, *args, **kwargs) -> None:  # noqa: A002 - Werkzeug's parameter name
        kwargs.setdefault("max", MAX_ROW_ID)
        super().__init__(map, *args, **kwargs)


def _nul_field(value: object, path: str = "") -> str | None:
    """The dotted path of the first text containing a NUL character, or None."""
    if isinstance(value, str):
        return (path or "body") if "\x00" in value else None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return f"{path}.{key}".strip(".")
        found = _nul_field(item, f"{path}.{key}".strip("."))
        if found:
            return found
    return None


def _may_hold_nul(body: bytes) -> bool:
    """Whether JSON text could hold a NUL: written escaped (``\\u0000``) or, invalid but possible,
    as the byte itself. Most bodies have neither, and are spared the walk through every value."""
    return b"\\u0000" in body or b"\x00" in body


def refuse_nul_characters() -> None:
    """No text anywhere holds a NUL character: PostgreSQL cannot store one, so a request with one
    would fail on the database (a 500) instead of being told what is wrong (a 422)."""
    if "\x00" in request.path:
        raise NotFound("There is no such page")
    field = _nul_field({k: request.args.getlist(k) for k in request.args})
    if field is None and request.mimetype == "application/x-www-form-urlencoded":
        field = _nul_field({k: request.form.getlist(k) for k in request.form})
    if field is not None:
        field = field.split(".")[0]  # the parameter's name, not the index of its value
    elif request.is_json and _may_hold_nul(request.get_data(cache=True)):
        field = _nul_field(request.get_json(silent=True))
    if field is not None:
        raise ValidationFailed({field: "Remove the NUL character (\\0): it is not allowed in text"},
                               message=f"Remove the NUL character (\\0) from {field}: it is not allowed in text.")


def init_app(app: Flask) -> None:
    from app.auth import service as auth_service

    app.before_request(refuse_nul_characters)

    # Before any blueprint is registered, so every <int:...> in a route uses it.
    app.url_map.converters["int"] = RowIdConverter

    login_manager.login_view = "auth.sign_in"
    login_manager.login_message = "Sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"

    @login_manager.user_loader
    def load_user(session_id: str):
        return auth_service.load_user_for_session(db.session, session_id)

    @app.context_processor
    def inject_nonce() -> dict[str, object]:
        return {"cspNonce": csp_nonce()}

    production = app.config["ENV_NAME"] == "production"

    always = [("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "same-origin"),
              ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
              ("Cross-Origin-Opener-Policy", "same-origin")]
    if production:
        always.append(("Strict-Transport-Security", "max-age=63072000; includeSubDomains"))

    @app.after_request
    def set_security_headers(response):
        # Each added unless the view set its own. Looked up once: werkzeug's setdefault raises and
        # catches an exception for every header missing, which is all of them on most responses.
        headers = response.headers
        present = {name.lower() for name, _value in headers}
        path = request.path
        if "content-security-policy" not in present:
            headers.add("Content-Security-Policy", _DOCS_POLICY if is_docs_page(path)
                        else content_security_policy(csp_nonce()))
        headers.extend([(name, value) for name, value in always if name.lower() not in present])
        if "cache-control" not in present and (path.startswith("/api/") or response.mimetype == "text/html"):
            headers.add("Cache-Control", "no-store")
        return response
