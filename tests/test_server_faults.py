"""Accord under gunicorn with 4 worker processes, on SQLite and on PostgreSQL: a lockout every
worker agrees on, 16 clients of 100 concurrent submissions, and 20 kill -9s under load.

Every load loop is bounded in count and in time, and only talks to 127.0.0.1.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import random
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select, text

from app.api import ratelimit
from app.audit import chain
from app.audit.models import AuditEvent
from app.decisions.models import Exchange
from app.transfers.models import Transfer, TransferChunk
from config import TestConfig
from tests import server as served
from tests.summary import report
from tests.world import ALLOWED

pytestmark = pytest.mark.slow

OFFICER = "officer@kent-police.example"
RECIPIENT = "officer@dartford.example"
SUBMISSION = {**ALLOWED, "from_org": "kent-police", "to_org": "dartford-bc"}
CLIENTS, SUBMISSIONS_EACH = 16, 100
KILLS = 20


def bearer(app, session, email: str, *scopes: str) -> dict[str, str]:
    from app.auth import service, tokens
    from app.clock import utcnow

    user = service.find_user_by_email(session, email)
    issued = tokens.create_token(session, "test", user, name="load", scopes=list(scopes), lifetime=timedelta(days=1),
                                 now=utcnow(), pepper=app.config["TOKEN_PEPPER"])
    session.commit()
    return {"Authorization": f"Bearer {issued.plaintext}"}


def chain_report(session):
    session.rollback()
    events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    return chain.verify_chain(events, key=TestConfig.AUDIT_HMAC_KEY.encode()), len(events)


def recorded_exchange_events(session) -> dict[str, int]:
    rows = session.execute(select(AuditEvent.subject_id, func.count()).where(AuditEvent.action == "exchange.recorded")
                           .group_by(AuditEvent.subject_id)).all()
    return {subject: count for subject, count in rows}


@pytest.fixture
def environment(database_url, tmp_path, demo):
    return served.server_environment(database_url, tmp_path)


# --- lockout ---------------------------------------------------------------------------------------


def test_a_lockout_counted_across_four_workers_holds_on_every_worker(app, session, environment, tmp_path, demo):
    from app.auth import service

    limit = app.config["LOGIN_MAX_FAILURES"]
    server = served.start(environment, tmp_path, threads=1)
    try:
        # Concurrent attempts on connections of their own: each worker takes one request at a time,
        # so they land on several workers at once, and each must count in the same database row.
        with ThreadPoolExecutor(limit) as pool:
            statuses = list(pool.map(lambda _: served.form_post(server.port, "/sign-in", {
                "email": OFFICER, "password": "not-the-password"})[0], range(limit)))
        assert statuses == [401] * limit
        workers = server.worker_pids("POST", "/sign-in")
        for _ in range(8):  # the right password, on whichever worker answers: every one refuses
            status, body, _headers = served.form_post(server.port, "/sign-in", {"email": OFFICER, "password": demo})
            assert status == 401 and b"locked" in body
        refused_by = server.worker_pids("POST", "/sign-in")
    finally:
        server.stop()
    assert len(workers) >= 2, f"the failures all landed on one worker {workers}: nothing shows they agree"
    assert len(refused_by) >= 2
    session.rollback()
    user = service.find_user_by_email(session, OFFICER)
    assert user.failed_logins == limit and user.locked_until is not None


# --- concurrent submissions ------------------------------------------------------------------------


def test_sixteen_clients_of_a_hundred_submissions_lose_and_duplicate_nothing(app, session, environment, tmp_path,
                                                                          backend, request):
    tokens = [bearer(app, session, OFFICER, "submit") for _ in range(CLIENTS)]
    before = set(session.scalars(select(Exchange.id)))
    # Outside a request, an SQLite transaction begins IMMEDIATE: end it, or the server waits on it.
    session.rollback()
    acknowledged: list[int] = []
    problems: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 240

    def client(headers):
        for _ in range(SUBMISSIONS_EACH):
            if time.monotonic() > deadline:
                with lock:
                    problems.append("ran out of time")
                return
            status, body, _ = served.request(server.port, "POST", "/api/v1/exchanges", body=SUBMISSION, headers=headers)
            with lock:
                if status == 201:
                    acknowledged.append(body["id"])
                else:
                    problems.append(f"{status}: {body}")

    server = served.start(environment, tmp_path)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(client, tokens))
    finally:
        elapsed = time.monotonic() - started
        server.stop()

    assert not problems, problems[:10]
    assert len(acknowledged) == CLIENTS * SUBMISSIONS_EACH
    assert len(set(acknowledged)) == len(acknowledged), "an id was acknowledged twice"
    session.rollback()
    stored = set(session.scalars(select(Exchange.id))) - before
    assert stored == set(acknowledged), "stored rows and acknowledged ids differ"
    events = recorded_exchange_events(session)
    assert all(events.get(str(i)) == 1 for i in acknowledged), "an exchange without exactly one audit event"
    verdict, length = chain_report(session)
    assert verdict.ok, verdict.message
    assert verdict.checked == length
    report(request.config, f"{CLIENTS}x{SUBMISSIONS_EACH} submissions on 4 gunicorn workers ({backend}): "
                           f"{len(acknowledged)} stored in {elapsed:.1f} s, {len(acknowledged) / elapsed:.0f}/s")


# --- kill -9 under load ----------------------------------------------------------------------------


def test_twenty_kill_9s_under_load_lose_no_acknowledged_write_and_leave_no_half_transfer(
        app, session, client, environment, tmp_path, backend, database_url, request, monkeypatch):
    from app.auth import service as auth_service
    from app.clock import utcnow
    from app.decisions import service as decisions

    submitters = [bearer(app, session, OFFICER, "submit") for _ in range(6)]
    sender = bearer(app, session, OFFICER, "transfer")
    receiver = bearer(app, session, RECIPIENT, "transfer")
    police = auth_service.find_user_by_email(session, OFFICER)
    exchange_id = decisions.record(session, police, SUBMISSION, now=utcnow()).id
    session.commit()  # and no transaction left open for the servers to wait on

    acknowledged: list[int] = []
    sent: dict[str, str] = {}  # acknowledged transfer id -> sha256 of what was sent
    lock = threading.Lock()
    unexpected: list[str] = []
    rng = random.Random(7)
    test_deadline = time.monotonic() + 420

    def submit_until(stop: threading.Event, port: int, headers) -> None:
        while not stop.is_set():
            try:
                status, body, _ = served.request(port, "POST", "/api/v1/exchanges", body=SUBMISSION, headers=headers,
                                                 timeout=10)
            except (OSError, http.client.HTTPException):
                continue  # the server died under us: not acknowledged, so nothing is owed
            with lock:
                if status == 201:
                    acknowledged.append(body["id"])
                elif status != 503:
                    unexpected.append(f"submission {status}: {body}")

    def upload_until(stop: threading.Event, port: int, seed: int) -> None:
        counter = 0
        while not stop.is_set():
            counter += 1
            payload = hashlib.sha256(f"{seed}-{counter}".encode()).digest() * (1_200_000 // 32)
            digest = hashlib.sha256(payload).hexdigest()
            try:
                status, body, _ = served.request(port, "POST", f"/api/v1/exchanges/{exchange_id}/transfer", body=payload,
                                                 headers={**sender, "Content-Type": "text/csv",
                                                          "X-Accord-Filename": "cases.csv",
                                                          "X-Content-SHA256": digest}, timeout=20)
            except (OSError, http.client.HTTPException):
                continue
            with lock:
                if status == 201:
                    sent[body["id"]] = digest
                else:
                    unexpected.append(f"upload {status}: {body}")

    for cycle in range(KILLS):
        assert time.monotonic() < test_deadline, f"ran out of time after {cycle} kills"
        server = served.start(environment, tmp_path, preload=True)  # a quicker restart; kill -9 is the same
        stop = threading.Event()
        threads = [threading.Thread(target=submit_until, args=(stop, server.port, h)) for h in submitters]
        threads += [threading.Thread(target=upload_until, args=(stop, server.port, cycle * 10 + n)) for n in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(1.0, 2.5))
        server.kill_hard()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a load thread did not stop"
        if backend == "sqlite":
            assert _sqlite_check(database_url, "quick_check") == "ok", f"after kill {cycle + 1}"

    assert not unexpected, unexpected[:10]
    assert len(acknowledged) > KILLS, "too little load to prove anything"

    # The database is whole: SQLite's own check, or PostgreSQL answering a fresh connection.
    if backend == "sqlite":
        assert _sqlite_check(database_url, "integrity_check") == "ok"
    else:
        engine = create_engine(database_url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
            gaps = connection.execute(text("SELECT count(*) - max(seq) FROM audit_events")).scalar()
            assert gaps == 0, "the audit sequence has gaps"
        engine.dispose()

    session.rollback()
    stored = set(session.scalars(select(Exchange.id)))
    lost = set(acknowledged) - stored
    assert not lost, f"acknowledged and lost: {sorted(lost)[:10]}"
    assert len(set(acknowledged)) == len(acknowledged)
    events = recorded_exchange_events(session)
    assert all(events.get(str(i)) == 1 for i in stored), "a stored exchange without exactly one audit event"
    assert set(events) == {str(i) for i in stored}, "an audit event for an exchange that is not there"
    verdict, length = chain_report(session)
    assert verdict.ok, verdict.message

    # No half-stored transfer is visible: every transfer row has all its chunks, and each
    # acknowledged one decrypts to exactly what was sent.
    transfers = session.scalars(select(Transfer)).all()
    for transfer in transfers:
        indices = sorted(session.scalars(select(TransferChunk.segment_index)
                                         .where(TransferChunk.transfer_id == transfer.id)))
        assert transfer.size > 0 and transfer.sha256, f"transfer {transfer.id} was stored without its size or digest"
        assert indices == list(range(transfer.segment_count)), f"transfer {transfer.id} is missing chunks"
    assert set(sent) <= {t.id for t in transfers}, "an acknowledged transfer was lost"
    # Every acknowledged transfer is read back with one token, often more than its rate limit allows
    # in a minute; the limit is not what this test is about.
    monkeypatch.setattr(app.extensions[ratelimit.EXTENSION], "per_token", None)
    for transfer_id, digest in sent.items():
        response = client.get(f"/api/v1/transfers/{transfer_id}/payload", headers=receiver)
        assert response.status_code == 200
        assert hashlib.sha256(response.data).hexdigest() == digest
    orphans = session.scalar(select(func.count()).select_from(TransferChunk)
                             .where(~TransferChunk.transfer_id.in_(select(Transfer.id))))
    assert orphans == 0

    report(request.config, f"kill -9 x{KILLS} under load ({backend}): {len(acknowledged)} acknowledged submissions "
                           f"and {len(sent)} transfers kept, {len(stored) - len(acknowledged)} stored unacknowledged, "
                           f"{length} audit events verify")


def _sqlite_check(database_url: str, pragma: str) -> str:
    path = database_url.split("sqlite:///", 1)[1]
    assert os.path.exists(path)
    connection = sqlite3.connect(path)
    try:
        return connection.execute(f"PRAGMA {pragma}").fetchone()[0]
    finally:
        connection.close()
