"""Due dates as an iCalendar feed (RFC 5545), so coordinators see them in their own calendar.

Pure: it turns due items into bytes. Each item is an all-day event on its due date with a UID
that stays the same from one fetch to the next, so a calendar program updates the event rather
than adding a copy; a due date that moves is a new item (and a new UID).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone

import icalendar

from app.reminders.due import DueItem, kind_label

PRODUCT_ID = "-//Accord//Reminders//EN"
_UID_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")


def event_uid(item: DueItem) -> str:
    raw = f"{item.kind}.{item.subject_type}.{item.subject_id}.{item.due_on.isoformat()}"
    return f"{_UID_UNSAFE.sub('-', raw)}@accord"


def render_feed(items: Iterable[DueItem], *, now: datetime, calendar_name: str) -> bytes:
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODUCT_ID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("x-wr-calname", calendar_name)
    calendar.add("refresh-interval", timedelta(hours=12), parameters={"VALUE": "DURATION"})
    stamp = now.astimezone(timezone.utc)
    for item in items:
        event = icalendar.Event()
        event.add("uid", event_uid(item))
        event.add("dtstamp", stamp)
        event.add("dtstart", item.due_on)
        event.add("dtend", item.due_on + timedelta(days=1))
        event.add("summary", item.title)
        event.add("description", f"{kind_label(item.kind)} due on {_uk_date(item.due_on)}. "
                                 f"Organisations concerned: {', '.join(item.organisations) or 'none'}.")
        event.add("categories", [kind_label(item.kind)])
        event.add("transp", "TRANSPARENT")
        calendar.add_component(event)
    return calendar.to_ical()


def _uk_date(value: date) -> str:
    return f"{value.day} {value:%B %Y}"
