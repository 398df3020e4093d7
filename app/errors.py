"""Domain errors raised by services and mapped to HTTP responses in one place (``app.web.errors``)."""
from __future__ import annotations


class AccordError(Exception):
    """Base of every error a user can be told about; its message is safe to show."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(AccordError):
    status_code = 404
    code = "not_found"


class NotPermitted(AccordError):
    status_code = 403
    code = "forbidden"


class Conflict(AccordError):
    status_code = 409
    code = "conflict"


class ValidationFailed(AccordError):
    """Input that cannot be stored, with a message per field so forms and the API can point at it."""

    status_code = 422
    code = "validation_failed"

    def __init__(self, errors: dict[str, str], message: str = "Check the highlighted fields and try again."):
        super().__init__(message)
        self.errors = errors
