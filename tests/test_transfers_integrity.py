"""What is stored is what was sent: tampering with the database rows is refused without releasing
a byte, key rotation keeps every transfer readable, destruction leaves nothing to recover, and
the plaintext never reaches the database file or a dump."""
from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, event, func, insert, select, update
from sqlalchemy.engine import make_url

from app.audit.models import AuditEvent
from app.clock import as_utc, utcnow
from app.reminders.models import OutboxMessage
from app.transfers import service
from app.transfers.cipher import SEGMENT_SIZE
from app.transfers.keyring import Keyring, load_key_file, save_key_file
from app.transfers.keys import keyring_for
from app.transfers.models import Transfer, TransferChunk, TransferDownload
from app.transfers.rules import TransferStatus
from tests import postgres
from tests.transfers_support import (
    CANARY,
    COUNCIL_DPO,
    COUNCIL_OFFICER,
    POLICE_OFFICER,
    Reader,
    audit_actions,
    payload,
    record_allowed_exchange,
    send,
    user,
)

#: Large enough for several segments (64 KiB each) and a short final one.
SIZE = 4 * 65536 + 1234


@pytest.fixture
def exchange(session, demo):
    return record_allowed_exchange(session, POLICE_OFFICER, "dartford-bc")


@pytest.fixture
def sent(app, session, exchange):
    """Two transfers under the same exchange; the first is the one tampered with."""
    first = payload(SIZE)
    second = payload(SIZE)
    a = send(app, session, POLICE_OFFICER, exchange, first)
    b = send(app, session, POLICE_OFFICER, exchange, second)
    return {"a": a.id, "b": b.id, "plaintext": first}


def chunk(session, transfer_id: str, index: int) -> bytes:
    return session.scalar(select(TransferChunk.ciphertext).where(TransferChunk.transfer_id == transfer_id,
                                                                 TransferChunk.segment_index == index))


def set_chunk(session, transfer_id: str, index: int, ciphertext: bytes) -> None:
    session.execute(update(TransferChunk).where(TransferChunk.transfer_id == transfer_id,
                                                TransferChunk.segment_index == index).values(ciphertext=ciphertext))


def flip_a_byte(session, ids):
    original = chunk(session, ids["a"], 1)
    set_chunk(session, ids["a"], 1, original[:100] + bytes([original[100] ^ 0x01]) + original[101:])


def drop_a_chunk(session, ids):
    session.execute(delete(TransferChunk).where(TransferChunk.transfer_id == ids["a"],
                                                TransferChunk.segment_index == 2))


def drop_the_final_chunk(session, ids):
    last = session.scalar(select(func.max(TransferChunk.segment_index)).where(TransferChunk.transfer_id == ids["a"]))
    session.execute(delete(TransferChunk).where(TransferChunk.transfer_id == ids["a"],
                                                TransferChunk.segment_index == last))


def duplicate_a_chunk(session, ids):
    last = session.scalar(select(func.max(TransferChunk.segment_index)).where(TransferChunk.transfer_id == ids["a"]))
    # Chunk 1 again, under the next free index.
    session.execute(insert(TransferChunk).values(transfer_id=ids["a"], segment_index=last + 1,
                                                 ciphertext=chunk(session, ids["a"], 1)))


def swap_two_chunks(session, ids):
    first, second = chunk(session, ids["a"], 0), chunk(session, ids["a"], 1)
    set_chunk(session, ids["a"], 0, second)
    set_chunk(session, ids["a"], 1, first)


def append_a_chunk(session, ids):
    last = session.scalar(select(func.max(TransferChunk.segment_index)).where(TransferChunk.transfer_id == ids["a"]))
    session.execute(insert(TransferChunk).values(transfer_id=ids["a"], segment_index=last + 1,
                                                 ciphertext=chunk(session, ids["a"], last)))


def move_a_chunk_from_another_transfer(session, ids):
    set_chunk(session, ids["a"], 1, chunk(session, ids["b"], 1))


def swap_the_wrapped_keys(session, ids):
    other = session.get(Transfer, ids["b"])
    session.execute(update(Transfer).where(Transfer.id == ids["a"]).values(wrapped_key=other.wrapped_key,
                                                                            key_id=other.key_id))


def corrupt_the_wrapped_key(session, ids):
    wrapped = session.get(Transfer, ids["a"]).wrapped_key
    session.execute(update(Transfer).where(Transfer.id == ids["a"]).values(
        wrapped_key=wrapped[:-1] + bytes([wrapped[-1] ^ 0x80])))


def name_an_unknown_key(session, ids):
    session.execute(update(Transfer).where(Transfer.id == ids["a"]).values(key_id="k-000000000000"))


def change_the_recorded_digest(session, ids):
    session.execute(update(Transfer).where(Transfer.id == ids["a"]).values(sha256="0" * 64))


def change_the_recorded_size(session, ids):
    session.execute(update(Transfer).where(Transfer.id == ids["a"]).values(size=Transfer.size - 1))


TAMPERING = [
    (flip_a_byte, "integrity_check_failed"),
    (drop_a_chunk, "integrity_check_failed"),
    (drop_the_final_chunk, "integrity_check_failed"),
    (duplicate_a_chunk, "integrity_check_failed"),
    (swap_two_chunks, "integrity_check_failed"),
    (append_a_chunk, "integrity_check_failed"),
    (move_a_chunk_from_another_transfer, "integrity_check_failed"),
    (swap_the_wrapped_keys, "integrity_check_failed"),
    (corrupt_the_wrapped_key, "integrity_check_failed"),
    (name_an_unknown_key, "transfer_key_unavailable"),
    (change_the_recorded_digest, "integrity_check_failed"),
    (change_the_recorded_size, "integrity_check_failed"),
]


@pytest.mark.parametrize(("tamper", "code"), TAMPERING, ids=[t.__name__ for t, _ in TAMPERING])
def test_tampered_rows_are_refused_and_no_plaintext_byte_is_released(client, session, api_token, sent, tamper, code):
    headers = api_token(COUNCIL_OFFICER, "transfer")
    tamper(session, sent)
    session.commit()
    response = client.get(f"/api/v1/transfers/{sent['a']}/payload", headers=headers)
    assert response.status_code == 409
    assert response.json["error"]["code"] == code
    assert "not released" in response.json["error"]["message"] or "cannot be opened" in response.json["error"]["message"]
    body = response.get_data()
    assert CANARY not in body
    # No run of 16 plaintext bytes from any segment is in the answer.
    plaintext = sent["plaintext"]
    assert all(plaintext[i:i + 16] not in body for i in range(0, len(plaintext) - 16, 4096))
    # The failed attempt is on the record; it is not a download and the sender gets no receipt.
    assert audit_actions(session, sent["a"])[-1] == "transfer.integrity_failed"
    assert session.scalar(select(func.count()).select_from(TransferDownload)) == 0
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    # The untouched transfer still downloads.
    assert client.get(f"/api/v1/transfers/{sent['b']}/payload", headers=headers).status_code == 200


def test_tampering_refuses_the_web_download_too(auth, client, session, sent):
    flip_a_byte(session, sent)
    session.commit()
    auth.sign_in(COUNCIL_OFFICER)
    response = client.get(f"/transfers/{sent['a']}/download")
    assert response.status_code == 409
    assert b"failed its integrity check" in response.data and CANARY not in response.data


def open_then_change_segment_3(app, session, sent) -> service.Download:
    """The first transfer's download, opened (verified and recorded); then its segment 3 changed."""
    download = service.open_download(session, user(session, COUNCIL_OFFICER), sent["a"], keyring_for(app.config),
                                     now=utcnow())
    session.commit()
    original = chunk(session, sent["a"], 3)
    set_chunk(session, sent["a"], 3, original[:-1] + bytes([original[-1] ^ 0x01]))
    session.commit()
    return download


def test_a_change_between_the_check_and_the_stream_cuts_the_download_short(app, session, sent, monkeypatch):
    """The second pass trusts nothing: a chunk changed after verification stops the stream."""
    from app.transfers.cipher import TransferTampered

    monkeypatch.setattr(service, "FETCH_BATCH", 2)  # more segments than a batch: verified, then streamed
    download = open_then_change_segment_3(app, session, sent)
    released = []
    with pytest.raises(TransferTampered):
        for piece in download.plaintext(session):
            released.append(piece)
    # Segment 3 was changed: 0 and 1 got out, 2 was held back until 3 checked out, which it did not.
    assert b"".join(released) == sent["plaintext"][:2 * 65536]


def test_a_small_transfer_is_released_as_it_was_verified(app, session, sent):
    """A transfer of no more than a batch of segments is read once: a change after the check
    reaches nobody, and the stream reads nothing more from the database."""
    download = open_then_change_segment_3(app, session, sent)
    statements = []

    def note(_connection, _cursor, statement, *_args):
        statements.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", note)
    try:
        released = b"".join(download.plaintext(session))
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert released == sent["plaintext"]
    assert statements == []


# --- rotation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, sent_under_lock", [
    # One segment: the transfer's own INSERT takes the lock; its segment goes with the COMMIT.
    (1000, ["INSERT INTO transfers", "INSERT INTO transfer_chunks", "INSERT INTO audit_events"]),
    # Two: the segments are written as they are sealed, then the head is read on its own.
    (70_000, ["SELECT seq, hash", "INSERT INTO audit_events"]),
])
def test_a_transfer_appends_its_events_with_the_commit_after_every_other_write(app, session, exchange, backend,
                                                                                statements, size, sent_under_lock):
    """Sending and downloading write everything else first, then take the chain's lock (on
    PostgreSQL) with their last write or a read of the head, and send their events with the
    COMMIT: every other appender waits for two round trips, however many events, not for one or
    two an event."""
    from app import database
    from app.audit import service as audit

    data = payload(size)
    statements.clear()
    transfer = service.send(session, user(session, POLICE_OFFICER), exchange, Reader(data),
                            filename="a.csv", media_type="text/csv", now=utcnow(), keyring=keyring_for(app.config),
                            max_bytes=app.config["MAX_PAYLOAD_BYTES"])
    database.commit(session)
    sending = list(statements)
    statements.clear()
    download = service.open_download(session, user(session, COUNCIL_OFFICER), transfer.id, keyring_for(app.config),
                                     now=utcnow())
    database.commit(session)
    downloading = list(statements)

    assert b"".join(download.plaintext(session)) == data
    assert audit_actions(session, transfer.id) == ["transfer.sent", "transfer.downloaded", "transfer.receipt"]
    assert session.scalar(select(func.count()).select_from(TransferChunk).where(
        TransferChunk.transfer_id == transfer.id)) == transfer.segment_count == (1 if size < SEGMENT_SIZE else 2)
    report = audit.verify_current(session)
    assert report.ok, report
    if backend == "postgresql":
        for log, expected in ((sending, sent_under_lock),
                              (downloading, ["INSERT INTO transfer_downloads"] + ["INSERT INTO audit_events"] * 2)):
            locked = [i for i, statement in enumerate(log) if "audit_chain_head_locked" in statement]
            assert len(locked) == 1, log
            assert [" ".join(s.split()[:3]) for s in log[locked[0]:]] == expected, log


def test_rotation_rewraps_every_key_keeps_every_transfer_readable_and_retires_the_old_key(
        app, client, session, runner, api_token, exchange):
    plaintexts = [payload(70_000 + n) for n in range(5)]
    ids = [send(app, session, POLICE_OFFICER, exchange, data).id for data in plaintexts]
    old_key = keyring_for(app.config).current_key_id
    assert set(session.scalars(select(Transfer.key_id))) == {old_key}

    result = runner.invoke(args=["keys", "rotate", "--retire-old", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "Re-wrapped 5 data key(s)" in result.output and f"Retired key {old_key}" in result.output

    keyring = load_key_file(app.config["KEYRING_FILE"])
    assert old_key not in keyring.key_ids and keyring.key_ids == (keyring.current_key_id,)
    session.expire_all()
    assert set(session.scalars(select(Transfer.key_id))) == {keyring.current_key_id}
    headers = api_token(COUNCIL_OFFICER, "transfer")
    for transfer_id, data in zip(ids, plaintexts):
        response = client.get(f"/api/v1/transfers/{transfer_id}/payload", headers=headers)
        assert response.status_code == 200 and response.data == data
    rewrapped = session.scalars(select(AuditEvent).where(AuditEvent.action == "keys.rewrapped")).all()
    assert sum(e.details["count"] for e in rewrapped) == 5 and len(rewrapped) == 3  # batches of 2, 2, 1
    assert all(e.details["from_key_ids"] == [old_key] for e in rewrapped)


def test_rotation_is_resumable_and_an_old_key_still_in_use_is_kept(app, session, runner, exchange):
    ids = [send(app, session, POLICE_OFFICER, exchange, payload(1000)).id for _ in range(3)]
    path = app.config["KEYRING_FILE"]
    old = load_key_file(path)
    rotated, new_key = old.with_new_key()
    save_key_file(path, rotated)
    # An interrupted rotation: one batch of one, then stop.
    progress = []

    class Interrupted(Exception):
        pass

    def stop_after_first(n):
        progress.append(n)
        raise Interrupted

    with pytest.raises(Interrupted):
        service.rotate_keys(session, rotated, batch_size=1, progress=stop_after_first)
    session.expire_all()
    assert sorted(session.scalars(select(Transfer.key_id))) == sorted([new_key, old.current_key_id,
                                                                       old.current_key_id])
    kept = runner.invoke(args=["keys", "status"])
    assert f"{old.current_key_id}: wraps 2 transfer(s)" in kept.output

    # Not resumed yet: retiring keeps the old key, since two transfers still use it.
    retire = runner.invoke(args=["keys", "rotate", "--resume", "--retire-old", "--batch-size", "1"])
    assert retire.exit_code == 0, retire.output
    assert "Re-wrapped 2 data key(s)" in retire.output and f"Retired key {old.current_key_id}" in retire.output
    session.expire_all()
    assert set(session.scalars(select(Transfer.key_id))) == {new_key}
    keyring = load_key_file(path)
    for transfer_id in ids:
        service.open_download(session, user(session, COUNCIL_OFFICER), transfer_id, keyring, now=utcnow())
    session.rollback()


def test_a_key_still_in_use_is_kept_and_a_data_key_that_cannot_be_rewrapped_is_reported(app, session, runner,
                                                                                          exchange):
    good = send(app, session, POLICE_OFFICER, exchange, payload(1000))
    bad = send(app, session, POLICE_OFFICER, exchange, payload(1000))
    old_key = good.key_id
    corrupt_the_wrapped_key(session, {"a": bad.id})
    session.commit()
    result = runner.invoke(args=["keys", "rotate", "--retire-old"])
    assert result.exit_code == 1, result.output
    assert "Re-wrapped 1 data key(s)" in result.output
    assert "1 transfer(s) could not be re-wrapped" in result.output and bad.id in result.output
    assert f"Kept key {old_key}: 1 transfer(s) still use it." in result.output
    keyring = load_key_file(app.config["KEYRING_FILE"])
    assert old_key in keyring.key_ids and keyring.current_key_id != old_key
    session.expire_all()
    assert session.get(Transfer, good.id).key_id == keyring.current_key_id
    assert session.get(Transfer, bad.id).key_id == old_key


def test_rotation_refuses_a_keyring_given_as_text(app, runner):
    app.config["KEYRING"] = Keyring.generate().to_json()
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code != 0 and "ACCORD_KEYRING_FILE" in result.output


# --- retention and destruction ----------------------------------------------------------------------


@pytest.fixture
def insecure_sqlite_default(app, backend, session):
    """Debian builds SQLite with secure_delete on by default; others leave it off. Switch it off
    on every connection handed out, so the purge has to ask for it itself."""
    if backend != "sqlite":
        yield
        return
    from sqlalchemy import event

    from app.extensions import db

    def _off(dbapi_connection, _record, _proxy):
        dbapi_connection.execute("PRAGMA secure_delete = OFF")

    session.commit()
    event.listen(db.engine, "checkout", _off)
    yield
    event.remove(db.engine, "checkout", _off)


def test_purge_destroys_the_key_and_chunks_after_the_deadline_and_nothing_can_be_recovered(
        app, client, session, runner, api_token, backend, exchange, insecure_sqlite_default):
    data = payload(SIZE)
    transfer = send(app, session, POLICE_OFFICER, exchange, data)
    transfer_id = transfer.id
    wrapped, ciphertext = bytes(transfer.wrapped_key), chunk(session, transfer_id, 1)
    session.commit()
    before = database_bytes(app, backend)
    assert wrapped in before or wrapped.hex().encode() in before  # the scan sees them while they exist
    assert sum(piece in before for piece in pieces(ciphertext)) > len(pieces(ciphertext)) // 4
    transfer = session.get(Transfer, transfer_id)
    # Twelve months were asked for and the protocol allows 24: kept twelve calendar months.
    assert 365 <= (transfer.retention_until - transfer.created_at).days <= 366
    headers = api_token(COUNCIL_OFFICER, "transfer")
    assert client.get(f"/api/v1/transfers/{transfer_id}/payload", headers=headers).status_code == 200

    nothing = runner.invoke(args=["transfers", "purge"])
    assert "Destroyed 0 transfer(s)" in nothing.output
    later = (utcnow() + timedelta(days=367)).strftime("%Y-%m-%dT%H:%M:%S")
    result = runner.invoke(args=["transfers", "purge", "--as-of", later])
    assert result.exit_code == 0, result.output
    assert "Destroyed 1 transfer(s)" in result.output and transfer_id in result.output
    again = runner.invoke(args=["transfers", "purge", "--as-of", later])
    assert "Destroyed 0 transfer(s)" in again.output

    session.expire_all()
    transfer = session.get(Transfer, transfer_id)
    assert transfer.wrapped_key is None and transfer.key_id is None
    assert transfer.destruction_method == "crypto_shredding" and transfer.destroyed_at is not None
    assert session.scalar(select(func.count()).select_from(TransferChunk)
                          .where(TransferChunk.transfer_id == transfer_id)) == 0
    assert audit_actions(session, transfer_id)[-1] == "transfer.destroyed"
    gone = client.get(f"/api/v1/transfers/{transfer_id}/payload", headers=headers)
    assert gone.status_code == 410 and gone.json["error"]["code"] == "transfer_destroyed"

    # With every key-encryption key in hand, nothing in the database opens it any more: neither
    # the wrapped data key nor any piece of the ciphertext is left in the file or the dump.
    keyring = keyring_for(app.config)
    assert keyring.key_ids
    session.commit()
    stored = database_bytes(app, backend)
    assert wrapped not in stored and wrapped.hex().encode() not in stored
    assert not any(piece in stored for piece in pieces(ciphertext))


def pieces(data: bytes, size: int = 32) -> list[bytes]:
    """Short windows of ``data``, both raw and as hex: a large value is split over database pages,
    so the whole of it never appears in one run, but most of these do."""
    windows = [data[i:i + size] for i in range(0, len(data) - size, 997)]
    return windows + [w.hex().encode() for w in windows]


def test_destruction_asks_the_recipient_to_confirm_and_flags_it_after_seven_days(app, client, session, api_token,
                                                                                exchange):
    downloaded = send(app, session, POLICE_OFFICER, exchange, payload(2000))
    untouched = send(app, session, POLICE_OFFICER, exchange, payload(2000))
    recipient = api_token(COUNCIL_DPO, *("read", "transfer"))
    client.get(f"/api/v1/transfers/{downloaded.id}/payload", headers=recipient)
    early = client.post(f"/api/v1/transfers/{downloaded.id}/destruction-confirmation", headers=recipient)
    assert early.status_code == 409

    deadline = as_utc(downloaded.retention_until)
    result = service.purge_expired(session, now=deadline + timedelta(minutes=1))
    session.commit()
    assert sorted(result.destroyed) == sorted([downloaded.id, untouched.id])
    assert result.confirmations_requested == 1
    asked = session.scalars(select(OutboxMessage.to_address).where(OutboxMessage.subject.like("Confirm destruction%")))
    assert set(asked) >= {COUNCIL_DPO}

    meta = client.get(f"/api/v1/transfers/{downloaded.id}", headers=recipient).json
    assert meta["status"] == "destroyed" and meta["destruction_confirmation"] == "pending"
    assert client.get(f"/api/v1/transfers/{untouched.id}", headers=recipient).json["destruction_confirmation"] \
        == "not_needed"

    eight_days_on = deadline + timedelta(days=8)
    session.expire_all()
    flagged = service.unconfirmed_destructions(session, now=eight_days_on)
    assert [t.id for t in flagged] == [downloaded.id]
    assert flagged[0].status(eight_days_on) is TransferStatus.DESTRUCTION_UNCONFIRMED
    assert session.get(Transfer, untouched.id).status(eight_days_on) is TransferStatus.DESTROYED

    sender = api_token(POLICE_OFFICER, "transfer")
    assert client.post(f"/api/v1/transfers/{downloaded.id}/destruction-confirmation",
                       headers=sender).status_code == 403
    confirmed = client.post(f"/api/v1/transfers/{downloaded.id}/destruction-confirmation", headers=recipient)
    assert confirmed.status_code == 201, confirmed.json
    assert confirmed.json["destruction_confirmation"] == "confirmed"
    assert confirmed.json["destruction_confirmed_by"] == COUNCIL_DPO
    assert client.post(f"/api/v1/transfers/{downloaded.id}/destruction-confirmation",
                       headers=recipient).status_code == 409
    session.expire_all()
    assert service.unconfirmed_destructions(session, now=eight_days_on) == []
    assert audit_actions(session, downloaded.id)[-1] == "transfer.destruction_confirmed"


def test_retention_is_capped_by_the_protocols_maximum(app, session, demo):
    # Asked for 24 months (Dartford Borough Council's maximum under the protocol) and kept 24.
    exchange = record_allowed_exchange(session, POLICE_OFFICER, "dartford-bc", retention_months=24)
    transfer = send(app, session, POLICE_OFFICER, exchange, b"data")
    assert 730 <= (transfer.retention_until - transfer.created_at).days <= 731


def test_the_purge_job_runs_the_same_service(app, session, exchange):
    from app.transfers import jobs

    send(app, session, POLICE_OFFICER, exchange, b"data")
    session.commit()
    assert jobs.purge_expired(app).destroyed == []


def test_the_purge_commits_a_batch_at_a_time_and_a_failure_keeps_what_was_destroyed(app, session, exchange,
                                                                                   monkeypatch):
    """After a pause many transfers fall due together: each batch is destroyed with its audit
    events in its own transaction, so a failure part way loses none of them, and the next run
    destroys the rest."""
    from app.audit.models import AuditEvent
    from app.transfers import jobs
    from app.transfers import service as transfers

    sent = [send(app, session, POLICE_OFFICER, exchange, b"case %d" % i).id for i in range(5)]
    for transfer in session.scalars(select(Transfer)):
        transfer.retention_until = utcnow() - timedelta(days=1)
    session.commit()
    monkeypatch.setattr(transfers, "PURGE_BATCH", 2)
    purge, calls = transfers.purge_expired, []

    def failing_third_batch(*args, **kwargs):
        calls.append(kwargs["limit"])
        if len(calls) == 3:
            raise RuntimeError("the database went away")
        return purge(*args, **kwargs)

    monkeypatch.setattr(transfers, "purge_expired", failing_third_batch)
    with pytest.raises(RuntimeError):
        jobs.purge_expired(app)
    assert calls == [2, 2, 2]

    def destroyed() -> set[str]:
        session.expire_all()
        ids = {t.id for t in session.scalars(select(Transfer).where(Transfer.destroyed_at.is_not(None)))}
        session.rollback()  # leave the database to the job (SQLite: one writer at a time)
        return ids

    def destruction_events() -> int:
        count = session.scalar(select(func.count()).select_from(AuditEvent)
                               .where(AuditEvent.action == "transfer.destroyed"))
        session.rollback()
        return count

    assert len(destroyed()) == 4 and destruction_events() == 4
    monkeypatch.setattr(transfers, "purge_expired", purge)
    assert len(jobs.purge_expired(app).destroyed) == 1
    assert destroyed() == set(sent) and destruction_events() == 5
    assert jobs.purge_expired(app).destroyed == []


# --- the plaintext never reaches the database ---------------------------------------------------------


def test_the_canary_never_reaches_the_database_file_or_a_dump(app, client, session, api_token, backend, exchange):
    data = payload(SIZE)
    sent = client.post(f"/api/v1/exchanges/{exchange.id}/transfer", data=data, headers={
        **api_token(POLICE_OFFICER, "transfer"), "Content-Type": "text/plain", "X-Accord-Filename": "notes.txt"})
    assert sent.status_code == 201
    downloaded = client.get(f"/api/v1/transfers/{sent.json['id']}/payload", headers=api_token(COUNCIL_OFFICER,
                                                                                              "transfer"))
    assert CANARY in downloaded.data
    session.commit()
    stored = database_bytes(app, backend)
    assert len(stored) > SIZE  # the ciphertext is in there
    # In halves: a value split over two pages still leaves one half whole.
    half = len(CANARY) // 2
    for piece in (CANARY[:half], CANARY[half:]):
        assert piece not in stored and piece.hex().encode() not in stored
    assert not any(piece in stored for piece in pieces(data[:65536]))


def database_bytes(app, backend: str) -> bytes:
    """Everything the database holds as bytes: the SQLite file and its WAL after a checkpoint,
    or a pg_dump of the PostgreSQL database."""
    from app.extensions import db

    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    db.session.remove()
    db.engine.dispose()
    if backend == "sqlite":
        path = Path(url.database)
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    pg_dump = postgres._binary("pg_dump")
    assert pg_dump, "pg_dump not found next to initdb"
    dumped = subprocess.run([pg_dump, "-h", url.host, "-p", str(url.port), "-U", url.username, url.database],
                            check=True, capture_output=True)
    return dumped.stdout


def test_database_bytes_would_see_a_plaintext_column(app, session, backend, exchange):
    """The scan can fail: a canary stored in clear (in the audit trail, say) is found."""
    from app.audit import service as audit

    audit.record(session, action="test.canary", actor="test", details={"note": CANARY.decode()})
    session.commit()
    assert CANARY in database_bytes(app, backend)


def test_keyring_file_is_owner_only_and_not_in_the_database(app, backend, session, exchange):
    send(app, session, POLICE_OFFICER, exchange, b"data")
    path = Path(app.config["KEYRING_FILE"])
    assert path.stat().st_mode & 0o077 == 0
    keys = json.loads(path.read_text())["keys"]
    stored = database_bytes(app, backend)
    for encoded in keys.values():
        assert encoded.encode() not in stored


def test_the_reminder_sweep_names_each_live_transfers_retention_deadline(app, session, exchange):
    from app.clock import LONDON
    from app.reminders.providers import due_items

    transfer = send(app, session, POLICE_OFFICER, exchange, b"data")
    due_on = as_utc(transfer.retention_until).astimezone(LONDON).date()
    today = utcnow().astimezone(LONDON).date()
    items = [i for i in due_items(session, today, due_on) if i.kind == "retention_deadline"]
    assert [(i.subject_id, i.due_on, i.organisations) for i in items] == [(transfer.id, due_on, ("dartford-bc",))]
    assert not [i for i in due_items(session, today, due_on - timedelta(days=1)) if i.kind == "retention_deadline"]
    service.purge_expired(session, now=as_utc(transfer.retention_until))
    session.commit()
    assert not [i for i in due_items(session, today, due_on) if i.kind == "retention_deadline"]
