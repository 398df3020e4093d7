"""Template filters for UK dates and Europe/London times."""
from __future__ import annotations

from datetime import date, datetime

from flask import Flask

from app.clock import LONDON, as_utc


def uk_date(value: date | datetime | None) -> str:
    """``22 November 2026``, the GOV.UK style."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = as_utc(value).astimezone(LONDON).date()
    return f"{value.day} {value:%B %Y}"


def uk_datetime(value: datetime | None) -> str:
    """``22 November 2026 at 2:05pm`` in Europe/London."""
    if value is None:
        return ""
    local = as_utc(value).astimezone(LONDON)
    hour = local.hour % 12 or 12
    return f"{local.day} {local:%B %Y} at {hour}:{local:%M}{'am' if local.hour < 12 else 'pm'}"


#: GOV.UK tag colours for statuses, so the same status looks the same everywhere.
STATUS_TAG_CLASSES = {
    "active": "govuk-tag--green",
    "allow": "govuk-tag--green",
    "approved": "govuk-tag--green",
    "due_for_renewal": "govuk-tag--yellow",
    "refer": "govuk-tag--yellow",
    "draft": "govuk-tag--grey",
    "expired": "govuk-tag--red",
    "deny": "govuk-tag--red",
    "withdrawn": "govuk-tag--orange",
    "superseded": "govuk-tag--grey",
    "dissolved": "govuk-tag--grey",
    "never_signed": "govuk-tag--red",
    "sent": "govuk-tag--blue",
    "downloaded": "govuk-tag--green",
    "destroyed": "govuk-tag--grey",
    "destruction_unconfirmed": "govuk-tag--red",
    "overdue": "govuk-tag--red",
    "due_today": "govuk-tag--orange",
    "due_soon": "govuk-tag--yellow",
    "upcoming": "govuk-tag--blue",
}


def status_tag_class(status: str | None) -> str:
    return STATUS_TAG_CLASSES.get(status or "", "govuk-tag--grey")


def humanise(value: str | None) -> str:
    return (value or "").replace("_", " ").capitalize()


def role_label(value: str) -> str:
    """``Data protection officer`` for ``dpo``: a role as the people holding it would name it."""
    from app.auth.models import Role

    try:
        return Role(value).label
    except ValueError:
        return humanise(value)


def register(app: Flask) -> None:
    app.add_template_filter(uk_date, "uk_date")
    app.add_template_filter(uk_datetime, "uk_datetime")
    app.add_template_filter(status_tag_class, "status_tag_class")
    app.add_template_filter(humanise, "humanise")
    app.add_template_filter(role_label, "role_label")
