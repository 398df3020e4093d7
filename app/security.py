"""Sessions, security headers and the per-request CSP nonce.

Headers are set deliberately here rather than by an extension whose defaults miss
``base-uri`` and ``frame-ancestors`` and whose HTTPS redirect also catches API calls (DESIGN §11).
"""
from __future__ import annotations

import secrets

from flask import Flask, g, request

from app.extensions import db, login_manager

#: Pages that embed the third-party API explorer, whose assets need inline script and style.
DOCS_PREFIXES = ("/api/v1/swagger",)


def csp_nonce() -> str:
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


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


def init_app(app: Flask) -> None:
    from app.auth import service as auth_service

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

    @app.after_request
    def set_security_headers(response):
        headers = response.headers
        if request.path.startswith(DOCS_PREFIXES):
            headers.setdefault("Content-Security-Policy",
                               "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
                               "'unsafe-inline'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'")
        else:
            headers.setdefault("Content-Security-Policy", content_security_policy(csp_nonce()))
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if production:
            headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        if request.path.startswith("/api/") or response.mimetype == "text/html":
            headers.setdefault("Cache-Control", "no-store")
        return response
