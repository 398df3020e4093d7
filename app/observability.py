"""Request ids and JSON logs, so one request can be followed across workers and hosts.

Every response carries ``X-Request-ID`` (the caller's, if it sent a sane one, or a fresh one);
every log line written while handling the request carries it too. Access lines record method,
path, status, duration and the acting user's id: never bodies, never payloads.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import datetime, timezone

from flask import Flask, g, has_request_context, request

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and any extra fields."""

    EXTRA_FIELDS = ("method", "path", "status", "duration_ms", "user_id", "remote_addr")

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for name in self.EXTRA_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def init_app(app: Flask) -> None:
    access = logging.getLogger("accord.access")
    if app.config.get("LOG_FORMAT") == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler.addFilter(RequestIdFilter())
        for logger in (app.logger, access, logging.getLogger("accord")):
            logger.handlers[:] = [handler]
            logger.setLevel(app.config.get("LOG_LEVEL", "INFO"))
            logger.propagate = False

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response):
        response.headers["X-Request-ID"] = g.get("request_id", "-")
        if app.config.get("LOG_ACCESS") and access.isEnabledFor(logging.INFO):
            access.info("%s %s %s", request.method, request.path, response.status_code, extra={
                "method": request.method, "path": request.path, "status": response.status_code,
                "duration_ms": round((time.perf_counter() - g.get("request_started", time.perf_counter())) * 1000, 1),
                "user_id": _acting_user_id(), "remote_addr": request.remote_addr})
        return response


def _acting_user_id() -> int | None:
    """The API token's user, or the signed-in user; an API request never loads the cookie session."""
    api_user = g.get("api_user")
    if api_user is not None or request.path.startswith("/api/"):
        return getattr(api_user, "id", None)
    from flask_login import current_user

    return getattr(current_user, "id", None) if current_user else None
