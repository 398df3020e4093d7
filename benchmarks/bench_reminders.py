"""The reminder sweep at scale: time and SQL statements for 1,000 and 100,000 due items.

Run as ``python -m benchmarks.bench_reminders [items]``; prints JSON. Measures a migrated SQLite
file in a temporary folder and a throwaway PostgreSQL with durable commits
(``benchmarks.load.durable_postgres``), each with the Dartford demo loaded;
``ACCORD_BENCH_DATABASE_URL`` (an empty database, which it migrates and fills) measures that one
alone.

Figures per size, each with its time and its SQL statements (counted with a
``before_cursor_execute`` listener); due dates are spread over the 90 days ahead and the month
behind, as in a real register:

- ``first_sweep``: every item is at a milestone never claimed, so every one is claimed and its
  audience told: the worst case, the first sweep after a register is loaded;
- ``next_day``: the sweep of the following day, when the items reaching a new milestone that
  day (about one in fifteen) are claimed: the daily case;
- ``rerun``: the same day again, everything already claimed, nothing sent: every other hour;
- ``providers``: the whole sweep including the providers reading the register, with that many
  organisations in the register (each with an APD review and an ICO registration falling due).

After the first sweep (``pages_after_first_sweep``) and after the providers' sweep (``pages``),
the seconds a coordinator's pages take to read what they show: the first and last page of
notifications (told of every reminder), the home page's count, the outbox, the first page of what
is due and the items of the year's calendar feed.

The statement counts are the point: they are the same at 1,000 and at 100,000 items, because
providers load in bulk, the claims already made are read in one query, and the new claims, their
audiences and one e-mail digest per address are written in a fixed number of statements
(``app.reminders.bulk``). ``emails`` counts digests; ``notifications`` counts (reminder, user)
pairs shown in the app, which are not rows until a user acts on one.

``floor`` is what the first sweep cannot go below with this schema: the same numbers of claims
and digests inserted by bare ``INSERT ... SELECT`` statements generating their rows in the
database (no client data, no planning), with every index and foreign key in place, and
committed. Each timed figure gives the wall time and this process's CPU time (on
PostgreSQL the server's work is not in the latter).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import delete, event, func, insert, select

AS_OF = date(2027, 1, 4)
NOW = datetime(2027, 1, 4, 9, 0, tzinfo=timezone.utc)
#: Organisations the generated items belong to (their DPO addresses are loaded once per sweep).
ORGANISATIONS = 1_000
#: Whose pages are timed: a coordinator is told of every reminder.
COORDINATOR = "coordinator@dartford.example"


def run(items: int = 100_000, small: int = 1_000, provider_organisations: tuple[int, ...] = (1_000, 10_000)) -> dict:
    from tests import postgres

    sizes = dict(items=items, small=small, provider_organisations=provider_organisations)
    if os.environ.get("ACCORD_BENCH_DATABASE_URL"):
        figures = _one_database(os.environ["ACCORD_BENCH_DATABASE_URL"], **sizes)
        return {figures["database"]: figures, **_machine()}
    with tempfile.TemporaryDirectory(prefix="accord-bench-reminders-") as tmp:
        out: dict[str, object] = {"sqlite": _one_database(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}", **sizes)}
    if postgres.unavailable_reason() is not None:
        out["postgresql"] = {"skipped": postgres.unavailable_reason()}
    else:
        from benchmarks.load import durable_postgres

        server = durable_postgres()
        try:
            postgres.admin_execute(server, "CREATE DATABASE bench_reminders")
            out["postgresql"] = _one_database(server.url("bench_reminders"), **sizes)
        finally:
            postgres.stop(server)
    return {**out, **_machine()}


def _machine() -> dict[str, object]:
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}


def _one_database(url: str, *, items: int, small: int, provider_organisations: tuple[int, ...]) -> dict:
    with _app(url) as app:
        from app.extensions import db

        with app.app_context():
            session = db.session
            _bulk_organisations(session, "bench", ORGANISATIONS)
            figures: dict[str, object] = {"database": db.engine.dialect.name}
            for n in (small, items):
                figures[f"items_{n}"] = _core(session, n)
            first = figures[f"items_{items}"]["first_sweep"]
            figures["floor"] = _floor(session, first["claimed"], first["emails"])
            for n in provider_organisations:
                figures[f"providers_{n}_organisations"] = _providers(session, n)
            db.session.remove()
            db.engine.dispose()
    sizes = [figures[f"items_{n}"] for n in (small, items)]
    figures["statements_do_not_grow"] = all(sizes[0][case]["statements"] == sizes[1][case]["statements"]
                                            for case in ("first_sweep", "next_day", "rerun"))
    figures["within_2s"] = {case: sizes[1][case]["seconds"] <= 2.0 for case in ("first_sweep", "next_day", "rerun")}
    return figures


@contextmanager
def _app(url: str):
    from flask_migrate import upgrade

    from app import create_app

    with tempfile.TemporaryDirectory(prefix="accord-bench-reminders-") as tmp:
        app = create_app("test", SQLALCHEMY_DATABASE_URI=url, KEYRING_FILE=str(Path(tmp) / "keyring.json"),
                         AUDIT_SIGNING_KEY_FILE=str(Path(tmp) / "audit-signing-key.pem"))
        with app.app_context():
            upgrade()
            result = app.test_cli_runner().invoke(args=["seed", "demo", "--once"])
            assert result.exit_code == 0, result.output
        yield app


class _Statements:
    def __init__(self, engine):
        self.engine = engine
        self.count = 0

    def _count(self, *_args) -> None:
        self.count += 1

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *_exc):
        event.remove(self.engine, "before_cursor_execute", self._count)


def _bulk_organisations(session, prefix: str, n: int) -> None:
    """``n`` organisations with a DPO address, an APD review and an ICO registration falling due."""
    from app.registry.models import Organisation

    now = datetime.now(timezone.utc)
    existing = session.scalar(select(func.count()).select_from(Organisation).where(
        Organisation.code.like(f"{prefix}-%"))) or 0
    rows = [{"code": f"{prefix}-{i}", "name": f"Benchmark partner {i}", "kind": "voluntary",
             "is_public_authority": False, "is_competent_authority": False, "dpo_email": f"dpo@{prefix}-{i}.example",
             "apd_paragraphs": [], "apd_review_on": AS_OF + timedelta(days=i % 120 - 20),
             "ico_registration_number": f"Z{i:07d}", "ico_registration_expires_on": AS_OF + timedelta(days=i % 97 - 10),
             "created_at": now, "updated_at": now}
            for i in range(existing, n)]
    for start in range(0, len(rows), 5_000):
        session.execute(insert(Organisation), rows[start:start + 5_000])
    session.commit()


def _generated_items(n: int):
    from app.reminders.due import DueItem

    for i in range(n):
        # Due dates spread over the 90 days ahead and the month behind, so each item is at some milestone.
        due_on = AS_OF + timedelta(days=(i % 120) - 30)
        yield DueItem("apd_review", "benchmark", f"item-{i}", f"Benchmark partner {i % ORGANISATIONS}: review the APD",
                      due_on, (f"bench-{i % ORGANISATIONS}",))


def _clear(session) -> None:
    from app.reminders.models import (Notification, OutboxMessage, ReminderAudience, ReminderAudienceMember,
                                      ReminderClaim, ReminderSweep, ReminderSweepAudience)

    for model in (Notification, OutboxMessage, ReminderClaim, ReminderSweepAudience, ReminderAudienceMember,
                  ReminderAudience, ReminderSweep):
        session.execute(delete(model))
    session.commit()


def _timed_sweep(session, items=None, as_of: date = AS_OF) -> dict[str, object]:
    from app.reminders import service

    session.rollback()
    now = NOW + (as_of - AS_OF)
    with _Statements(session.get_bind()) as statements:
        start, cpu = time.perf_counter(), time.process_time()
        result = service.sweep(session, as_of=as_of, now=now, actor="benchmark", items=items)
        session.commit()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "statements": statements.count,
            "claimed": result.claimed, "emails": result.messages, "notifications": result.notifications}


def _core(session, n: int) -> dict[str, object]:
    from app.reminders import service

    _clear(session)
    items = list(_generated_items(n))
    first = _timed_sweep(session, items)
    assert first["claimed"] == n, first
    pages = _timed_pages(session, {
        "notifications_first_page": lambda user: service.list_notifications(session, user, AS_OF),
        "notifications_last_page": lambda user: service.list_notifications(
            session, user, AS_OF, page=service.page_count(n, service.NOTIFICATIONS_PER_PAGE)),
        "home_count": lambda user: service.active_notification_count(session, user, AS_OF),
        "outbox": lambda user: [m.display_subject for m in service.outbox_view(session, user).waiting],
    })
    next_day = _timed_sweep(session, items, AS_OF + timedelta(days=1))
    assert 0 < next_day["claimed"] < n, next_day
    rerun = _timed_sweep(session, items, AS_OF + timedelta(days=1))
    assert rerun["claimed"] == 0, rerun
    return {"first_sweep": first, "pages_after_first_sweep": pages, "next_day": next_day, "rerun": rerun}


def _timed_pages(session, calls) -> dict[str, float]:
    """Seconds each of a coordinator's pages takes to read what it shows (its service call, on a
    fresh session, so nothing is already loaded)."""
    from app.auth import service as auth_service

    seconds = {}
    for name, call in calls.items():
        session.close()
        user = auth_service.find_user_by_email(session, COORDINATOR)
        start = time.perf_counter()
        call(user)
        seconds[name] = round(time.perf_counter() - start, 3)
    session.rollback()
    return seconds


def _floor(session, claims: int, emails: int) -> dict[str, object]:
    """Bare inserts of the first sweep's rows (claims of one sweep and one audience, then the
    digests), generated in the database, then committed."""
    from sqlalchemy import text

    postgresql = session.get_bind().dialect.name == "postgresql"
    numbers = ("generate_series(1, :n) AS g" if postgresql else
               "(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < :n) SELECT g FROM s)")
    due_on = "DATE '2027-01-04' + (g % 120 - 30)" if postgresql else "date('2027-01-04', (g % 120 - 30) || ' days')"
    sweep, audience = "(SELECT max(id) FROM reminder_sweeps)", "(SELECT max(id) FROM reminder_audiences)"
    steps = {
        "sweep": ("INSERT INTO reminder_sweeps (as_of, ran_at) VALUES (:as_of, :now)", {}),
        "audience": ("INSERT INTO reminder_audiences (fingerprint, created_at) VALUES ('floor', :now)", {}),
        "sweep_audience": (f"INSERT INTO reminder_sweep_audiences (sweep_id, audience_id) SELECT {sweep}, {audience}",
                           {}),
        "claims": ("INSERT INTO reminder_claims (kind, subject_type, subject_id, due_on, milestone, title, escalated, "
                   f"as_of, claimed_at, sweep_id, audience_id) SELECT 'apd_review', 'floor', 'item-' || g, {due_on}, "
                   f"'before:7', 'Benchmark partner: review the APD', false, :as_of, :now, {sweep}, {audience} "
                   f"FROM {numbers}", {"n": claims}),
        "emails": ("INSERT INTO outbox_messages (sweep_id, to_address, status, attempts, next_attempt_at, created_at) "
                   f"SELECT {sweep}, 'dpo-' || g || '@floor.example', 'pending', 0, :now, :now FROM {numbers}",
                   {"n": emails}),
    }
    _clear(session)
    figures: dict[str, object] = {}
    total, cpu = time.perf_counter(), time.process_time()
    for name, (sql, params) in steps.items():
        start = time.perf_counter()
        written = session.execute(text(sql), {**params, "as_of": AS_OF, "now": NOW.replace(tzinfo=None)}).rowcount
        figures[name] = {"rows": written, "seconds": round(time.perf_counter() - start, 3)}
    start = time.perf_counter()
    session.commit()
    figures["commit_seconds"] = round(time.perf_counter() - start, 3)
    figures["seconds"] = round(time.perf_counter() - total, 3)
    figures["cpu_seconds"] = round(time.process_time() - cpu, 3)
    return figures


def _providers(session, organisations: int) -> dict[str, object]:
    from app.reminders import service

    _clear(session)
    _bulk_organisations(session, "bench", organisations)
    first = _timed_sweep(session)
    rerun = _timed_sweep(session)
    assert rerun["claimed"] == 0
    pages = _timed_pages(session, {
        "what_is_due_first_page": lambda user: service.what_is_due(session, user, AS_OF),
        "calendar_feed_items": lambda user: service.due_for(session, user, AS_OF, days=365),
    })
    return {"first_sweep": first, "rerun": rerun, "pages": pages}


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(json.dumps(run(count), indent=2))
