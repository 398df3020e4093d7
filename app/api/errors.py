"""One JSON error envelope for every API failure; no exception text ever reaches a client."""
from __future__ import annotations

from typing import Any

from flask import jsonify, make_response
from pydantic import BaseModel, Field, ValidationError


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. `data_categories.1`")
    message: str = Field(description="What to fix")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `validation_failed`, `not_found`")
    message: str = Field(description="A sentence a person can act on")
    fields: list[FieldError] = Field(default_factory=list, description="Per-field problems, if any")


class ErrorEnvelope(BaseModel):
    """Every API error has this shape."""

    error: ErrorBody


def error_response(status: int, code: str, message: str, fields: dict[str, str] | None = None, headers: Any = None):
    body = {"error": {"code": code, "message": message,
                      "fields": [{"field": k, "message": v} for k, v in (fields or {}).items()]}}
    response = make_response(jsonify(body), status)
    if headers:
        for name, value in headers:
            response.headers[name] = value
    return response


def _field_name(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location) or "body"


def _message(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "missing":
        return "This field is required"
    if kind == "extra_forbidden":
        return "This field is not recognised: remove it"
    return str(error.get("msg", "Invalid value"))


def validation_error_response(exc: ValidationError):
    """flask-openapi3 calls this when a request fails its pydantic model."""
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        fields.setdefault(_field_name(tuple(error.get("loc", ()))), _message(error))
    return error_response(422, "validation_failed", "The request has invalid fields: see `fields`.", fields)


#: The largest row id an API path or query accepts: PostgreSQL's INTEGER. A larger one could never
#: be found, and past 64 bits the database drivers fail on it, so it is refused as invalid (422).
MAX_ROW_ID = 2**31 - 1


#: Response documentation shared by every operation.
def standard_responses(*statuses: int) -> dict[int, type[BaseModel]]:
    return {status: ErrorEnvelope for status in statuses}
