"""Reminder forms. They check shape; the service checks meaning (a snooze ends in the future)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from govuk_frontend_wtf.wtforms_widgets import GovSubmitInput
from wtforms import SubmitField
from wtforms.validators import DataRequired

from app.web.fields import UkDateField


class SnoozeForm(FlaskForm):
    until = UkDateField("Remind me again on", description="For example, 27 3 2027",
                        validators=[DataRequired("Enter the date to be reminded again")])
    submit = SubmitField("Snooze", widget=GovSubmitInput())
