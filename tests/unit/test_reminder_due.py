"""The pure reminder rules: which milestone is current, who is told, and the calendar feed."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import icalendar
import pytest

from app.reminders.calendar import event_uid, render_feed
from app.reminders.due import (
    Directory,
    DueItem,
    Person,
    describe_milestone,
    milestones_for,
    plan,
    recipients_for,
    urgency,
)

DUE = date(2027, 3, 1)


def day(offset: int) -> date:
    return DUE + timedelta(days=offset)


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        (day(-200), None),
        (day(-91), None),  # the day before the first milestone
        (day(-90), ("before:90", day(-90), 90)),
        (day(-31), ("before:90", day(-90), 90)),
        (day(-30), ("before:30", day(-30), 30)),
        (day(-8), ("before:30", day(-30), 30)),
        (day(-7), ("before:7", day(-7), 7)),
        (day(-1), ("before:7", day(-7), 7)),
        (day(0), ("before:0", day(0), 0)),  # the last day
        (day(6), ("before:0", day(0), 0)),  # overdue, but not yet a week
        (day(7), ("overdue:1", day(7), -7)),  # then weekly while overdue
        (day(13), ("overdue:1", day(7), -7)),
        (day(14), ("overdue:2", day(14), -14)),
        (day(70), ("overdue:10", day(70), -70)),
    ],
)
def test_the_current_milestone_on_each_day(as_of, expected):
    milestone = milestones_for(DUE, as_of)
    if expected is None:
        assert milestone is None
    else:
        assert (milestone.code, milestone.reached_on, milestone.days_before) == expected
        assert milestone.is_overdue == (expected[2] < 0)


@pytest.mark.parametrize(
    ("milestones", "every", "as_of", "code"),
    [
        ((60, 14), 7, day(-60), "before:60"),
        ((60, 14), 7, day(-14), "before:14"),
        ((60, 14), 7, day(0), "before:14"),  # no due-day milestone in this policy
        ((60, 14), 7, day(7), "overdue:1"),
        ((90, 30, 7, 0), 3, day(3), "overdue:1"),
        ((90, 30, 7, 0), 3, day(8), "overdue:2"),
        ((0,), 7, day(-1), None),
        ((0,), 7, day(0), "before:0"),
        ((7, 90, 30, 0), 7, day(-40), "before:90"),  # order in the policy file does not matter
    ],
)
def test_milestones_come_from_the_policy(milestones, every, as_of, code):
    milestone = milestones_for(DUE, as_of, milestones, every)
    assert (milestone.code if milestone else None) == code


def test_the_overdue_interval_must_be_positive():
    with pytest.raises(ValueError):
        milestones_for(DUE, DUE, (0,), 0)


def item(subject_id: str = "kent-police", due_on: date = DUE, kind: str = "apd_review") -> DueItem:
    return DueItem(kind, "organisation", subject_id, f"{subject_id}: review", due_on, (subject_id,))


def run_days(days: list[date], items: list[DueItem], runs_per_day: int = 1) -> list[tuple[date, str]]:
    """Sweep on each of ``days`` (several times each), claiming as the real sweep does."""
    claimed: set = set()
    sent = []
    for as_of in days:
        for _ in range(runs_per_day):
            for planned in plan(items, as_of, frozenset(claimed)):
                claimed.add(planned.claim_key)
                sent.append((as_of, planned.milestone.code))
    return sent


def test_daily_sweeps_send_each_milestone_exactly_once():
    every_day = [day(n) for n in range(-120, 30)]
    sent = run_days(every_day, [item()], runs_per_day=3)
    assert sent == [(day(-90), "before:90"), (day(-30), "before:30"), (day(-7), "before:7"), (day(0), "before:0"),
                    (day(7), "overdue:1"), (day(14), "overdue:2"), (day(21), "overdue:3"), (day(28), "overdue:4")]


@pytest.mark.parametrize(
    ("last_run", "back_on", "expected"),
    [
        (day(-31), day(-6), [(day(-6), "before:7")]),  # missed 30 and 7: only 7, the latest
        (day(-12), day(1), [(day(1), "before:0")]),  # ten days down across 7 and the due day
        (day(-3), day(22), [(day(22), "overdue:3")]),  # missed the due day and two overdue reminders
        (day(-95), day(-85), [(day(-85), "before:90")]),
    ],
)
def test_after_downtime_only_the_latest_missed_milestone_goes_out(last_run, back_on, expected):
    days = [d for d in (day(n) for n in range(-120, 30)) if d <= last_run or d >= back_on]
    sent = run_days(days, [item()])
    after = [entry for entry in sent if entry[0] >= back_on]
    assert after[: len(expected)] == expected
    assert all(code != expected[0][1] for when, code in sent if when < back_on)


def test_an_item_listed_twice_is_planned_once_and_plans_sort_by_due_date():
    later, sooner = item("kent-cc", day(10)), item("kent-police", day(5))
    planned = plan([later, sooner, later], day(5))
    assert [p.item.subject_id for p in planned] == ["kent-police", "kent-cc"]


def test_a_new_due_date_starts_a_new_series():
    sent = run_days([day(-30)], [item()]) + run_days([day(-30)], [item(due_on=day(365))])
    assert sent == [(day(-30), "before:30")]  # the later due date has no milestone yet
    assert plan([item(due_on=day(30))], day(0), frozenset({("apd_review", "organisation", "kent-police", DUE,
                                                              "before:30")}))[0].milestone.code == "before:30"


# --- recipients ---------------------------------------------------------------------------------

DANA = Person(1, "dpo@kent-police.example", "Dana")
DEVI = Person(2, "dpo@dartford.example", "Devi")
CHRIS = Person(3, "coordinator@dartford.example", "Chris")
DIRECTORY = Directory(
    dpo_users={"kent-police": [DANA], "dartford-bc": [DEVI]},
    dpo_emails={"kent-police": "DPO@kent-police.example", "victim-support": "dpo@victim-support.example",
                "dartford-bc": "ig@dartford.example"},
    coordinators=[CHRIS],
    chair_organisation="dartford-bc",
)


@pytest.mark.parametrize(
    ("organisations", "roles", "as_of", "users", "emails", "escalated"),
    [
        (("kent-police",), ("dpo", "coordinator"), day(-30), [1, 3],
         ["dpo@kent-police.example", "coordinator@dartford.example"], False),  # register and user address dedupe
        (("victim-support",), ("dpo", "coordinator"), day(-7), [3],
         ["dpo@victim-support.example", "coordinator@dartford.example"], False),
        (("kent-police",), ("coordinator",), day(-7), [3], ["coordinator@dartford.example"], False),
        # Overdue: the chair's organisation's DPO is told too.
        (("kent-police",), ("dpo", "coordinator"), day(7), [1, 2, 3],
         ["dpo@kent-police.example", "ig@dartford.example", "dpo@dartford.example", "coordinator@dartford.example"],
         True),
        (("kent-police", "victim-support"), ("dpo",), day(0), [1],
         ["dpo@kent-police.example", "dpo@victim-support.example"], False),
    ],
)
def test_recipients(organisations, roles, as_of, users, emails, escalated):
    due_item = DueItem("protocol_review", "protocol_version", "p:v1", "Review", DUE, organisations, roles)
    recipients = recipients_for(due_item, milestones_for(DUE, as_of), DIRECTORY)
    assert sorted(p.user_id for p in recipients.users) == users
    assert sorted(e.lower() for e in recipients.emails) == sorted(set(emails))
    assert recipients.escalated is escalated


def test_no_chair_means_no_escalation():
    recipients = recipients_for(item(), milestones_for(DUE, day(30)), Directory(dpo_users={"kent-police": [DANA]}))
    assert recipients.escalated is False and [p.user_id for p in recipients.users] == [1]


@pytest.mark.parametrize(
    ("code", "text"),
    [("before:90", "90 days before"), ("before:1", "1 day before"), ("before:0", "on the due day"),
     ("overdue:1", "overdue (1st reminder)"), ("overdue:2", "overdue (2nd reminder)"),
     ("overdue:3", "overdue (3rd reminder)"), ("overdue:11", "overdue (11th reminder)"),
     ("overdue:22", "overdue (22nd reminder)")],
)
def test_describe_milestone(code, text):
    assert describe_milestone(code) == text


@pytest.mark.parametrize(("due_on", "expected"), [(day(-1), "overdue"), (day(0), "due_today"), (day(30), "due_soon"),
                                                  (day(31), "upcoming")])
def test_urgency(due_on, expected):
    assert urgency(due_on, DUE) == expected


# --- the calendar feed ----------------------------------------------------------------------------


def test_the_feed_is_rfc5545_with_stable_uids():
    items = [item("kent-police"), DueItem("protocol_review", "protocol_version", "vcs-safeguarding:v2",
                                          "Review the protocol: safeguarding, exploitation; and a long title " * 3,
                                          day(40), ("kent-police", "dartford-bc"))]
    now = datetime(2027, 1, 1, 9, 30, tzinfo=timezone.utc)
    body = render_feed(items, now=now, calendar_name="Accord: what is due")
    lines = body.split(b"\r\n")
    assert lines[0] == b"BEGIN:VCALENDAR" and lines[-2] == b"END:VCALENDAR" and lines[-1] == b""
    assert all(len(line) <= 75 for line in lines), "content lines are folded at 75 octets"
    assert b"\n" not in body.replace(b"\r\n", b"")
    calendar = icalendar.Calendar.from_ical(body)
    events = calendar.walk("VEVENT")
    assert [e.decoded("dtstart") for e in events] == [DUE, day(40)]
    assert [e.decoded("dtend") for e in events] == [day(1), day(41)]
    assert str(events[1]["summary"]) == items[1].title
    assert str(calendar["version"]) == "2.0" and calendar["prodid"]
    assert events[0]["uid"] == event_uid(items[0]) == "apd_review.organisation.kent-police.2027-03-01@accord"
    again = render_feed(items, now=now + timedelta(hours=5), calendar_name="x")
    assert [e["uid"] for e in icalendar.Calendar.from_ical(again).walk("VEVENT")] == [e["uid"] for e in events]
