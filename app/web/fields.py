"""Form fields shared by several areas, with the GOV.UK error wording."""
from __future__ import annotations

from datetime import date, datetime

from govuk_frontend_wtf.wtforms_widgets import GovDateInput
from wtforms import DateField
from wtforms.fields.choices import SelectChoice


class UkDateField(DateField):
    """Day, month and year boxes; a bad date says what a good one looks like."""

    widget = GovDateInput()

    def __init__(self, label=None, validators=None, **kwargs):
        super().__init__(label, validators, format="%d %m %Y", **kwargs)

    def process_formdata(self, valuelist):
        if len(valuelist) != 3:
            # The widget renders day, month and year; anything else (a field left out) counts as blank.
            self.raw_data = None
        if not valuelist or not any(part.strip() for part in valuelist):
            self.data = None
            return
        parts = [part.strip() for part in valuelist]
        if len(parts) != 3 or not all(part.isdigit() for part in parts):
            self.data = None
            raise ValueError(f"{self.label.text} must be a real date, like 27 3 2026")
        try:
            self.data = date(int(parts[2]), int(parts[1]), int(parts[0]))
        except ValueError:
            self.data = None
            raise ValueError(f"{self.label.text} must be a real date, like 27 3 2026") from None
        if self.data.year < 1900:
            self.data = None
            raise ValueError(f"{self.label.text} must include a four-digit year, like 2026")

    def _value(self):
        if self.raw_data:
            return " ".join(self.raw_data)
        if isinstance(self.data, (date, datetime)):
            return self.data.strftime("%d %m %Y")
        return ""


def choices(pairs) -> list[SelectChoice]:
    """``[(value, label), ...]`` as WTForms choices (bare tuples are deprecated from WTForms 3.3)."""
    return [SelectChoice(value, label) for value, label in pairs]
