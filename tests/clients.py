"""A test client whose every request runs in an app context of its own, as it does in production.

The shared ``app`` fixture keeps one app context open for the whole test, and Flask reuses it for
each test-client request, so ``g`` (Flask-Login's current user, the CSP nonce, the API user) and
``db.session`` carry over from one request to the next. Tests about who a request acts as (copied
cookies, other sessions, the authorisation matrix) use this client so each request starts clean.
"""
from __future__ import annotations

from flask.testing import FlaskClient


class IsolatedClient(FlaskClient):
    def open(self, *args, **kwargs):
        kwargs.setdefault("buffered", True)  # read the body before the context ends
        with self.application.app_context():
            return super().open(*args, **kwargs)


def isolated_client(app) -> FlaskClient:
    return IsolatedClient(app, app.response_class, use_cookies=True)
