"""The one place that reads the clock, so services can take ``as_of`` and tests can travel in time."""
from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")


def utcnow() -> datetime:
    """Now, timezone-aware in UTC, at the microsecond precision both databases store."""
    return datetime.now(timezone.utc)


def today() -> date:
    """Today's date in Europe/London, the date partners sign and review by."""
    return utcnow().astimezone(LONDON).date()


def as_utc(value: datetime) -> datetime:
    """Treat a naive datetime read back from SQLite as UTC, which is how it was written."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
