"""The rules of a transfer's life that need no database: how long it is kept, what its status
is, and what a file name and media type may look like once stored.

Pure: no Flask, no database, no clock (the caller passes the time).
"""
from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

#: Used when a decision names no retention period (emergency or one-off sharing without a
#: protocol): short, because no protocol vouches for a longer one.
FALLBACK_RETENTION_MONTHS = 3
#: How long the recipient has to confirm it destroyed its copies before the transfer is flagged.
CONFIRMATION_GRACE = timedelta(days=7)

DEFAULT_FILENAME = "transfer.bin"
DEFAULT_MEDIA_TYPE = "application/octet-stream"
MAX_FILENAME_LENGTH = 200
MAX_MEDIA_TYPE_LENGTH = 127

_TOKEN = r"[A-Za-z0-9!#$&^_.+-]{1,63}"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")
# Characters that mean something to a file system or a shell on some platform.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                     *(f"lpt{i}" for i in range(1, 10))}


class TransferStatus(str, Enum):
    SENT = "sent"
    DOWNLOADED = "downloaded"
    DESTROYED = "destroyed"
    #: Destroyed, but the recipient has not confirmed destroying its copies within the grace period.
    DESTRUCTION_UNCONFIRMED = "destruction_unconfirmed"

    @property
    def label(self) -> str:
        return {"destruction_unconfirmed": "Destruction unconfirmed"}.get(self.value, self.value.capitalize())


def transfer_status(*, destroyed_at: datetime | None, downloaded: bool,
                    confirmation_requested_at: datetime | None, confirmed_at: datetime | None,
                    now: datetime) -> TransferStatus:
    """The status a person needs at a glance, derived from the dates so it can never drift."""
    if destroyed_at is None:
        return TransferStatus.DOWNLOADED if downloaded else TransferStatus.SENT
    if confirmation_overdue(confirmation_requested_at=confirmation_requested_at, confirmed_at=confirmed_at,
                            now=now):
        return TransferStatus.DESTRUCTION_UNCONFIRMED
    return TransferStatus.DESTROYED


def confirmation_overdue(*, confirmation_requested_at: datetime | None, confirmed_at: datetime | None,
                         now: datetime) -> bool:
    return (confirmation_requested_at is not None and confirmed_at is None
            and now - confirmation_requested_at > CONFIRMATION_GRACE)


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months later, on the month's last day if the
    day does not exist then (31 January + 1 month = 28 or 29 February)."""
    if months < 0:
        raise ValueError("months must not be negative")
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def retention_months(requested: int | None, maximum: int | None) -> int:
    """The months a transfer is kept: what the decision allowed, never beyond the protocol's
    maximum for the recipient, and a short fallback when the decision named no period."""
    months = requested if requested is not None else FALLBACK_RETENTION_MONTHS
    if maximum is not None:
        months = min(months, maximum)
    return max(months, 0)


def maximum_retention_from(decision: dict[str, Any]) -> int | None:
    """The recipient's maximum retention in months as the decision's ``retention`` finding recorded it."""
    for finding in decision.get("findings") or ():
        if finding.get("rule") == "retention":
            maximum = (finding.get("evidence") or {}).get("maximum_months")
            if isinstance(maximum, int) and not isinstance(maximum, bool):
                return maximum
    return None


def sanitise_filename(raw: str | None) -> str:
    """A file name safe to store and to offer back in ``Content-Disposition``: the last path
    component only, no control or reserved characters, no leading dots, at most 200 characters
    (keeping the extension)."""
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name)
    name = re.sub(r"\s+", " ", name).strip(" .")
    if name.split(".")[0].lower() in _WINDOWS_RESERVED:
        name = "_" + name
    if len(name) > MAX_FILENAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            name = stem[:MAX_FILENAME_LENGTH - len(extension) - 1].rstrip(" .") + "." + extension
        else:
            name = name[:MAX_FILENAME_LENGTH].rstrip(" .")
    return name or DEFAULT_FILENAME


def normalise_media_type(raw: str | None) -> str:
    """``type/subtype`` in lower case without parameters, or ``application/octet-stream``."""
    value = (raw or "").split(";", 1)[0].strip().lower()
    if len(value) <= MAX_MEDIA_TYPE_LENGTH and _MEDIA_TYPE.fullmatch(value):
        return value
    return DEFAULT_MEDIA_TYPE
