"""The exchange request form: every field of DESIGN §4, its choices taken from the loaded policies."""
from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from govuk_frontend_wtf.wtforms_widgets import (
    GovCheckboxesInput,
    GovRadioInput,
    GovSelect,
    GovSubmitInput,
    GovTextArea,
    GovTextInput,
)
from wtforms import IntegerField, RadioField, SelectField, SelectMultipleField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from app.policies.loader import PolicyBundle
from app.web.fields import UkDateField, choices

NONE = ("", "None")


class ExchangeForm(FlaskForm):
    to_org = SelectField("Who do you want to share with?", widget=GovSelect(),
                         validators=[DataRequired("Select the organisation you want to share with")])
    protocol = SelectField("Which protocol are you sharing under?", widget=GovSelect(),
                           description="Choose one-off if no protocol covers this sharing.")
    purpose = SelectField("Purpose", widget=GovSelect(), validators=[DataRequired("Select the purpose")])
    data_categories = SelectMultipleField("What information do you want to share?", widget=GovCheckboxesInput(),
                                          validators=[DataRequired("Select at least one kind of information")])
    subject_types = SelectMultipleField("Who is the information about?", widget=GovCheckboxesInput(),
                                        validators=[DataRequired("Select who the information is about")])
    subject_count = IntegerField("How many people is it about?", widget=GovTextInput(), default=1,
                                 validators=[InputRequired("Enter how many people it is about"),
                                             NumberRange(min=1, message="Enter a whole number of 1 or more")])
    bulk_or_matching = RadioField("Is this a bulk extract or data matching?", widget=GovRadioInput(),
                                  choices=choices([("no", "No"), ("yes", "Yes")]), default="no")
    lawful_basis = SelectField("Your lawful basis (UK GDPR Article 6)", widget=GovSelect(), validators=[Optional()])
    special_article9 = SelectField("Condition for special category data (UK GDPR Article 9)", widget=GovSelect(),
                                   description="Only if you share health, ethnicity, sexual life or other special "
                                               "category data.", validators=[Optional()])
    special_paragraph = SelectField("Schedule 1 paragraph for that condition", widget=GovSelect(),
                                    validators=[Optional()])
    criminal_route = SelectField("How you meet Article 10 for criminal offence data", widget=GovSelect(),
                                 validators=[Optional()])
    criminal_paragraph = SelectField("Schedule 1 paragraph for criminal offence data", widget=GovSelect(),
                                     validators=[Optional()])
    legal_gateway = SelectField("Statutory gateway", widget=GovSelect(),
                                description="The power that lets a public authority share.", validators=[Optional()])
    transfer_method = SelectField("How will you send it?", widget=GovSelect(),
                                  validators=[DataRequired("Select how you will send it")])
    retention_months = IntegerField("How many months will the recipient keep it?", widget=GovTextInput(),
                                    validators=[Optional(), NumberRange(min=1, max=1200,
                                                                        message="Enter a number of months from 1 to 1200")])
    confidentiality_basis = SelectField("Common law basis for confidential health information", widget=GovSelect(),
                                        validators=[Optional()])
    onward_recipient = SelectField("Will the recipient pass it on? To whom?", widget=GovSelect(),
                                   validators=[Optional()])
    emergency_category = SelectField("Is this an emergency?", widget=GovSelect(),
                                     description="Only for a real emergency such as a risk to life. A deadline is "
                                                 "not an emergency.", validators=[Optional()])
    emergency_justification = TextAreaField("Why it cannot wait", widget=GovTextArea(),
                                            validators=[Optional(), Length(max=4000)])
    justification = TextAreaField("Why is sharing necessary?", widget=GovTextArea(),
                                  validators=[Optional(), Length(max=4000)])
    as_of = UkDateField("Check as of another date", description="Optional, for a check only: what the answer was "
                                                                "or would be on that day.", validators=[Optional()])
    check = SubmitField("Check", widget=GovSubmitInput())
    submit = SubmitField("Submit the request", widget=GovSubmitInput())

    def fill_choices(self, bundle: PolicyBundle, organisations: list[tuple[str, str]], protocols: list[tuple[str, str]]) -> None:
        taxonomy = bundle.taxonomy
        self.to_org.choices = choices([("", "Select an organisation")] + organisations)
        self.onward_recipient.choices = choices([("", "No onward sharing")] + organisations)
        self.protocol.choices = choices([("", "Select a protocol")] + protocols + [("one-off", "None: one-off sharing")])
        self.purpose.choices = choices([("", "Select a purpose")] + [(k, v.label) for k, v in taxonomy.purposes.items()])
        self.data_categories.choices = choices((k, f"{v.label} ({k})") for k, v in taxonomy.data_categories.items())
        self.subject_types.choices = choices((k, v.label) for k, v in taxonomy.subject_types.items())
        self.lawful_basis.choices = choices([NONE] + [(k, f"({k}) {v.label}") for k, v in taxonomy.lawful_bases.items()])
        self.special_article9.choices = choices(
            [NONE] + [(k, f"({k}) {v.label}") for k, v in taxonomy.special_category_conditions.items()])
        paragraphs = [(str(n), f"Paragraph {n}: {p.title}") for n, p in sorted(taxonomy.schedule1_paragraphs.items())]
        self.special_paragraph.choices = choices([NONE] + paragraphs)
        self.criminal_paragraph.choices = choices([NONE] + paragraphs)
        self.criminal_route.choices = choices([NONE] + [(k, v.label) for k, v in taxonomy.article10_routes.items()])
        self.legal_gateway.choices = choices([NONE] + [(k, v.title) for k, v in taxonomy.statutory_gateways.items()])
        self.transfer_method.choices = choices(
            [("", "Select a method")] + [(k, v.label) for k, v in taxonomy.transfer_methods.items()])
        self.confidentiality_basis.choices = choices(
            [NONE] + [(k, v.label) for k, v in taxonomy.confidentiality_bases.items()])
        self.emergency_category.choices = choices(
            [("", "No")] + [(k, f"Yes: {v.label}") for k, v in taxonomy.emergency_categories.items()]
            + [(k, f"{v.label} (urgent, not an emergency)") for k, v in taxonomy.non_emergency_urgencies.items()])

    def request_data(self, from_org: str, *, include_as_of: bool) -> dict[str, Any]:
        """The form as the JSON request the API takes, so both go through one validation."""
        data: dict[str, Any] = {
            "from_org": from_org,
            "to_org": self.to_org.data,
            "purpose": self.purpose.data,
            "data_categories": list(self.data_categories.data or []),
            "subject_types": list(self.subject_types.data or []),
            "subject_count": self.subject_count.data or 1,
            "bulk_or_matching": self.bulk_or_matching.data == "yes",
            "transfer_method": self.transfer_method.data,
            "one_off": self.protocol.data == "one-off",
            "justification": self.justification.data or "",
        }
        if self.protocol.data and self.protocol.data != "one-off":
            code, _, version = self.protocol.data.rpartition(":v")
            data["protocol"] = {"code": code, "version": int(version)}
        for name in ("lawful_basis", "legal_gateway", "confidentiality_basis", "onward_recipient"):
            value = getattr(self, name).data
            if value:
                data[name] = value
        if self.retention_months.data:
            data["retention_months"] = self.retention_months.data
        if self.special_article9.data:
            data["special_category_condition"] = {
                "article9": self.special_article9.data,
                "schedule1_paragraph": int(self.special_paragraph.data) if self.special_paragraph.data else None}
        if self.criminal_route.data:
            data["criminal_offence_condition"] = {
                "route": self.criminal_route.data,
                "schedule1_paragraph": int(self.criminal_paragraph.data) if self.criminal_paragraph.data else None}
        if self.emergency_category.data:
            data["emergency"] = {"category": self.emergency_category.data,
                                 "justification": self.emergency_justification.data or ""}
        if include_as_of and self.as_of.data:
            data["as_of"] = self.as_of.data.isoformat()
        return data


class ResolutionForm(FlaskForm):
    decision = RadioField("Your decision", widget=GovRadioInput(),
                          choices=choices([("approved", "Approve the exchange"), ("refused", "Refuse the exchange")]),
                          validators=[DataRequired("Select whether you approve or refuse the exchange")])
    reasons = TextAreaField("Reasons", widget=GovTextArea(),
                            description="As you would write them on the ICO data sharing request form.",
                            validators=[DataRequired("Enter the reasons for your decision"), Length(max=10_000)])
    valid_until = UkDateField("Approval lasts until", description="Required for an approval; at most a year.",
                              validators=[Optional()])
    submit = SubmitField("Record decision", widget=GovSubmitInput())


class EmergencyReviewForm(FlaskForm):
    conclusion = RadioField("Was the emergency sharing justified?", widget=GovRadioInput(),
                            choices=choices([("justified", "Yes, it was justified"),
                                             ("not_justified", "No, it was not justified")]),
                            validators=[DataRequired("Select whether the emergency sharing was justified")])
    notes = TextAreaField("What you found", widget=GovTextArea(),
                          validators=[DataRequired("Enter what you found"), Length(max=10_000)])
    submit = SubmitField("Record review", widget=GovSubmitInput())
