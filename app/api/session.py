"""The API has no cookie session: bearer tokens carry identity, so /api/ neither reads nor writes one.

Without this, every API response carried ``Vary: Cookie`` (flask-login looks into the session after
each request), and a browser's session cookie sent along with an API call would be decoded and
re-signed for nothing.
"""
from __future__ import annotations

from flask import Flask, Request, Response
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

API_PREFIX = "/api/"


class NoApiSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions everywhere but under /api/, where each request gets an
    empty session that is never saved."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(API_PREFIX):
            return SecureCookieSession()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SecureCookieSession, response: Response) -> None:
        from flask import request

        if request.path.startswith(API_PREFIX):
            return
        super().save_session(app, session, response)


def init_app(app: Flask) -> None:
    app.session_interface = NoApiSessionInterface()
