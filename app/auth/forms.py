"""Sign-in and user forms, rendered with GOV.UK Frontend widgets."""
from __future__ import annotations

from flask_wtf import FlaskForm
from govuk_frontend_wtf.wtforms_widgets import (
    GovCheckboxesInput,
    GovPasswordInput,
    GovSelect,
    GovSubmitInput,
    GovTextInput,
)
from wtforms import EmailField, PasswordField, SelectField, SelectMultipleField, StringField, SubmitField
from wtforms.validators import DataRequired, Email, Length

from app.auth.models import Role
from app.web.fields import choices


class SignInForm(FlaskForm):
    email = EmailField("E-mail address", widget=GovTextInput(),
                       validators=[DataRequired("Enter your e-mail address")])
    password = PasswordField("Password", widget=GovPasswordInput(),
                             validators=[DataRequired("Enter your password")])
    submit = SubmitField("Sign in", widget=GovSubmitInput())


ROLE_CHOICES = [(r.value, r.label) for r in Role]


class UserForm(FlaskForm):
    email = EmailField("E-mail address", widget=GovTextInput(), validators=[
        DataRequired("Enter an e-mail address"), Email("Enter an e-mail address in the correct format, like name@example.org")])
    name = StringField("Full name", widget=GovTextInput(), validators=[DataRequired("Enter the user's full name"),
                                                                        Length(max=200)])
    organisation = SelectField("Organisation", widget=GovSelect(), validators=[DataRequired("Select an organisation")])
    roles = SelectMultipleField("Roles", widget=GovCheckboxesInput(), choices=choices(ROLE_CHOICES),
                                validators=[DataRequired("Select at least one role")])
    password = PasswordField("Initial password", widget=GovPasswordInput(),
                             description="At least 12 characters. Ask the user to change it when they first sign in.",
                             validators=[DataRequired("Enter an initial password")])
    submit = SubmitField("Create user", widget=GovSubmitInput())


class RolesForm(FlaskForm):
    roles = SelectMultipleField("Roles", widget=GovCheckboxesInput(), choices=choices(ROLE_CHOICES),
                                validators=[DataRequired("Select at least one role")])
    submit = SubmitField("Save roles", widget=GovSubmitInput())


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", widget=GovPasswordInput(),
                                     validators=[DataRequired("Enter your current password")])
    new_password = PasswordField("New password", widget=GovPasswordInput(),
                                 description="At least 12 characters.",
                                 validators=[DataRequired("Enter a new password")])
    submit = SubmitField("Change password", widget=GovSubmitInput())
