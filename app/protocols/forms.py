"""Protocol sign-off and the impact of a proposed version."""
from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, MultipleFileField
from govuk_frontend_wtf.wtforms_widgets import GovCheckboxInput, GovFileInput, GovSubmitInput
from wtforms import BooleanField, SubmitField
from wtforms.validators import DataRequired

from app.web.fields import UkDateField

__all__ = ["SignOffForm", "ImpactForm", "FileField"]


class SignOffForm(FlaskForm):
    confirm = BooleanField("I have read this version and sign it off on behalf of my organisation",
                           widget=GovCheckboxInput(),
                           validators=[DataRequired("Confirm you have read this version and sign it off")])
    submit = SubmitField("Sign off", widget=GovSubmitInput())


class ImpactForm(FlaskForm):
    files = MultipleFileField("Proposed protocol files", widget=GovFileInput(),
                              description="One or more YAML files, each a new version of a loaded protocol.")
    since = UkDateField("Replay requests recorded from", validators=[DataRequired("Enter the start of the period")])
    until = UkDateField("Up to and including", validators=[DataRequired("Enter the end of the period")])
    submit = SubmitField("Show what would change", widget=GovSubmitInput())
