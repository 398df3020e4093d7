"""Putting a service's field errors back onto the form that sent them."""
from __future__ import annotations

from flask_wtf import FlaskForm

from app.errors import ValidationFailed


def apply_errors(form: FlaskForm, exc: ValidationFailed) -> None:
    """Show each service error beside its field, or at the top if the form has no such field."""
    for name, message in exc.errors.items():
        field = getattr(form, name, None)
        if field is not None and hasattr(field, "errors"):
            field.errors = list(field.errors) + [message] if isinstance(field.errors, (list, tuple)) else [message]
        else:
            form.form_errors.append(message)
