"""Register forms. They check shape; the service checks meaning (codes exist, dates in order)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from govuk_frontend_wtf.wtforms_widgets import GovRadioInput, GovSelect, GovSubmitInput, GovTextArea, GovTextInput
from wtforms import RadioField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from app.registry.models import OrganisationKind, SignatoryRole
from app.web.fields import UkDateField, choices

YES_NO = [("yes", "Yes"), ("no", "No")]


def parse_paragraphs(text: str | None) -> list[int]:
    """``"6, 10, 18"`` → ``[6, 10, 18]``; raises ValueError with the fix."""
    if not text or not text.strip():
        return []
    numbers = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= 37:
            raise ValueError("Enter Schedule 1 paragraph numbers from 1 to 37 separated by commas, like 6, 10, 18")
        numbers.append(int(part))
    return sorted(set(numbers))


class OrganisationForm(FlaskForm):
    code = StringField("Code", widget=GovTextInput(), description="A short identifier used in protocols, like kent-police. "
                       "It cannot be changed later.", validators=[Optional(), Length(max=64)])
    name = StringField("Name", widget=GovTextInput(), validators=[DataRequired("Enter the organisation's name"),
                                                                   Length(max=200)])
    kind = SelectField("Kind of organisation", widget=GovSelect(),
                       choices=choices([("", "Select a kind")] + [(k.value, k.label) for k in OrganisationKind]),
                       validators=[DataRequired("Select the kind of organisation")])
    is_public_authority = RadioField("Is it a public authority?", widget=GovRadioInput(), choices=choices(YES_NO),
                                     validators=[DataRequired("Select yes if it is a public authority")])
    is_competent_authority = RadioField("Is it a competent authority for law enforcement (DPA 2018 Part 3)?",
                                        widget=GovRadioInput(), choices=choices(YES_NO),
                                        validators=[DataRequired("Select yes if it is a competent authority")])
    dpo_name = StringField("Data protection officer", widget=GovTextInput(), validators=[Optional(), Length(max=200)])
    dpo_email = StringField("DPO e-mail address", widget=GovTextInput(), validators=[Optional(), Length(max=254)])
    ico_registration_number = StringField("ICO registration number", widget=GovTextInput(),
                                          validators=[Optional(), Length(max=32)])
    ico_registration_expires_on = UkDateField("ICO registration expires on", validators=[Optional()])
    apd_paragraphs = StringField("Schedule 1 paragraphs covered by its appropriate policy document",
                                 widget=GovTextInput(), description="Numbers separated by commas, like 6, 10, 18",
                                 validators=[Optional()])
    apd_review_on = UkDateField("Appropriate policy document review date", validators=[Optional()])
    dissolved_on = UkDateField("Dissolved on", description="Only for a body that no longer exists",
                               validators=[Optional()])
    successor = SelectField("Successor body", widget=GovSelect(), validators=[Optional()])
    submit = SubmitField("Save", widget=GovSubmitInput())

    def validate_apd_paragraphs(self, field):
        try:
            parse_paragraphs(field.data)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def service_data(self) -> dict:
        return {
            "code": (self.code.data or "").strip(),
            "name": self.name.data,
            "kind": self.kind.data,
            "is_public_authority": self.is_public_authority.data == "yes",
            "is_competent_authority": self.is_competent_authority.data == "yes",
            "dpo_name": self.dpo_name.data,
            "dpo_email": self.dpo_email.data,
            "ico_registration_number": self.ico_registration_number.data,
            "ico_registration_expires_on": self.ico_registration_expires_on.data,
            "apd_paragraphs": parse_paragraphs(self.apd_paragraphs.data),
            "apd_review_on": self.apd_review_on.data,
            "dissolved_on": self.dissolved_on.data,
            "successor": self.successor.data or None,
        }


class SignatureForm(FlaskForm):
    kmisa_version = SelectField("K-MISA version", widget=GovSelect(),
                                validators=[DataRequired("Select the K-MISA version that was signed")])
    signed_on = UkDateField("Date signed", validators=[DataRequired("Enter the date the agreement was signed")])
    signed_by_name = StringField("Signed by", widget=GovTextInput(), description="Name or post of the signatory",
                                 validators=[DataRequired("Enter who signed"), Length(max=200)])
    signed_by_role = RadioField("Signatory's role", widget=GovRadioInput(),
                                choices=choices([(r.value, r.label) for r in SignatoryRole]),
                                validators=[DataRequired("Select the signatory's role")])
    expires_on = UkDateField("Renewal date", description="When the signature must be renewed, if the agreement says",
                             validators=[Optional()])
    submit = SubmitField("Record signature", widget=GovSubmitInput())


class WithdrawalForm(FlaskForm):
    withdrawn_on = UkDateField("Date withdrawn", validators=[DataRequired("Enter the date it was withdrawn")])
    reason = TextAreaField("Reason", widget=GovTextArea(), validators=[DataRequired("Enter why it was withdrawn"),
                                                                       Length(max=2000)])
    submit = SubmitField("Record withdrawal", widget=GovSubmitInput())


class SubgroupForm(FlaskForm):
    code = StringField("Code", widget=GovTextInput(), description="A short identifier, like vcs-group",
                       validators=[Optional(), Length(max=64)])
    name = StringField("Name", widget=GovTextInput(), validators=[DataRequired("Enter the subgroup's name"),
                                                                   Length(max=200)])
    description = TextAreaField("Description", widget=GovTextArea(), validators=[Optional(), Length(max=4000)])
    lead_organisation = SelectField("Lead organisation", widget=GovSelect(),
                                    validators=[DataRequired("Select the lead organisation")])
    parent = SelectField("Part of", widget=GovSelect(), validators=[Optional()])
    submit = SubmitField("Save", widget=GovSubmitInput())
