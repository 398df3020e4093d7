"""Reminders end to end, on SQLite and PostgreSQL, against a real SMTP server, with travelled time.

The jobs run exactly as the scheduler runs them (``app.reminders.jobs``: their own app context
and transaction, the clock read through ``app.clock``), while time-machine moves the clock.
"""
from __future__ import annotations

import re
import shutil
import threading
from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta
from pathlib import Path

import icalendar
import pytest
import time_machine
from sqlalchemy import event, func, select, update
from sqlalchemy.exc import IntegrityError

from app.audit.models import AuditEvent
from app.auth import service as auth_service
from app.clock import LONDON, as_utc
from app.protocols import service as protocols
from app.registry import service as registry
from app.decisions import service as decisions
from app.decisions.models import Exchange
from app.registry.demo import demo_pending_signoffs
from app.reminders import bulk, jobs, outbox, service
from app.reminders.models import (CalendarFeedToken, Notification, OutboxMessage, ReminderClaim,
                                  ReminderSweepAudience)
from tests.mailbox import Mailbox
from tests.transfers_support import POLICE_OFFICER, record_allowed_exchange, send

TODAY = date.today()
#: Every test item falls due on this day, far enough ahead for its 90-day milestone.
DUE = TODAY + timedelta(days=100)
ALL_MILESTONES = {"before:90": -90, "before:30": -30, "before:7": -7, "before:0": 0,
                  "overdue:1": 7, "overdue:2": 14, "overdue:3": 21}
PARTNER = "testing-trust"
#: Kent Police to Kent County Council, one-off with no statutory gateway named: a DPO must decide.
REFERRED_REQUEST = {
    "from_org": "kent-police", "to_org": "kent-cc", "purpose": "safeguarding_children",
    "data_categories": ["identity"], "subject_types": ["child"], "transfer_method": "accord_transfer",
    "lawful_basis": "e", "one_off": True, "retention_months": 6,
}
#: To a non-signatory, allowed only because a life is at risk: a DPO reviews it afterwards.
EMERGENCY_REQUEST = {**REFERRED_REQUEST, "to_org": "bluewater", "purpose": "crime_prevention",
                     "subject_types": ["offender"],
                     "emergency": {"category": "risk_to_life", "justification": "A threat to kill a shop worker today"}}


def at(day: date, hour: int = 9):
    """Travel to ``hour`` o'clock in London on ``day``; the clock stands still there."""
    return time_machine.travel(datetime.combine(day, time(hour), tzinfo=LONDON), tick=False)


def run_jobs(app, session, day: date, sweeps: int = 1, hour: int = 9) -> None:
    """What the scheduler does on ``day``: sweep (``sweeps`` times: reruns) and deliver."""
    session.rollback()  # the test's own transaction must not hold SQLite's write lock
    with at(day, hour):
        for _ in range(sweeps):
            jobs.sweep_reminders(app)
        jobs.deliver_outbox(app)
    session.rollback()


@pytest.fixture
def mailbox(app):
    box = Mailbox().start()
    box.configure(app)
    yield box
    box.stop()


def add_partner(session, *, apd_review_on=None, ico_expires_on=None, signature_expires_on=None,
                with_dpo_user=True):
    organisation = registry.create_organisation(session, "test", {
        "code": PARTNER, "name": "Testing Trust", "kind": "voluntary", "is_public_authority": False,
        "dpo_name": "Data Protection Officer", "dpo_email": "dpo@testing-trust.example",
        "ico_registration_number": "Z0000001", "ico_registration_expires_on": ico_expires_on,
        "apd_paragraphs": [18] if apd_review_on else [], "apd_review_on": apd_review_on,
    })
    signature = None
    if signature_expires_on:
        signature = registry.record_signature(session, "test", organisation, {
            "kmisa_version": "2024", "signed_on": TODAY - timedelta(days=10), "signed_by_name": "Chief Executive",
            "signed_by_role": "chief_officer", "expires_on": signature_expires_on})
    if with_dpo_user:
        auth_service.create_user(session, "test", email="tess@testing-trust.example", name="Tess DPO",
                                 organisation_code=PARTNER, roles=["dpo"], password="long-enough-password")
    session.commit()
    return organisation, signature


def add_protocol(app, session, tmp_path: Path, review_on: date, dpia_review_on: date) -> str:
    """Load a protocol version whose review and DPIA review fall due on the given days, and sign it off."""
    root = tmp_path / "policies"
    shutil.copytree(app.config["POLICIES_DIR"], root)
    source = (root / "protocols/csp-board/csp-strategic-assessment-v1.yaml").read_text()
    source = source.replace("code: csp-strategic-assessment", "code: reminder-test")
    source = source.replace("title: Dartford CSP strategic assessment", "title: Reminder test")
    source = re.sub(r"^review_on: .*$", f"review_on: {review_on.isoformat()}", source, flags=re.M)
    source = re.sub(r"^  review_on: .*$", f"  review_on: {dpia_review_on.isoformat()}", source, flags=re.M)
    (root / "protocols/csp-board/reminder-test-v1.yaml").write_text(source)
    report = protocols.load_policies(session, root, actor="test")
    assert report.added == ["reminder-test v1"]
    protocols.record_demo_sign_offs(session, demo_pending_signoffs(), now=datetime.now(LONDON))
    session.commit()
    return "reminder-test:v1"


def claims(session, **where) -> list[ReminderClaim]:
    query = select(ReminderClaim).order_by(ReminderClaim.id)
    for name, value in where.items():
        query = query.where(getattr(ReminderClaim, name) == value)
    return list(session.scalars(query))


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def mailed(received) -> dict[int, list[str]]:
    """Claim id -> every address an e-mail listing it went to (a digest lists several claims)."""
    per_claim = defaultdict(list)
    for r in received:
        for claim_id in r.claim_ids:
            per_claim[claim_id].extend(r.recipients)
    return per_claim


def told(session, user) -> list[int]:
    """The claims ``user`` is shown in the app, acknowledged or not, each once."""
    lists = service.list_notifications(session, user, TODAY, per_page=10_000, listed=10_000)
    return sorted(n.id for n in lists.active + lists.snoozed + lists.acknowledged)


# --- every kind, every milestone, exactly once ------------------------------------------------------


def sweep_around_every_milestone(app, session) -> None:
    """Every milestone day of DUE, the day before and the day after, each swept twice (a rerun)."""
    days = sorted({DUE + timedelta(days=offset + delta) for offset in ALL_MILESTONES.values() for delta in (-1, 0, 1)})
    for day in days:
        run_jobs(app, session, day, sweeps=2)


def claimed_once_at_every_milestone(session, subjects: set[tuple[str, str, str]]) -> list[ReminderClaim]:
    """The claims about ``subjects``, having checked each was claimed once at every milestone of
    DUE, on the day that milestone was reached."""
    ours = [c for c in claims(session) if (c.kind, c.subject_type, c.subject_id) in subjects]
    by_subject = defaultdict(list)
    for claim in ours:
        by_subject[(claim.kind, claim.subject_type, claim.subject_id)].append(claim)
    assert set(by_subject) == subjects
    for subject, made in by_subject.items():
        assert sorted(c.milestone for c in made) == sorted(ALL_MILESTONES), subject
        for claim in made:
            assert claim.as_of == DUE + timedelta(days=ALL_MILESTONES[claim.milestone]), (subject, claim.milestone)
            assert claim.due_on == DUE
    return ours


def test_every_kind_goes_out_at_each_milestone_exactly_once(app, session, demo, mailbox, tmp_path):
    _, signature = add_partner(session, apd_review_on=DUE, ico_expires_on=DUE, signature_expires_on=DUE)
    protocol = add_protocol(app, session, tmp_path, review_on=DUE, dpia_review_on=DUE)
    # A new K-MISA version: Neighbourhood Watch, which only signed the 2013 version, must sign it by DUE.
    registry.sync_kmisa_versions(session, [("2027", DUE, True)], actor="test")
    session.commit()
    subjects = {
        ("signature_renewal", "signature", str(signature.id)),
        ("kmisa_resign", "organisation", "dartford-nhw"),
        ("apd_review", "organisation", PARTNER),
        ("ico_registration", "organisation", PARTNER),
        ("protocol_review", "protocol_version", protocol),
        ("dpia_review", "protocol_version", protocol),
    }

    sweep_around_every_milestone(app, session)
    ours = claimed_once_at_every_milestone(session, subjects)
    assert all(claim.escalated is claim.milestone.startswith("overdue") for claim in ours)

    # Every queued e-mail reached the SMTP server exactly once; nothing is left behind.
    messages = list(session.scalars(select(OutboxMessage)))
    assert messages and all(m.status == "sent" and m.attempts == 1 for m in messages)
    received = mailbox.received
    assert len(received) == len(messages)
    assert len({r.message["Message-ID"] for r in received}) == len(received)
    per_claim = mailed(received)
    for claim in ours:
        addresses = per_claim[claim.id]
        assert len(addresses) == len(set(addresses)), "nobody gets the same reminder twice"
        assert "coordinator@dartford.example" in addresses
        # Overdue reminders are escalated to the chair's organisation (Dartford Borough Council leads the board).
        assert ("dpo@dartford.example" in addresses) is (claim.escalated or claim.kind.startswith(("protocol", "dpia")))
    partner_claims = [c for c in ours if c.subject_id in (PARTNER, str(signature.id))]
    assert all("dpo@testing-trust.example" in per_claim[c.id] for c in partner_claims)
    # One e-mail per address per sweep: the coordinator hears of the six items in one digest a day.
    by_day = defaultdict(set)
    for claim in ours:
        by_day[claim.as_of].add(claim.id)
    to_coordinator = [r for r in received if "coordinator@dartford.example" in r.recipients
                      and set(r.claim_ids) & {c.id for c in ours}]
    assert len(to_coordinator) == len(by_day) == len(ALL_MILESTONES)
    assert all(any(day <= set(r.claim_ids) for r in to_coordinator) for day in by_day.values())
    digest = to_coordinator[0]
    assert digest.message["Subject"].startswith("Accord reminders: ")
    body = digest.message.get_content()
    assert "Testing Trust: renew the K-MISA signature" in body and "Review the protocol Reminder test" in body
    # An address told of one reminder gets that reminder's own subject, not a digest's. (Which
    # addresses hear of one reminder on a given day depends on the demo's fixed protocol dates and so
    # on today's date: any single reminder will do, of each kind.)
    subjects_seen = {r.message["Subject"] for r in received if len(r.claim_ids) == 1}
    assert subjects_seen and all(s.startswith(("Reminder: ", "Overdue: ")) for s in subjects_seen)
    assert any(s.startswith("Overdue: ") for s in subjects_seen)
    assert any(re.match(r"Reminder: .* \(due in \d+ days\)$", s) for s in subjects_seen), subjects_seen
    # Each milestone's wording reaches the people told of it, in a digest or on its own.
    bodies = [r.message.get_content() for r in received]
    assert all(any(f"due in {-offset} days" in body for body in bodies)
               for offset in ALL_MILESTONES.values() if offset < 0)

    # In-app notifications: each reminder shown once to each user of its audience.
    tess = auth_service.find_user_by_email(session, "tess@testing-trust.example")
    assert told(session, tess) == sorted(c.id for c in partner_claims)
    # Every sweep that claimed something left one audit event.
    assert session.scalar(select(func.count()).select_from(AuditEvent)
                          .where(AuditEvent.action == "reminders.sent")) >= len(ALL_MILESTONES)


def test_emergency_reviews_referrals_and_retention_deadlines_go_out_at_each_milestone_exactly_once(
        app, session, demo, mailbox):
    officer = auth_service.find_user_by_email(session, POLICE_OFFICER)
    emergency = decisions.record(session, officer, EMERGENCY_REQUEST, now=datetime.now(LONDON))
    referral = decisions.record(session, officer, REFERRED_REQUEST, now=datetime.now(LONDON))
    assert (emergency.outcome, referral.outcome) == ("allow_emergency", "refer")
    emergency.emergency_review.due_on = DUE
    waiting = protocols.stored_bundle(session).kmisa.referral_waiting_days
    referral.requested_at = datetime.combine(DUE - timedelta(days=waiting), time(15), tzinfo=LONDON)
    session.commit()
    transfer = send(app, session, POLICE_OFFICER, record_allowed_exchange(session, POLICE_OFFICER, "dartford-bc"),
                    b"retained")
    transfer.retention_until = datetime.combine(DUE, time(12), tzinfo=LONDON)
    session.commit()
    # Who must hear of each: the sender's DPO reviews an emergency; either party's DPO may decide
    # a referral; the recipient's DPO destroys copies of a transfer.
    subjects = {
        ("emergency_review", "exchange", str(emergency.id)): "dpo@kent-police.example",
        ("referral_waiting", "exchange", str(referral.id)): "dpo@kent-police.example",
        ("retention_deadline", "transfer", transfer.id): "dpo@dartford.example",
    }

    sweep_around_every_milestone(app, session)
    ours = claimed_once_at_every_milestone(session, set(subjects))
    per_claim = mailed(mailbox.received)
    for claim in ours:
        addresses = per_claim[claim.id]
        assert len(addresses) == len(set(addresses)), "nobody gets the same reminder twice"
        assert subjects[(claim.kind, claim.subject_type, claim.subject_id)] in addresses, claim.milestone
    referral_mail = {a for c in ours if c.kind == "referral_waiting" for a in per_claim[c.id]}
    assert "dpo@kent-cc.example" in referral_mail

    # Reviewing the emergency sharing stops its reminders.
    session.rollback()
    dpo = auth_service.find_user_by_email(session, "dpo@kent-police.example")
    decisions.review_emergency(session, dpo, session.get(Exchange, emergency.id), conclusion="justified",
                               notes="A threat to life that day.", now=datetime.now(LONDON))
    session.commit()
    later = DUE + timedelta(days=28)
    run_jobs(app, session, later)
    assert [c.as_of for c in claims(session, kind="emergency_review")].count(later) == 0
    assert [c.as_of for c in claims(session, kind="referral_waiting")].count(later) == 1


def test_a_milestone_claimed_already_is_refused_with_all_its_sweep_would_send(app, session, demo):
    """Each claim names its audience; each address of the audiences of the claims a sweep made gets
    one digest listing them. A claim already made is refused by the unique constraint, and the
    whole sweep with it: nothing of it is written, so nothing is sent twice."""
    coordinator = auth_service.find_user_by_email(session, "coordinator@dartford.example")
    now = datetime.now(LONDON)
    audiences = [bulk.Audience(("a@one.example",), (coordinator.id,)),
                 bulk.Audience(("b@two.example", "c@two.example"), ())]

    def planned(subject_id: str, audience: int) -> bulk.PlannedClaim:
        return bulk.PlannedClaim("apd_review", "bulk-test", subject_id, DUE, "before:90", f"{subject_id}: review",
                                 False, audience)

    first = bulk.claim_and_fan_out(session, [planned("first", 0)], audiences, as_of=TODAY, now=now)
    assert (first.claimed, first.messages, first.notifications) == (1, 1, 1)
    written = {model: session.scalar(select(func.count()).select_from(model))
               for model in (ReminderClaim, ReminderSweepAudience, OutboxMessage)}
    with pytest.raises(IntegrityError):
        with session.begin_nested():
            bulk.claim_and_fan_out(session, [planned("second", 1), planned("first", 1)], audiences, as_of=TODAY,
                                   now=now)
    assert {model: session.scalar(select(func.count()).select_from(model)) for model in written} == written
    second = bulk.claim_and_fan_out(session, [planned("second", 1), planned("third", 0)],
                                    audiences, as_of=TODAY, now=now)
    assert (second.claimed, second.messages, second.notifications, second.kinds) == (2, 3, 1, {"apd_review": 2})
    made = {c.subject_id: c for c in claims(session, subject_type="bulk-test")}
    assert list(made) == ["first", "second", "third"]
    assert (second.first_claim_id, second.last_claim_id) == (made["second"].id, made["third"].id)
    assert made["first"].audience_id == made["third"].audience_id != made["second"].audience_id
    assert [m.email for m in made["second"].audience.members] == ["b@two.example", "c@two.example"]
    digests = list(session.scalars(select(OutboxMessage).where(OutboxMessage.sweep_id.in_(
        [first.sweep_id, second.sweep_id])).order_by(OutboxMessage.id)))
    outbox.load_digests(session, digests)
    sent = {(m.sweep_id, m.to_address, m.status, tuple(c.subject_id for c in m.digest.claims)) for m in digests}
    assert sent == {(first.sweep_id, "a@one.example", "pending", ("first",)),
                    (second.sweep_id, "a@one.example", "pending", ("third",)),
                    (second.sweep_id, "b@two.example", "pending", ("second",)),
                    (second.sweep_id, "c@two.example", "pending", ("second",))}
    assert told(session, coordinator)[-2:] == [made["first"].id, made["third"].id]
    # The same audience again (its members in the same order) is found, not written twice.
    third = bulk.claim_and_fan_out(session, [planned("fourth", 0)], [bulk.Audience(("a@one.example",),
                                                                                   (coordinator.id,))],
                                   as_of=TODAY, now=now)
    assert claims(session, subject_id="fourth")[0].audience_id == made["first"].audience_id
    assert third.messages == 1
    session.rollback()


def test_a_claim_names_an_audience_its_own_sweep_tells(app, session, demo):
    """One foreign key holds a claim to its sweep and its audience together: a sweep records the
    audiences it tells, and a claim naming one that sweep never told is refused."""
    now = datetime.now(LONDON)
    audiences = [bulk.Audience(("a@one.example",), ()), bulk.Audience(("b@two.example",), ())]
    made = [bulk.claim_and_fan_out(session, [bulk.PlannedClaim("apd_review", "pair-test", subject, DUE, "before:90",
                                                               subject, False, 0)], [audience], as_of=TODAY, now=now)
            for subject, audience in (("one", audiences[0]), ("two", audiences[1]))]
    told_by = {sweep: set(session.scalars(select(ReminderSweepAudience.audience_id)
                                          .where(ReminderSweepAudience.sweep_id == sweep)))
               for sweep in (made[0].sweep_id, made[1].sweep_id)}
    one, two = (claims(session, subject_id=subject)[0] for subject in ("one", "two"))
    assert told_by == {made[0].sweep_id: {one.audience_id}, made[1].sweep_id: {two.audience_id}}
    session.commit()
    with pytest.raises(IntegrityError):
        with session.begin_nested():
            session.execute(update(ReminderClaim).where(ReminderClaim.id == one.id)
                            .values(audience_id=two.audience_id))
    with pytest.raises(IntegrityError):
        with session.begin_nested():
            session.execute(update(ReminderClaim).where(ReminderClaim.id == one.id).values(audience_id=None))
    session.rollback()
    assert claims(session, subject_id="one")[0].audience_id == one.audience_id


def test_after_ten_days_of_downtime_only_the_latest_missed_milestone_goes_out(app, session, demo, mailbox):
    add_partner(session, apd_review_on=DUE, with_dpo_user=False)
    run_jobs(app, session, DUE - timedelta(days=30))
    # The scheduler is down from DUE-11 to DUE+1: the 7-day and due-day milestones pass unseen.
    run_jobs(app, session, DUE - timedelta(days=12))
    sent_before = len(mailbox.received)
    run_jobs(app, session, DUE + timedelta(days=1), sweeps=3)
    made = claims(session, kind="apd_review", subject_id=PARTNER)
    assert [c.milestone for c in made] == ["before:30", "before:0"]
    latest = made[-1]
    new = [r for r in mailbox.received[sent_before:] if latest.id in r.claim_ids]
    assert sorted(a for r in new for a in r.recipients) == ["coordinator@dartford.example", "dpo@testing-trust.example"]
    assert [c for r in mailbox.received for c in r.claim_ids].count(made[0].id) == 2


def test_recording_a_renewal_stops_that_signatures_reminders(app, session, demo, mailbox):
    organisation, signature = add_partner(session, signature_expires_on=DUE, with_dpo_user=False)
    run_jobs(app, session, DUE - timedelta(days=30))
    assert [c.milestone for c in claims(session, kind="signature_renewal", subject_id=str(signature.id))] == ["before:30"]

    renewed_on = DUE - timedelta(days=25)
    with at(renewed_on):
        organisation = registry.get_organisation(session, PARTNER)
        renewal = registry.record_signature(session, "test", organisation, {
            "kmisa_version": "2024", "signed_on": renewed_on, "signed_by_name": "Chief Executive",
            "signed_by_role": "chief_officer", "expires_on": renewed_on + timedelta(days=3 * 365)})
        session.commit()
        renewal_id = renewal.id
    for offset in (-7, 0, 7, 14, 21):
        run_jobs(app, session, DUE + timedelta(days=offset))
    assert [c.milestone for c in claims(session, kind="signature_renewal", subject_id=str(signature.id))] == ["before:30"]
    assert claims(session, kind="signature_renewal", subject_id=str(renewal_id)) == []


def test_with_the_smtp_server_down_mail_waits_and_all_of_it_goes_out_when_it_is_back(app, session, demo, mailbox):
    add_partner(session, apd_review_on=DUE, ico_expires_on=DUE, with_dpo_user=False)
    mailbox.stop()
    day = DUE - timedelta(days=7)
    run_jobs(app, session, day)
    queued = list(session.scalars(select(OutboxMessage)))
    assert queued and all(m.status == "pending" and m.attempts == 1 for m in queued)
    assert {m.last_error for m in queued} == {"ConnectionRefusedError"}
    first_try = datetime.combine(day, time(9), tzinfo=LONDON)
    assert {as_utc(m.next_attempt_at) for m in queued} == {first_try + timedelta(minutes=1)}  # the backoff

    session.rollback()
    with at(day, 9):  # a second delivery at the same moment waits for the backoff
        assert jobs.deliver_outbox(app).attempted == 0
    with time_machine.travel(first_try + timedelta(minutes=1), tick=False):
        report = jobs.deliver_outbox(app)
    assert report.retrying == len(queued) and report.sent == 0
    session.rollback()
    assert {m.attempts for m in session.scalars(select(OutboxMessage))} == {2}
    session.rollback()

    mailbox.start()
    with time_machine.travel(first_try + timedelta(minutes=2), tick=False):
        assert jobs.deliver_outbox(app).attempted == 0  # the second retry is due 2 minutes after the second try
    with time_machine.travel(first_try + timedelta(minutes=3), tick=False):
        report = jobs.deliver_outbox(app)
    session.rollback()
    assert report.sent == len(queued)
    rows = list(session.scalars(select(OutboxMessage)))
    assert all(m.status == "sent" and m.attempts == 3 and m.last_error is None for m in rows)
    assert sorted(r.message["Message-ID"] for r in mailbox.received) == sorted(m.message_id for m in rows)
    session.rollback()
    with time_machine.travel(first_try + timedelta(hours=2), tick=False):
        assert jobs.deliver_outbox(app).attempted == 0  # nothing is sent twice


def test_smtp_login_failures_are_retried_and_never_store_the_password(app, session, demo, auth, client):
    box = Mailbox(login="accord", password="the-right-password").start()
    try:
        box.configure(app)
        app.config["MAIL_PASSWORD"] = "wrong-password-Zq9"
        add_partner(session, apd_review_on=DUE, with_dpo_user=False)
        run_jobs(app, session, DUE)
        rows = list(session.scalars(select(OutboxMessage)))
        assert rows and all(m.status == "pending" and m.attempts == 1 for m in rows)
        assert {m.last_error for m in rows} == {"SMTPAuthenticationError 535"}
        assert box.received == []
        session.rollback()
        app.config["MAIL_PASSWORD"] = "the-right-password"
        with time_machine.travel(datetime.combine(DUE, time(10), tzinfo=LONDON), tick=False):
            assert jobs.deliver_outbox(app).sent == len(rows)
        assert len(box.received) == len(rows)
        auth.sign_in("coordinator@dartford.example")
        assert "Zq9" not in client.get("/reminders/outbox").get_data(as_text=True)
    finally:
        box.stop()


def test_two_sweeps_at_once_claim_each_milestone_once_and_two_deliverers_send_each_message_once(
        app, session, demo, mailbox):
    add_partner(session, apd_review_on=DUE, ico_expires_on=DUE, signature_expires_on=DUE)
    session.rollback()
    errors = []
    barrier = threading.Barrier(4)

    def work(job):
        try:
            barrier.wait()
            with at(DUE - timedelta(days=7)):
                job(app)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(jobs.sweep_reminders,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    made = claims(session)
    keys = [(c.kind, c.subject_type, c.subject_id, c.due_on, c.milestone) for c in made]
    assert len(keys) == len(set(keys)) and any(c.subject_id == PARTNER for c in made)
    digests = outbox.load_digests(session, list(session.scalars(select(OutboxMessage))))
    per_claim = Counter((c.id, m.to_address) for m in digests for c in m.digest.claims)
    assert per_claim and set(per_claim.values()) == {1}
    session.rollback()

    barrier = threading.Barrier(4)
    threads = [threading.Thread(target=work, args=(jobs.deliver_outbox,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    received = [r.message["Message-ID"] for r in mailbox.received]
    assert len(received) == len(digests) == len(set(received))
    assert Counter((c, a) for r in mailbox.received for c in r.claim_ids for a in r.recipients) == per_claim


def test_the_sweep_uses_the_same_number_of_queries_however_much_is_due(app, session, demo):
    def queries_for_sweep(as_of: date) -> tuple[int, int]:
        session.rollback()
        statements = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(session.get_bind(), "before_cursor_execute", listener)
        try:
            result = service.sweep(session, as_of=as_of, now=datetime.now(LONDON))
        finally:
            event.remove(session.get_bind(), "before_cursor_execute", listener)
        session.rollback()
        return len(statements), result.claimed

    few, claimed_few = queries_for_sweep(TODAY)
    for n in range(60):
        registry.create_organisation(session, "test", {
            "code": f"load-{n}", "name": f"Load {n}", "kind": "voluntary", "is_public_authority": False,
            "dpo_email": f"dpo@load-{n}.example", "apd_review_on": TODAY + timedelta(days=n % 40),
            "ico_registration_expires_on": TODAY - timedelta(days=n)})
    session.commit()
    many, claimed_many = queries_for_sweep(TODAY)
    assert claimed_many >= claimed_few + 120
    assert many == few


# --- the command ------------------------------------------------------------------------------------


def test_sweep_command_dry_run_writes_nothing_and_the_real_run_sends_once(runner, session, demo):
    add_partner(session, apd_review_on=DUE, with_dpo_user=False)
    session.rollback()
    before = {model: count(session, model) for model in (ReminderClaim, OutboxMessage, Notification, AuditEvent)}
    as_of = (DUE - timedelta(days=30)).isoformat()
    session.rollback()
    dry = runner.invoke(args=["reminders", "sweep", "--as-of", as_of, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "Testing Trust: review the appropriate policy document" in dry.output
    assert "before:30" in dry.output and "dpo@testing-trust.example" in dry.output
    assert "nothing was written" in dry.output
    assert {model: count(session, model) for model in before} == before
    session.rollback()

    real = runner.invoke(args=["reminders", "sweep", "--as-of", as_of])
    assert real.exit_code == 0, real.output
    claimed = int(re.search(r"\((\d+) claimed", real.output).group(1))
    assert claimed >= 1 and count(session, ReminderClaim) == claimed
    session.rollback()
    again = runner.invoke(args=["reminders", "sweep", "--as-of", as_of])
    assert "0 queued (0 claimed" in again.output
    bad = runner.invoke(args=["reminders", "sweep", "--as-of", "22/11/2026"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output


def test_outbox_deliver_command_without_a_server_keeps_the_mail(runner, session, demo):
    assert runner.invoke(args=["reminders", "sweep"]).exit_code == 0
    session.rollback()
    waiting = count(session, OutboxMessage)
    session.rollback()
    result = runner.invoke(args=["outbox", "deliver"])
    assert result.exit_code == 0 and "stays in the outbox" in result.output
    assert session.scalar(select(func.count()).select_from(OutboxMessage)
                          .where(OutboxMessage.status == "pending")) == waiting > 0


def test_outbox_deliver_command_sends(runner, session, demo, mailbox, app):
    assert runner.invoke(args=["reminders", "sweep"]).exit_code == 0
    session.rollback()
    waiting = count(session, OutboxMessage)
    session.rollback()
    result = runner.invoke(args=["outbox", "deliver"])
    assert result.exit_code == 0 and f"{waiting} sent" in result.output
    assert len(mailbox.received) == waiting


# --- the pages -------------------------------------------------------------------------------------


def test_notifications_can_be_acknowledged_and_snoozed(app, session, demo, auth, client):
    run_jobs(app, session, TODAY)
    auth.sign_in("coordinator@dartford.example")
    coordinator = auth_service.find_user_by_email(session, "coordinator@dartford.example")
    mine = told(session, coordinator)
    session.rollback()
    assert len(mine) >= 3 and count(session, Notification) == 0  # a row only once a user acts
    home = client.get("/home").get_data(as_text=True)
    assert re.search(r"Notifications</a></h2>\s*<p[^>]*>" + str(len(mine)) + "<", home)
    page = client.get("/reminders/notifications").get_data(as_text=True)
    assert f"{len(mine)} to deal with" in page

    first, second = mine[0], mine[1]
    response = client.post(f"/reminders/notifications/{first}/acknowledge")
    assert response.status_code == 302
    page = client.get("/reminders/notifications").get_data(as_text=True)
    assert f"{len(mine) - 1} to deal with" in page and "Acknowledged" in page

    form = client.get(f"/reminders/notifications/{second}/snooze")
    assert form.status_code == 200
    past = client.post(f"/reminders/notifications/{second}/snooze",
                       data={"until": [str(TODAY.day), str(TODAY.month), str(TODAY.year)]})
    assert past.status_code == 422 and b"must be in the future" in past.data
    until = TODAY + timedelta(days=3)
    snoozed = client.post(f"/reminders/notifications/{second}/snooze",
                          data={"until": [str(until.day), str(until.month), str(until.year)]})
    assert snoozed.status_code == 302
    page = client.get("/reminders/notifications").get_data(as_text=True)
    assert f"{len(mine) - 2} to deal with" in page and "Snoozed until" in page
    session.rollback()
    assert service.active_notification_count(session, coordinator, TODAY) == len(mine) - 2
    assert service.active_notification_count(session, coordinator, until) == len(mine) - 1  # it comes back
    session.rollback()
    events = session.scalars(select(AuditEvent.action).where(AuditEvent.action.like("notification.%"))).all()
    assert sorted(events) == ["notification.acknowledged", "notification.snoozed"]

    # Someone else's notification is simply not found.
    officer = auth_service.find_user_by_email(session, "dpo@kent-police.example")
    theirs = bulk.claim_and_fan_out(
        session, [bulk.PlannedClaim("apd_review", "page-test", "theirs", DUE, "before:90", "Theirs", False, 0)],
        [bulk.Audience((), (officer.id,))], as_of=TODAY, now=datetime.now(LONDON)).first_claim_id
    session.commit()
    assert theirs in told(session, officer) and theirs not in told(session, coordinator)
    session.rollback()
    assert client.post(f"/reminders/notifications/{theirs}/acknowledge").status_code == 404
    assert client.get(f"/reminders/notifications/{theirs}/snooze").status_code == 404


def test_notifications_come_a_page_at_a_time_soonest_due_first(app, session, demo, auth, client):
    """A first sweep of a large register tells a coordinator of thousands: the page shows 50."""
    officer = auth_service.find_user_by_email(session, "dpo@kent-police.example")
    claims = [bulk.PlannedClaim("apd_review", "paging", f"item-{i:03d}", DUE + timedelta(days=i % 40), "before:90",
                                f"Paging {i:03d}", False, 0) for i in range(120)]
    bulk.claim_and_fan_out(session, claims, [bulk.Audience((), (officer.id,))], as_of=TODAY, now=datetime.now(LONDON))
    session.commit()
    expected = sorted(session.execute(select(ReminderClaim.due_on, ReminderClaim.id)
                                      .where(ReminderClaim.subject_type == "paging")).all())
    lists = service.list_notifications(session, officer, TODAY, page=3)
    assert (lists.active_total, lists.pages, len(lists.active)) == (120, 3, 20)
    assert [n.id for n in lists.active] == [claim_id for _, claim_id in expected[100:]]
    session.rollback()

    auth.sign_in("dpo@kent-police.example")
    html = client.get("/reminders/notifications").get_data(as_text=True)
    assert "120 to deal with" in html and "Showing 1 to 50 of 120, soonest due first." in html
    assert html.count("Acknowledge<span") == 50 and "?page=2" in html
    listed = re.findall(r"/reminders/notifications/(\d+)/acknowledge", html)
    assert [int(i) for i in listed] == [claim_id for _, claim_id in expected[:50]]
    last = client.get("/reminders/notifications?page=3").get_data(as_text=True)
    assert "Showing 101 to 120 of 120" in last and "?page=2" in last

    # Acknowledging on a page comes back to it; once it is empty, to the page before.
    on_last = [int(i) for i in re.findall(r"/reminders/notifications/(\d+)/acknowledge", last)]
    response = client.post(f"/reminders/notifications/{on_last[0]}/acknowledge", data={"page": "3"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/reminders/notifications?page=3")
    session.rollback()
    for claim_id in on_last[1:]:
        service.acknowledge(session, officer, claim_id, now=datetime.now(LONDON))
    session.commit()
    moved = client.get("/reminders/notifications?page=3")
    assert moved.status_code == 302 and moved.headers["Location"].endswith("/reminders/notifications?page=2")
    html = client.get("/reminders/notifications?page=2").get_data(as_text=True)
    assert "100 to deal with" in html and "The first 50 of" not in html  # all 20 acknowledged are listed
    for claim_id in [claim_id for _, claim_id in expected[:40]]:
        service.acknowledge(session, officer, claim_id, now=datetime.now(LONDON))
    session.commit()
    html = client.get("/reminders/notifications").get_data(as_text=True)
    assert "60 to deal with" in html and "The first 50 of 60." in html

    for bad in ("0", "-1", "two"):
        response = client.get(f"/reminders/notifications?page={bad}")
        assert response.status_code == 422 and b"pages are numbered from 1" in response.data


def test_what_is_due_lists_overdue_first_and_is_scoped(app, session, demo, auth, client):
    run_jobs(app, session, TODAY)
    auth.sign_in("coordinator@dartford.example")
    page = client.get("/reminders/due")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    tags = re.findall(r'<strong class="govuk-tag [^"]*">([^<]+)</strong>', html)
    assert tags and tags[0] == "Overdue"
    seen_other = False
    for tag in tags:
        if tag != "Overdue":
            seen_other = True
        assert not (seen_other and tag == "Overdue"), f"overdue after other items: {tags}"
    assert "Kent Fire and Rescue Service: renew the K-MISA signature" in html
    assert "Dartford Borough Council: renew the ICO registration" in html
    assert "escalated to the chair" in html  # the overdue items were already reminded today

    auth.sign_out()
    auth.sign_in("dpo@kent-police.example")
    html = client.get("/reminders/due").get_data(as_text=True)
    assert "Kent Fire and Rescue Service" not in html  # not Kent Police's business
    assert "Review the DPIA" in html  # Kent Police is a party to those protocols
    auth.sign_out()
    auth.sign_in("officer@kent-police.example")
    assert client.get("/reminders/due").status_code == 403
    assert client.get("/reminders/outbox").status_code == 403
    assert client.get("/reminders/notifications").status_code == 200


def test_what_is_due_comes_a_page_at_a_time_with_each_items_latest_reminder(app, session, demo, auth, client):
    from app.registry.models import Organisation

    # 150 partners whose ICO registration runs out within 90 days, soonest first by code.
    for i in range(150):
        session.add(Organisation(code=f"paging-{i:03d}", name=f"Paging partner {i:03d}", kind="voluntary",
                                 dpo_email=f"dpo@paging-{i:03d}.example", ico_registration_number=f"Z{i:07d}",
                                 ico_registration_expires_on=TODAY + timedelta(days=60 + i % 20)))
    session.commit()
    run_jobs(app, session, TODAY)
    coordinator = auth_service.find_user_by_email(session, "coordinator@dartford.example")
    everything = service.due_for(session, coordinator, TODAY, days=90)
    first, second = (service.what_is_due(session, coordinator, TODAY, page=page) for page in (1, 2))
    assert first.total == second.total == len(everything) > 150
    assert [row.item for row in first.rows + second.rows] == everything[:200]
    assert len(first.rows) == 100 and first.pages == -(-len(everything) // 100)
    for row in first.rows + second.rows:  # each item's own latest claim, in one query a page
        claims = session.scalars(select(ReminderClaim).where(
            ReminderClaim.kind == row.item.kind, ReminderClaim.subject_type == row.item.subject_type,
            ReminderClaim.subject_id == row.item.subject_id, ReminderClaim.due_on == row.item.due_on)
            .order_by(ReminderClaim.claimed_at, ReminderClaim.id)).all()
        assert row.last_reminder == (claims[-1] if claims else None)
    assert any(row.last_reminder is not None for row in second.rows)
    session.rollback()

    auth.sign_in("coordinator@dartford.example")
    html = client.get("/reminders/due").get_data(as_text=True)
    assert f"{len(everything)} items," in html and f"Showing 1 to 100 of {len(everything)}" in html
    assert html.count('<strong class="govuk-tag') == 100 and "?page=2" in html
    html = client.get("/reminders/due?page=2").get_data(as_text=True)
    assert f"Showing 101 to {min(200, len(everything))} of {len(everything)}" in html
    assert everything[100].title in html and everything[99].title not in html
    beyond = client.get("/reminders/due?page=99")
    assert beyond.status_code == 302 and beyond.headers["Location"].endswith(f"/reminders/due?page={first.pages}")
    assert client.get("/reminders/due?page=first").status_code == 422


def test_outbox_page_shows_mail_kept_when_no_server_is_configured(app, session, demo, auth, client):
    run_jobs(app, session, TODAY)
    waiting = count(session, OutboxMessage)
    session.rollback()
    auth.sign_in("coordinator@dartford.example")
    html = client.get("/reminders/outbox").get_data(as_text=True)
    assert "No SMTP server is configured" in html
    assert f"{waiting} waiting, 0 failed, 0 sent." in html


def test_failed_mail_can_be_sent_again_from_the_outbox_page(app, session, demo, auth, client):
    run_jobs(app, session, TODAY)
    first = session.scalar(select(OutboxMessage).order_by(OutboxMessage.id).limit(1))
    first.status, first.attempts, first.last_error = "failed", outbox.MAX_ATTEMPTS, "SMTPRecipientsRefused 550"
    session.commit()
    auth.sign_in("admin@dartford.example")
    assert "SMTPRecipientsRefused 550" in client.get("/reminders/outbox").get_data(as_text=True)
    assert client.post("/reminders/outbox/retry").status_code == 302
    session.rollback()
    again = session.get(OutboxMessage, first.id)
    assert (again.status, again.attempts) == ("pending", 0)


def test_the_calendar_feed_parses_and_its_address_can_be_revoked(app, session, demo, auth, client):
    auth.sign_in("coordinator@dartford.example")
    assert "no calendar address yet" in client.get("/reminders/calendar").get_data(as_text=True)
    created = client.post("/reminders/calendar")
    assert created.status_code == 200 and created.headers["Cache-Control"] == "no-store"
    url = re.search(r'<code id="feed-url"[^>]*>([^<]+)</code>', created.get_data(as_text=True)).group(1)
    path = url.replace("http://localhost", "")
    token = path.rsplit("/", 1)[1].removesuffix(".ics")
    session.rollback()
    assert token not in {t.token_hash for t in session.scalars(select(CalendarFeedToken))}
    session.rollback()
    auth.sign_out()

    feed = client.get(path)  # no session: the address is the credential
    assert feed.status_code == 200
    assert feed.headers["Content-Type"] == "text/calendar; charset=utf-8"
    calendar = icalendar.Calendar.from_ical(feed.data)
    events = {str(e["summary"]): e for e in calendar.walk("VEVENT")}
    renewal = events["Dartford Borough Council: renew the ICO registration Z5603317"]
    assert renewal.decoded("dtstart") == TODAY + timedelta(days=25)
    assert any(title.startswith("Kent Fire and Rescue Service: renew") for title in events)
    assert all(len(line) <= 75 for line in feed.data.split(b"\r\n"))

    assert client.get(path.replace(token, token[:-2] + "xx")).status_code == 404
    auth.sign_in("coordinator@dartford.example")
    assert client.post("/reminders/calendar/revoke").status_code == 302
    assert client.get(path).status_code == 404
    auth.sign_out()
    auth.sign_in("officer@dartford.example")
    assert client.post("/reminders/calendar").status_code == 403


def test_pages_need_a_signed_in_user(client, demo):
    for path in ("/reminders/due", "/reminders/notifications", "/reminders/outbox", "/reminders/calendar"):
        response = client.get(path)
        assert response.status_code == 302 and "/sign-in" in response.headers["Location"], path
