"""Sign-in and user forms, rendered with GOV.UK Frontend widgets."""
from __future__ import annotations

from flask_wtf import FlaskForm
from govuk_frontend_wtf.wtforms_widgets import (
    GovCheckboxesInput,
    GovPasswordInput,
    GovRadioInput,
    GovSelect,
    GovSubmitInput,
    GovTextInput,
)
from wtforms import EmailField, PasswordField, RadioField, SelectField, SelectMultipleField, StringField, SubmitField
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


#: What each scope lets a partner system do, in the words the token page shows.
SCOPE_CHOICES = [
    ("read", "Read: the register, and the exchanges and transfers your organisation may see"),
    ("check", "Check: ask whether an exchange would be allowed, recording nothing"),
    ("submit", "Submit: record exchanges, and make the changes your roles allow"),
    ("transfer", "Transfer: send and download encrypted transfers"),
]
LIFETIME_CHOICES = [("30", "30 days"), ("90", "90 days"), ("180", "180 days"), ("366", "1 year")]


class TokenForm(FlaskForm):
    name = StringField("Name", widget=GovTextInput(), description="What the token is for, like “Case management system”.",
                       validators=[DataRequired("Enter a name that says what the token is for"), Length(max=100)])
    scopes = SelectMultipleField("What may it do?", widget=GovCheckboxesInput(), choices=choices(SCOPE_CHOICES),
                                 description="Give it only what the system needs. It can never do more than your roles allow.",
                                 validators=[DataRequired("Select at least one thing the token may do")])
    expires_in_days = RadioField("When should it expire?", widget=GovRadioInput(), choices=choices(LIFETIME_CHOICES),
                                 default="90", validators=[DataRequired("Select when the token should expire")])
    submit = SubmitField("Create token", widget=GovSubmitInput())
