"""The audit chain in the database, on SQLite and PostgreSQL: concurrent appends neither fork nor
leave gaps, and every way of tampering with the stored rows is found by ``verify``, which names
the first bad event and what is wrong with it. Then the commands, and an export a third party
verifies with the standalone ``chain.py``."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from app.audit import chain, indexing, keys, service, verification
from app.audit.models import AuditCheckpoint, AuditEvent, canonical_json
from app.clock import utcnow
from app.extensions import db

ROOT = Path(__file__).resolve().parent.parent
CHAIN_PY = ROOT / "app" / "audit" / "chain.py"
EVENTS = 30
OUTCOMES = ("allow", "deny", "refer")


def _build(session, count: int = EVENTS) -> None:
    """A chain like the app writes: decisions with their filter values, sign-ins between."""
    start = utcnow() - timedelta(days=1)
    for i in range(1, count + 1):
        if i % 3:
            service.record(session, action="exchange.recorded", actor=f"officer{i}@kent-cc.example",
                           organisation="kent-cc", subject_type="exchange", subject_id=i,
                           occurred_at=start + timedelta(minutes=i),
                           details={"outcome": OUTCOMES[i % 3], "protocol": "vcs-safeguarding:v2",
                                    "subgroup": "vcs-group", "to_org": "kent-police", "note": f'say "{i}"\n'})
        else:
            service.record(session, action="auth.signed_in", actor=f"officer{i}@kent-cc.example",
                           organisation="kent-cc", subject_type="user", subject_id=i,
                           occurred_at=start + timedelta(minutes=i))
    session.commit()


def _checkpoint(session) -> AuditCheckpoint:
    row = service.create_checkpoint(session, now=utcnow(), signing_key=keys.signing_key())
    session.commit()
    return row


def _verify(session, **kwargs) -> chain.VerifyReport:
    report = service.verify_current(session, **kwargs)
    session.rollback()
    return report


def _row(session, seq: int) -> dict:
    return dict(session.execute(text("SELECT * FROM audit_events WHERE seq = :seq"), {"seq": seq}).mappings().one())


def _set(session, seq: int, **values) -> None:
    """Change a stored row with plain SQL, as someone with database access would."""
    assignments = []
    for column in values:
        if column == "details" and session.get_bind().dialect.name == "postgresql":
            assignments.append("details = CAST(:details AS JSON)")
        else:
            assignments.append(f"{column} = :{column}")
    session.execute(text(f"UPDATE audit_events SET {', '.join(assignments)} WHERE seq = :seq"), {**values, "seq": seq})


def _canonical(details) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _rewrite(session, from_seq: int, key: bytes) -> None:
    """Rewrite history from ``from_seq`` with recomputed hashes: change one actor, re-seal everything
    after it so every hash and link is consistent again, sealing with ``key``."""
    rows = session.execute(select(AuditEvent).where(AuditEvent.seq >= from_seq).order_by(AuditEvent.seq)).scalars().all()
    prev = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == from_seq - 1))
    values = []
    for row in rows:
        sealed = chain.seal(seq=row.seq, prev_hash=prev, occurred_at=row.occurred_at, action=row.action,
                            actor="mallory@example.org" if row.seq == from_seq else row.actor,
                            organisation=row.organisation, subject_type=row.subject_type, subject_id=row.subject_id,
                            details=row.details, key=key)
        values.append(sealed)
        prev = sealed.hash
    session.expunge_all()
    for sealed in values:
        _set(session, sealed.seq, actor=sealed.actor, prev_hash=sealed.prev_hash, hash=sealed.hash, mac=sealed.mac)
    session.commit()


# --------------------------------------------------------------------------- concurrency


def test_eight_writers_of_500_events_each_neither_fork_nor_leave_gaps(app, session):
    _build(session, 5)
    writers, each = 8, 500
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers)

    def write(number: int) -> None:
        try:
            with app.app_context():
                barrier.wait()
                for i in range(each):
                    service.record(db.session, action="test.appended", actor=f"writer{number}",
                                   subject_type="writer", subject_id=number, details={"i": i})
                    db.session.commit()
                db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    total, low, high, links = session.execute(
        select(func.count(), func.min(AuditEvent.seq), func.max(AuditEvent.seq),
               func.count(func.distinct(AuditEvent.prev_hash)))).one()
    assert (total, low, high, links) == (5 + writers * each, 1, 5 + writers * each, 5 + writers * each)
    per_writer = dict(session.execute(select(AuditEvent.subject_id, func.count()).where(
        AuditEvent.action == "test.appended").group_by(AuditEvent.subject_id)).all())
    assert per_writer == {str(n): each for n in range(writers)}
    report = _verify(session)
    assert report.ok and report.checked == total, report


# --------------------------------------------------------------------------- tampering


@pytest.fixture
def sealed(session):
    """A sound chain of 30 events with a checkpoint at its head."""
    _build(session)
    _checkpoint(session)
    report = _verify(session)
    assert report.ok and report.checkpoint_verified and report.checked == EVENTS + 1
    return session


def _split_in_two(monkeypatch) -> None:
    """Verify even these short chains in two processes. The test session may run threads of its
    own (a server, an SMTP sink), which would keep verification in one: split regardless."""
    monkeypatch.setattr(verification, "PARALLEL_FROM", 4)
    monkeypatch.setattr(verification, "_can_fork", lambda: True)


@pytest.fixture(params=["one_process", "two_processes"])
def processes(request, monkeypatch):
    """Run a test with the whole chain in one process, and split between two."""
    if request.param == "two_processes":
        _split_in_two(monkeypatch)
    return request.param


def _assert_report(report, problem, first_bad_seq):
    assert not report.ok, report
    assert (report.problem, report.first_bad_seq) == (problem, first_bad_seq), report


def test_an_edited_row_is_found(sealed, processes):
    _set(sealed, 10, actor="mallory@example.org")
    sealed.commit()
    _assert_report(_verify(sealed), chain.Problem.HASH_MISMATCH, 10)


#: Enough events that PostgreSQL is still sending the fast path's COPY when it stops at the start.
LONG_CHAIN = 20_000


def _long_chain(session, count: int = LONG_CHAIN) -> None:
    """``count`` sign-in events sealed as ``record`` seals them, inserted in one statement."""
    from sqlalchemy import insert

    key, prev_hash, start, rows = service.audit_key(), chain.GENESIS_HASH, utcnow() - timedelta(days=30), []
    for seq in range(1, count + 1):
        sealed = chain.seal(seq=seq, prev_hash=prev_hash, occurred_at=start + timedelta(seconds=seq),
                            action="auth.signed_in", actor=f"officer{seq % 40}@kent-cc.example", organisation="kent-cc",
                            subject_type="user", subject_id=str(seq % 400), details={"via": "password"}, key=key)
        prev_hash = sealed.hash
        rows.append({"seq": seq, "occurred_at": sealed.occurred_at, "action": sealed.action, "actor": sealed.actor,
                     "organisation": sealed.organisation, "subject_type": sealed.subject_type,
                     "subject_id": sealed.subject_id, "details": sealed.details, "prev_hash": sealed.prev_hash,
                     "hash": sealed.hash, "mac": sealed.mac})
    session.execute(insert(AuditEvent), rows)
    session.commit()


def test_an_edited_row_early_in_a_long_chain_is_named_not_a_database_error(session, processes):
    """The fast path stops at the edited row while PostgreSQL is still sending the rest: the
    cancelled COPY must not leave the exact path, which names the row, reading in a failed
    transaction (a short chain never shows it: its COPY arrives whole before the first row is
    looked at)."""
    _long_chain(session)
    _set(session, 3, actor="mallory@example.org")
    session.commit()
    _assert_report(_verify(session), chain.Problem.HASH_MISMATCH, 3)


def test_the_nightly_verification_records_and_the_checkpoint_refuses_an_edited_long_chain(session):
    """What the scheduler does with a broken chain must itself work on a long one: the failure
    is recorded in the trail, and the head is not signed."""
    _long_chain(session)
    _set(session, 3, actor="mallory@example.org")
    session.commit()
    report = service.run_verification(session, actor="system:scheduler", now=utcnow())
    session.commit()
    assert not report.ok and report.first_bad_seq == 3
    recorded = session.scalars(select(AuditEvent).where(AuditEvent.action == "audit.verified")).one()
    assert recorded.details["ok"] is False and recorded.details["first_bad_seq"] == 3
    result = service.checkpoint_job(session, utcnow())
    session.commit()
    assert result.checkpoint is None and "event 3" in result.reason
    assert session.scalar(select(func.count()).select_from(AuditCheckpoint)) == 0


def test_edited_details_are_found(sealed, processes):
    details = _row(sealed, 20)["details"]
    details = json.loads(details) if isinstance(details, str) else details
    details["to_org"] = "bluewater"
    _set(sealed, 20, details=_canonical(details), counterparty="bluewater")
    sealed.commit()
    _assert_report(_verify(sealed), chain.Problem.HASH_MISMATCH, 20)


def test_a_deleted_middle_row_is_a_gap(sealed, processes):
    sealed.execute(text("DELETE FROM audit_events WHERE seq = 12"))
    sealed.commit()
    _assert_report(_verify(sealed), chain.Problem.GAP, 12)


def test_a_truncated_tail_is_found_against_the_checkpoint(sealed, processes):
    sealed.execute(text("DELETE FROM audit_events WHERE seq > 25"))
    sealed.commit()
    report = _verify(sealed)
    _assert_report(report, chain.Problem.TRUNCATED, 26)
    assert report.head_seq == 25 and "30" in report.message


def test_two_swapped_rows_break_the_links(sealed, processes):
    first, second = _row(sealed, 10), _row(sealed, 11)
    columns = [c for c in first if c != "seq"]
    # UNIQUE(prev_hash) and UNIQUE(hash) hold at every statement: park row 10 on placeholders first.
    _set(sealed, 10, prev_hash="a" * 64, hash="b" * 64)
    for seq, source in ((11, first), (10, second)):
        _set(sealed, seq, **{c: (_canonical(source[c]) if c == "details" and not isinstance(source[c], str)
                                 else source[c]) for c in columns})
    sealed.commit()
    _assert_report(_verify(sealed), chain.Problem.BROKEN_LINK, 10)


def test_history_rewritten_without_the_audit_key_fails_its_macs(sealed, processes):
    _rewrite(sealed, 8, key=b"an-attacker-guessed-this-key")
    report = _verify(sealed)
    _assert_report(report, chain.Problem.MAC_MISMATCH, 8)


def test_history_rewritten_with_the_audit_key_fails_the_signed_checkpoint(sealed, processes):
    checkpoint = service.latest_checkpoint(sealed)
    assert checkpoint.seq == EVENTS
    _rewrite(sealed, 8, key=service.audit_key())
    report = _verify(sealed)
    _assert_report(report, chain.Problem.CHECKPOINT_MISMATCH, EVENTS)
    # Without the checkpoint the rewrite is consistent: only a signature exposes it.
    assert service.verify(sealed, key=service.audit_key(), checkpoint=None, public_key=None).ok


def test_a_forged_checkpoint_is_refused_before_any_event(sealed, processes):
    sealed.add(AuditCheckpoint(seq=EVENTS + 1, head_hash=_row(sealed, EVENTS + 1)["hash"], signed_at=utcnow(),
                               key_id=chain.key_id_for(keys.public_key()), signature="00" * 64))
    sealed.commit()
    report = _verify(sealed)
    _assert_report(report, chain.Problem.CHECKPOINT_SIGNATURE_INVALID, None)
    # Signed by a key that is not Accord's: refused just the same.
    other = chain.Ed25519PrivateKey.generate()
    signed = chain.sign_checkpoint(other, chain.key_id_for(other), 5, _row(sealed, 5)["hash"], utcnow())
    report = _verify(sealed, checkpoint=signed)
    _assert_report(report, chain.Problem.CHECKPOINT_SIGNATURE_INVALID, None)


def test_an_edited_filter_column_no_longer_matching_its_details_is_found(sealed, processes):
    row = _row(sealed, 14)
    assert row["outcome"] == "refer"
    _set(sealed, 14, outcome="allow")  # hide a referral from a filter on "refer"
    sealed.commit()
    report = _verify(sealed)
    _assert_report(report, verification.StorageProblem.COLUMN_MISMATCH, 14)
    assert "outcome" in report.message and report.head_seq == 13


def test_verification_in_two_processes_agrees_with_one(sealed, monkeypatch):
    _set(sealed, 22, actor="mallory@example.org")
    sealed.commit()
    one = service.verify_current(sealed)
    _split_in_two(monkeypatch)
    two = service.verify_current(sealed)
    sealed.rollback()
    assert one == two and not one.ok


def _fast_report(session, parallel: bool):
    """The fast path alone: None means it stepped aside for the exact path."""
    last = service.head(session)[0]
    connection = session.connection().connection.driver_connection
    database = verification.Database.from_url(session.get_bind().url)
    report = verification.fast_report(connection, database, head_seq=last, key=service.audit_key(),
                                      checkpoint=None, public_key=None, parallel=parallel)
    session.rollback()
    return report


def test_the_fast_path_itself_passes_a_sound_chain_and_steps_aside_for_an_edited_column(sealed, processes):
    """A million events are verified in seconds only if the fast path, not the exact one, passes
    a sound chain: a fast path that always stepped aside would pass every other test, slowly."""
    parallel = processes == "two_processes"
    report = _fast_report(sealed, parallel)
    assert report is not None and report.ok and report.checked == EVENTS + 1
    _set(sealed, 11, outcome=None)  # an exchange: its outcome blanked
    sealed.commit()
    assert _fast_report(sealed, parallel) is None


#: Values the database wraps in quotes as they are, and values it must leave to ``to_json``.
JSON_STRING_CASES = ["officer@kent-cc.example", "scheduler", "Åsa Ødegård", "line\u2028break", 'say "no"',
                     "back\\slash", 'both \\ and "', "", None]


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("value", JSON_STRING_CASES)
def test_the_database_writes_each_value_as_canonical_json_does(session, value):
    """The fast path's quick quoting gives exactly the canonical text for every value it quotes."""
    from sqlalchemy import String, bindparam, literal_column

    quoted = session.execute(select(literal_column(verification._pg_json_string("x")))
                             .select_from(select(bindparam("v", value, String(200)).label("x")).subquery())).scalar()
    assert quoted == ("null" if value is None else json.dumps(value, ensure_ascii=False))


def test_a_control_character_sends_the_fast_path_to_the_exact_one_which_passes_it(app, session, processes):
    """Canonical text escapes a control character, the quick quoting does not: that row cannot
    match its hash on the fast path, so the exact path, which escapes it, verifies the chain."""
    _build(session)
    service.record(session, action="auth.signed_in", actor="tab\there@kent-cc.example", organisation="kent-cc",
                   subject_type="user", subject_id=7)
    session.commit()
    if session.get_bind().dialect.name == "postgresql":
        assert _fast_report(session, processes == "two_processes") is None
    assert _verify(session).ok


def test_a_process_running_other_threads_verifies_without_forking(sealed, monkeypatch):
    """A server worker or the scheduler has threads that may hold a lock as the fork happens,
    which the child would wait on for ever: there the chain is verified in one process."""
    monkeypatch.setattr(verification, "PARALLEL_FROM", 4)
    started = []
    monkeypatch.setattr(verification.multiprocessing, "get_context",
                        lambda method: started.append(method) or pytest.fail("forked beside a thread"))
    release = threading.Event()
    other = threading.Thread(target=release.wait, name="another-request")
    other.start()
    try:
        assert not verification._can_fork()
        report = _verify(sealed)
    finally:
        release.set()
        other.join()
    assert report.ok and not started


def test_a_sound_chain_verifies_the_same_in_one_process_and_two(sealed, monkeypatch):
    one = service.verify_current(sealed)
    _split_in_two(monkeypatch)
    two = service.verify_current(sealed)
    sealed.rollback()
    assert one == two and one.ok and one.checkpoint_verified


# --------------------------------------------------------------------------- checkpoints and jobs


def test_the_checkpoint_covers_the_head_before_its_own_event(app, session):
    _build(session, 6)
    row = _checkpoint(session)
    assert row.seq == 6
    event = session.get(AuditEvent, 7)
    assert event.action == "audit.checkpoint" and event.details["seq"] == 6
    assert event.details["signature"] == row.signature
    assert chain.verify_checkpoint(keys.public_key(), service.as_checkpoint(row))


def test_the_checkpoint_job_signs_once_and_never_a_broken_chain(app, session):
    assert service.checkpoint_job(session, utcnow()).checkpoint is None  # empty
    _build(session, 6)
    first = service.checkpoint_job(session, utcnow())
    session.commit()
    assert first.checkpoint is not None and first.checkpoint.seq == 6
    again = service.checkpoint_job(session, utcnow())
    assert again.checkpoint is None and "nothing new" in again.reason
    _build(session, 3)
    _set(session, 9, actor="mallory@example.org")
    session.commit()
    refused = service.checkpoint_job(session, utcnow())
    assert refused.checkpoint is None and refused.report.first_bad_seq == 9
    session.rollback()
    assert session.scalar(select(func.count()).select_from(AuditCheckpoint)) == 1


def test_the_verify_job_records_what_it_found_in_the_chain(app, session):
    _build(session, 5)
    report = service.verify_job(session, utcnow())
    session.commit()
    assert report.ok
    event = session.scalar(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1))
    assert event.action == "audit.verified" and event.details["ok"] is True and event.details["checked"] == 5
    _set(session, 2, actor="mallory@example.org")
    session.commit()
    report = service.verify_job(session, utcnow())
    session.commit()
    event = session.scalar(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1))
    assert event.details["ok"] is False and event.details["first_bad_seq"] == 2
    assert event.details["problem"] == "hash_mismatch"


def test_record_copies_filter_values_into_details_and_refuses_contradictions(app, session):
    event = service.record(session, action="exchange.recorded", actor="x", outcome="deny", protocol="p:v3",
                           counterparty="kent-police", details={"subgroup": "vcs-group"})
    assert (event.outcome, event.protocol, event.subgroup, event.counterparty) == ("deny", "p", "vcs-group",
                                                                                   "kent-police")
    assert event.details == {"outcome": "deny", "protocol": "p:v3", "subgroup": "vcs-group", "to_org": "kent-police"}
    with pytest.raises(ValueError):
        service.record(session, action="x", actor="x", outcome="deny", details={"outcome": "allow"})
    session.commit()
    assert _verify(session).ok


# --------------------------------------------------------------------------- the commands


def test_accord_audit_verify_exits_non_zero_naming_the_first_bad_event(runner, sealed):
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "audit chain: OK" in result.output and f"event {EVENTS + 1}" in result.output
    _set(sealed, 17, action="exchange.deleted")
    sealed.commit()
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert "problem: hash_mismatch at event 17" in result.output
    result = runner.invoke(args=["audit", "verify", "--json"])
    assert result.exit_code == 1 and json.loads(result.output[result.output.index("{"):])["first_bad_seq"] == 17


def test_accord_audit_verify_against_a_published_checkpoint(runner, sealed, tmp_path):
    published = tmp_path / "checkpoint.json"
    published.write_text(json.dumps({"checkpoint": service.as_checkpoint(service.latest_checkpoint(sealed)).to_dict()}))
    sealed.rollback()
    sealed.execute(text("DELETE FROM audit_checkpoints"))
    sealed.execute(text(f"DELETE FROM audit_events WHERE seq > {EVENTS - 4}"))
    sealed.commit()
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0  # the database alone cannot tell
    result = runner.invoke(args=["audit", "verify", "--checkpoint", str(published)])
    assert result.exit_code == 1 and f"truncated at event {EVENTS - 3}" in result.output


def test_accord_audit_checkpoint_signs_then_has_nothing_new(runner, app, session):
    _build(session, 4)
    first = runner.invoke(args=["audit", "checkpoint"])
    assert first.exit_code == 0 and "event 4" in first.output
    second = runner.invoke(args=["audit", "checkpoint"])
    assert second.exit_code == 0 and "Nothing signed" in second.output


def _standalone(*args: str) -> subprocess.CompletedProcess:
    """``python chain.py ...`` with nothing of Accord importable: a copy of the file, run elsewhere."""
    return subprocess.run([sys.executable, "-I", str(CHAIN_PY), *args], capture_output=True, text=True,
                          cwd="/", timeout=120)


def test_an_export_verifies_without_accord_and_a_tampered_one_does_not(runner, sealed, tmp_path):
    result = runner.invoke(args=["audit", "export"])
    assert result.exit_code == 0
    export = tmp_path / "trail.json"
    export.write_text(result.output)
    document = json.loads(result.output)
    assert document["whole_chain"] is True and len(document["events"]) == EVENTS + 1
    key = tmp_path / "key.pem"
    key.write_text(keys.public_key_pem())
    ok = _standalone("verify", str(export), "--public-key", str(key))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit chain: OK" in ok.stdout and f"checkpoint: event {EVENTS}" in ok.stdout

    document["events"][11]["details"]["outcome"] = "allow"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    bad = _standalone("verify", str(tampered), "--public-key", str(key))
    assert bad.returncode == 1 and "problem: hash_mismatch at event 12" in bad.stdout

    document = json.loads(result.output)
    del document["events"][EVENTS - 5:]  # drop the tail the checkpoint covers
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps(document))
    cut = _standalone("verify", str(truncated), "--public-key", str(key))
    assert cut.returncode == 1 and "problem: truncated" in cut.stdout


def test_a_filtered_export_verifies_event_by_event(runner, sealed, tmp_path):
    result = runner.invoke(args=["audit", "export", "--outcome", "deny"])
    assert result.exit_code == 0
    document = json.loads(result.output)
    assert document["whole_chain"] is False and document["filters"] == {"outcome": "deny"}
    assert {e["details"]["outcome"] for e in document["events"]} == {"deny"}
    export = tmp_path / "deny.json"
    export.write_text(result.output)
    assert _standalone("verify", str(export)).returncode == 1  # not a chain
    each = _standalone("verify", "--each", str(export))
    assert each.returncode == 0 and f"each of the {len(document['events'])} events" in each.stdout


def test_a_csv_export_lists_the_view(runner, sealed):
    result = runner.invoke(args=["audit", "export", "--format", "csv", "--action", "auth.signed_in"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("seq,occurred_at,action") and len(lines) == 1 + EVENTS // 3
    assert all(",auth.signed_in," in line for line in lines[1:])


# --------------------------------------------------------------------------- the migration


@pytest.fixture
def migration_url(backend, tmp_path, request):
    from tests import postgres

    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.sqlite3'}"
        return
    server = request.getfixturevalue("pg_server")
    postgres.admin_execute(server, "DROP DATABASE IF EXISTS accord_audit_migration WITH (FORCE)",
                           "CREATE DATABASE accord_audit_migration")
    yield server.url("accord_audit_migration")
    postgres.admin_execute(server, "DROP DATABASE IF EXISTS accord_audit_migration WITH (FORCE)")


def test_the_migration_fills_the_filter_columns_of_existing_events(migration_url, tmp_path):
    """Events written before revision 0006 (details as SQLAlchemy's JSON wrote them) get their
    filter columns and canonical text, and the chain still verifies."""
    from flask_migrate import upgrade

    from app import create_app

    app = create_app("test", SQLALCHEMY_DATABASE_URI=migration_url, AUDIT_SIGNING_KEY_FILE=str(tmp_path / "k.pem"))
    with app.app_context():
        upgrade(revision="0004")
        key = service.audit_key()
        prev = chain.GENESIS_HASH
        details = [{"outcome": "deny", "to_org": "kent-police", "protocol": "ocg-disruption:v1", "subgroup": "ocg-group"},
                   {"content_hash": "ab", "approved": True}, {"reason": "bad_password", "name": "Zoë"}]
        subjects = [("exchange", "1"), ("protocol_version", "vcs-safeguarding:v2"), ("user", "3")]
        as_json = "CAST(:details AS JSON)" if db.engine.dialect.name == "postgresql" else ":details"
        for seq, (values, (kind, ident)) in enumerate(zip(details, subjects), start=1):
            sealed_event = chain.seal(seq=seq, prev_hash=prev, occurred_at=utcnow(), action="old.event", actor="x",
                                      organisation="kent-cc", subject_type=kind, subject_id=ident, details=values,
                                      key=key)
            db.session.execute(text(
                "INSERT INTO audit_events (seq, occurred_at, action, actor, organisation, subject_type, subject_id,"
                f" details, prev_hash, hash, mac) VALUES (:seq, :at, 'old.event', 'x', 'kent-cc', :kind, :ident,"
                f" {as_json}, :prev, :hash, :mac)"),
                {"seq": seq, "at": sealed_event.occurred_at if db.engine.dialect.name == "postgresql"
                 else sealed_event.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f"), "kind": kind, "ident": ident,
                 "details": json.dumps(values), "prev": prev, "hash": sealed_event.hash, "mac": sealed_event.mac})
            prev = sealed_event.hash
        db.session.commit()
        upgrade()
        rows = db.session.execute(text(
            "SELECT protocol, subgroup, outcome, counterparty, CAST(details AS TEXT) FROM audit_events ORDER BY seq")).all()
        assert [tuple(r[:4]) for r in rows] == [("ocg-disruption", "ocg-group", "deny", "kent-police"),
                                                 ("vcs-safeguarding", None, None, None), (None, None, None, None)]
        assert [r[4] for r in rows] == [_canonical(d) for d in details]
        report = service.verify(db.session, key=key, checkpoint=None, public_key=None)
        assert report.ok and report.checked == 3, report
        db.session.remove()
        db.engine.dispose()


def test_the_scheduled_jobs_checkpoint_and_verify(app, session):
    from app.audit import jobs

    _build(session, 5)
    session.close()
    result = jobs.checkpoint(app)
    assert result.checkpoint is not None and result.checkpoint.seq == 5
    assert jobs.checkpoint(app).checkpoint is None  # nothing new: idempotent
    report = jobs.verify(app)
    assert report.ok and report.checkpoint_verified and report.checked == 6
    last = session.scalar(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1))
    assert last.action == "audit.verified" and last.actor == service.SCHEDULER_ACTOR and last.details["ok"]
