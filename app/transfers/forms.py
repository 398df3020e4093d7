"""Transfer forms. The upload form is rendered with WTForms but never parsed by it: the view
reads the multipart body as a stream (``app.transfers.multipart``) so the file is never spooled."""
from __future__ import annotations

from flask_wtf import FlaskForm
from govuk_frontend_wtf.wtforms_widgets import GovFileInput, GovSubmitInput
from wtforms import FileField, SubmitField


class UploadForm(FlaskForm):
    payload = FileField("File to send", widget=GovFileInput(),
                        description="It is encrypted as it arrives and kept until its retention period ends.")
    submit = SubmitField("Send the file", widget=GovSubmitInput())


class ConfirmDestructionForm(FlaskForm):
    submit = SubmitField("Confirm we have destroyed our copies", widget=GovSubmitInput())
