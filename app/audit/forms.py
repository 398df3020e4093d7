"""The workspace's filter form: GET parameters, so a filtered view is a link that can be shared."""
from __future__ import annotations

from flask_wtf import FlaskForm
from govuk_frontend_wtf.wtforms_widgets import GovSelect, GovSubmitInput, GovTextInput
from wtforms import SelectField, StringField, SubmitField
from wtforms.validators import Length, Optional

from app.audit import workspace
from app.web.fields import UkDateField, choices

SUBJECT_TYPES = (
    ("exchange", "Request to share"), ("transfer", "Transfer"), ("organisation", "Organisation"),
    ("signature", "Signature"), ("subgroup", "Subgroup"), ("protocol_version", "Protocol version"),
    ("policy_document", "Policy document"), ("user", "User"), ("api_token", "API token"),
    ("audit_checkpoint", "Audit checkpoint"), ("audit_chain", "Audit chain"), ("keyring", "Keyring"),
)


class EventFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a search: it changes nothing

    organisation = SelectField("Organisation concerned", widget=GovSelect(), validators=[Optional()])
    protocol = SelectField("Protocol", widget=GovSelect(), validators=[Optional()])
    subgroup = SelectField("Subgroup", widget=GovSelect(), validators=[Optional()])
    outcome = SelectField("Decision outcome", widget=GovSelect(), validators=[Optional()],
                          choices=choices([("", "Any")] + [(o, o.replace("_", " ").capitalize())
                                                           for o in workspace.OUTCOMES]))
    action = SelectField("What happened", widget=GovSelect(), validators=[Optional()])
    actor = StringField("Who (e-mail address or system label)", widget=GovTextInput(),
                        validators=[Optional(), Length(max=254)])
    subject_type = SelectField("About", widget=GovSelect(), validators=[Optional()],
                               choices=choices([("", "Anything")] + list(SUBJECT_TYPES)))
    subject_id = StringField("Its reference", widget=GovTextInput(), validators=[Optional(), Length(max=64)])
    since = UkDateField("From", description="For example, 1 4 2026", validators=[Optional()])
    until = UkDateField("To", description="For example, 30 4 2026", validators=[Optional()])
    submit = SubmitField("Apply filters", widget=GovSubmitInput())

    def fill_choices(self, organisations: list[tuple[str, str]], protocol_codes: list[tuple[str, str]],
                     subgroups: list[tuple[str, str]]) -> None:
        self.organisation.choices = choices([("", "Any")] + organisations)
        self.protocol.choices = choices([("", "Any")] + protocol_codes)
        self.subgroup.choices = choices([("", "Any")] + subgroups)
        actions = list(workspace.KNOWN_ACTIONS)
        wanted = self.action.data
        if wanted and wanted not in actions:  # an exact action from a link: keep it selectable
            actions.append(wanted)
        self.action.choices = choices([("", "Anything")] + [(a, a) for a in actions])

    def filters(self) -> workspace.EventFilters:
        """The filters, once the form has validated (the service checks dates make a range)."""
        def text(field) -> str | None:
            return (field.data or "").strip() or None

        return workspace.EventFilters(
            organisation=text(self.organisation), protocol=text(self.protocol), subgroup=text(self.subgroup),
            outcome=text(self.outcome), actor=text(self.actor), action=text(self.action),
            subject_type=text(self.subject_type), subject_id=text(self.subject_id),
            since=self.since.data, until=self.until.data)
