"""One place mapping errors to responses: the JSON envelope under /api/, HTML pages elsewhere."""
from __future__ import annotations

from flask import Flask, render_template, request
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from app.api.errors import error_response
from app.errors import AccordError, ValidationFailed
from app.extensions import db


#: What a client is told to wait after the database connection was lost.
DATABASE_RETRY_AFTER_SECONDS = 5


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def register(app: Flask) -> None:
    @app.errorhandler(AccordError)
    def handle_domain_error(exc: AccordError):
        db.session.rollback()
        if _wants_json():
            fields = exc.errors if isinstance(exc, ValidationFailed) else None
            return error_response(exc.status_code, exc.code, exc.message, fields)
        return render_template("web/error.html", status=exc.status_code, message=exc.message), exc.status_code

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException):
        db.session.rollback()
        # Keep the response's own headers (Allow on 405, WWW-Authenticate) from the exception.
        original = exc.get_response()
        headers = [(k, v) for k, v in original.headers.items() if k in ("Allow", "WWW-Authenticate", "Retry-After")]
        code = (exc.name or "error").lower().replace(" ", "_")
        if _wants_json():
            return error_response(exc.code or 500, code, exc.description or exc.name, headers=headers)
        response = app.make_response(
            (render_template("web/error.html", status=exc.code, message=exc.description), exc.code)
        )
        for name, value in headers:
            response.headers[name] = value
        return response

    @app.errorhandler(DBAPIError)
    def handle_database_error(exc: DBAPIError):
        if not exc.connection_invalidated:
            return handle_unexpected(exc)
        # The server went away (restart, failover) under a running request; the pool has already
        # dropped its connections, so the next request gets a fresh one.
        db.session.rollback()
        app.logger.warning("Lost the database connection on %s %s", request.method, request.path)
        message = ("The connection to the database was lost. Try again in a few seconds; if you were "
                   "recording something, look for it first: it may have been saved just before the connection went.")
        headers = [("Retry-After", str(DATABASE_RETRY_AFTER_SECONDS))]
        if _wants_json():
            return error_response(503, "database_unavailable", message, headers=headers)
        return render_template("web/error.html", status=503, message=message), 503, headers

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        db.session.rollback()
        app.logger.exception("Unhandled error on %s %s", request.method, request.path)
        message = "Something went wrong on our side. Nothing was saved. Try again, and tell your coordinator if it persists."
        if _wants_json():
            return error_response(500, "internal_error", message)
        return render_template("web/error.html", status=500, message=message), 500
