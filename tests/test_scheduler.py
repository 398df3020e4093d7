"""The scheduler: the job registry, the runner acting only while it leads, and failover between
two ``accord scheduler run`` processes on PostgreSQL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from app.registry import service as registry
from app.reminders.models import OutboxMessage, ReminderClaim
from app.scheduler.leadership import SCHEDULER_LOCK_KEY, AdvisoryLockLeadership, SoleLeadership
from app.scheduler.registry import JOBS, job
from app.scheduler.runner import SchedulerRunner
from tests.mailbox import Mailbox

ROOT = Path(__file__).resolve().parents[1]
#: The jobs these tests exercise; the registry's other jobs have their own areas' tests.
REMINDER_JOBS = (job("reminders.sweep"), job("outbox.deliver"))


def wait_for(condition, timeout: float, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def outbox_state(session) -> tuple[int, int]:
    """(messages, pending), read without keeping a transaction open."""
    try:
        total = session.scalar(select(func.count()).select_from(OutboxMessage)) or 0
        pending = session.scalar(select(func.count()).select_from(OutboxMessage)
                                 .where(OutboxMessage.status == "pending")) or 0
        return total, pending
    finally:
        session.rollback()


def claim_count(session) -> int:
    try:
        return session.scalar(select(func.count()).select_from(ReminderClaim)) or 0
    finally:
        session.rollback()


def test_every_job_has_a_fixed_id_and_safe_misfire_settings(app):
    ids = [job.id for job in JOBS]
    assert len(ids) == len(set(ids)) and {"reminders.sweep", "outbox.deliver"} <= set(ids)
    runner = SchedulerRunner(app, leadership=SoleLeadership())
    scheduled = {job.id: job for job in runner.scheduler.get_jobs()}
    assert set(scheduled) == set(ids)
    for job in scheduled.values():
        assert job.coalesce is True and job.max_instances == 1
        assert job.misfire_grace_time >= 60, "minutes, not APScheduler's default of one second"
    assert scheduled["reminders.sweep"].trigger.interval == timedelta(hours=1)
    assert scheduled["outbox.deliver"].trigger.interval == timedelta(minutes=1)
    for definition in JOBS:
        assert callable(definition.resolve())
    with pytest.raises(ValueError):
        SchedulerRunner(app, leadership=SoleLeadership(), every={"no.such.job": 1})


def test_the_runner_sweeps_and_delivers_while_it_leads(app, session, demo):
    """The in-process scheduler of ``accord serve``: on SQLite no lock, on PostgreSQL the advisory lock."""
    box = Mailbox().start()
    box.configure(app)
    runner = SchedulerRunner(app, jobs=REMINDER_JOBS, every={"reminders.sweep": 0.5, "outbox.deliver": 0.5},
                             poll_seconds=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    try:
        session.rollback()
        thread.start()
        wait_for(lambda: outbox_state(session)[0] > 0 and outbox_state(session)[1] == 0
                 and len(box.received) == outbox_state(session)[0], 30, message="the outbox to be sent")
        time.sleep(1.5)  # several more sweeps and deliveries: nothing new, nothing twice
    finally:
        stop.set()
        thread.join(timeout=30)
        box.stop()
    assert not thread.is_alive()
    total, pending = outbox_state(session)
    assert pending == 0 and len(box.received) == total
    assert len({r.message["Message-ID"] for r in box.received}) == total


def test_a_standby_does_nothing_until_the_leader_lets_go(app, session, demo, backend, database_url):
    if backend != "postgresql":
        pytest.skip("the advisory lock is PostgreSQL's; SQLite runs one scheduler")
    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    leader = psycopg.connect(url, autocommit=True)
    assert leader.execute("SELECT pg_try_advisory_lock(%s)", (SCHEDULER_LOCK_KEY,)).fetchone()[0]
    runner = SchedulerRunner(app, jobs=REMINDER_JOBS, every={"reminders.sweep": 0.3, "outbox.deliver": 0.3},
                             poll_seconds=0.2)
    assert isinstance(runner.leadership, AdvisoryLockLeadership)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    try:
        thread.start()
        time.sleep(2)
        assert runner.leading is False
        assert claim_count(session) == 0
        leader.close()  # the leader dies: its lock goes with its connection
        wait_for(lambda: runner.leading, 10, message="the standby to lead")
        wait_for(lambda: claim_count(session) > 0, 10, message="the new leader to sweep")
    finally:
        stop.set()
        thread.join(timeout=30)
        if not leader.closed:
            leader.close()
    # It let go on stopping, so another scheduler could take over at once.
    other = AdvisoryLockLeadership(database_url)
    assert other.try_acquire() and other.holds()
    other.release()


def test_scheduler_run_refuses_an_unknown_job(runner):
    result = runner.invoke(args=["scheduler", "run", "--every", "reminders.sweep=abc"])
    assert result.exit_code == 2 and "JOB=SECONDS" in result.output
    result = runner.invoke(args=["scheduler", "run", "--every", "no.such.job=5"])
    assert result.exit_code == 2 and "no such job" in result.output
    listed = runner.invoke(args=["scheduler", "jobs"])
    assert listed.exit_code == 0 and "reminders.sweep" in listed.output and "outbox.deliver" in listed.output


# --- two processes, one leader ----------------------------------------------------------------------


def _leader_pid(session) -> int | None:
    """The process id of the scheduler holding the lock, from its connection's application_name."""
    try:
        name = session.scalar(text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = :hi AND l.objid::bigint = :lo"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"hi": (SCHEDULER_LOCK_KEY >> 32) & 0xFFFFFFFF, "lo": SCHEDULER_LOCK_KEY & 0xFFFFFFFF})
    finally:
        session.rollback()
    if not name or "pid=" not in name:
        return None
    return int(name.rsplit("pid=", 1)[1])


def _add_due_partner(session, n: int, today: date) -> None:
    registry.create_organisation(session, "test", {
        "code": f"load-{n}", "name": f"Load test partner {n}", "kind": "voluntary", "is_public_authority": False,
        "dpo_email": f"dpo@load-{n}.example", "apd_review_on": today + timedelta(days=3)})
    session.commit()


@pytest.mark.slow
def test_two_scheduler_processes_send_each_message_once_and_fail_over(app, session, demo, backend, database_url,
                                                                      tmp_path):
    if backend != "postgresql":
        pytest.skip("two scheduler hosts share a PostgreSQL database; SQLite runs one")
    box = Mailbox().start()
    env = {**os.environ, "ACCORD_ENV": "test", "ACCORD_DATABASE_URL": database_url,
           "ACCORD_SMTP_HOST": box.host, "ACCORD_SMTP_PORT": str(box.port),
           "ACCORD_MAIL_FROM": "accord@dartford.example", "ACCORD_KEYRING_FILE": str(tmp_path / "keyring.json"),
           "ACCORD_AUDIT_SIGNING_KEY_FILE": str(tmp_path / "audit-signing-key.pem"),
           "ACCORD_SCHEDULER_IN_PROCESS": "0", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "flask", "--app", "app", "scheduler", "run", "--poll-seconds", "1",
               "--every", "reminders.sweep=2", "--every", "outbox.deliver=1"]
    logs = {name: (tmp_path / f"scheduler-{name}.log").open("w+") for name in ("a", "b")}
    processes: dict[str, subprocess.Popen] = {}

    def start(name: str) -> subprocess.Popen:
        processes[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=logs[name], stderr=subprocess.STDOUT)
        return processes[name]

    def log(name: str) -> str:
        return (tmp_path / f"scheduler-{name}.log").read_text()

    def all_sent() -> bool:
        total, pending = outbox_state(session)
        return total > 0 and pending == 0 and len(box.received) == total

    today = date.today()
    added = 0
    began = time.monotonic()
    try:
        first = start("a")
        wait_for(lambda: _leader_pid(session) == first.pid, 60, message="the first scheduler to lead")
        second = start("b")
        wait_for(lambda: "seeking leadership" in log("b"), 60, message="the second scheduler to start")
        # Thirty seconds of work arriving while both run: the standby must not act.
        while time.monotonic() - began < 30:
            _add_due_partner(session, added, today)
            added += 1
            time.sleep(2.5)
        wait_for(all_sent, 30, message="everything queued to be sent")
        assert _leader_pid(session) == first.pid
        assert "leading" not in log("b")

        first.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait(timeout=10)
        wait_for(lambda: _leader_pid(session) == second.pid, 60, interval=0.5, message="the standby to take over")
        takeover_seconds = time.monotonic() - killed_at
        assert takeover_seconds < 60
        # Work keeps arriving after the failover, until a minute has passed.
        while time.monotonic() - began < 60:
            _add_due_partner(session, added, today)
            added += 1
            time.sleep(2.5)
        wait_for(all_sent, 30, message="the new leader to send everything")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0, log("b")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for handle in logs.values():
            handle.close()
        box.stop()

    assert "leading" in log("a") and "leading" in log("b")
    received = box.received
    message_ids = Counter(r.message["Message-ID"] for r in received)
    assert message_ids and max(message_ids.values()) == 1, "no message was sent twice"
    rows = list(session.scalars(select(OutboxMessage)))
    assert len(rows) == len(received) and all(m.status == "sent" for m in rows)
    assert max(Counter((m.sweep_id, m.to_address) for m in rows).values()) == 1
    listed = Counter((c, r.recipients[0]) for r in received for c in r.claim_ids)
    assert listed and max(listed.values()) == 1, "no reminder reached anyone twice"
    load_claims = session.scalars(select(ReminderClaim.subject_id).where(ReminderClaim.kind == "apd_review",
                                                                          ReminderClaim.subject_id.like("load-%")))
    assert sorted(load_claims) == sorted(f"load-{n}" for n in range(added))
    assert {r.recipients[0] for r in received if "Load test partner" in r.message.get_content()} >= {
        f"dpo@load-{n}.example" for n in range(added)}
    print(f"takeover after kill -9: {takeover_seconds:.1f}s; {added} partners added; {len(received)} e-mails")
