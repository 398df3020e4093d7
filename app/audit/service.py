"""Appending to and reading the audit chain.

Every service that changes something calls :func:`record` in the same transaction as the
change, so the change and its audit event commit or roll back together.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import current_app
from sqlalchemy import ColumnElement, func, select, text
from sqlalchemy.orm import Session

from app.audit import chain, indexing, verification
from app.audit.models import AuditCheckpoint, AuditEvent
from app.clock import as_utc, utcnow
from app.database import insert_row, stage_insert, write_staged
from app.errors import Conflict

if TYPE_CHECKING:  # pragma: no cover
    from app.auth.models import User

#: Key of the PostgreSQL advisory lock that serialises appends (any fixed 64-bit number).
AUDIT_APPEND_LOCK = 0x4143434F5244  # "ACCORD"


def audit_key() -> bytes:
    return current_app.config["AUDIT_HMAC_KEY"].encode()


def actor_label(actor: "User | str | None") -> tuple[str | None, int | None]:
    if actor is None:
        return "system", None
    if isinstance(actor, str):
        return actor, None
    return actor.email, actor.id


#: Built once: every append runs it, and a statement's construction and cache key cost more
#: than this one takes to run.
_HEAD_LOCKED = text("SELECT seq, hash FROM audit_chain_head_locked(:key)")


#: The head's seq and hash as columns another statement returns, reading them under the lock: the
#: function takes it (again, for the second: a transaction's advisory lock is re-entrant).
_HEAD = func.audit_chain_head_locked(AUDIT_APPEND_LOCK).table_valued("seq", "hash")
_HEAD_COLUMNS = (select(_HEAD.c.seq).scalar_subquery(), select(_HEAD.c.hash).scalar_subquery())


def head_columns(session: Session) -> tuple[ColumnElement, ...]:
    """On PostgreSQL, what to add to the RETURNING of the transaction's last write before its
    audit event, so that the write also takes the chain's lock and reads its head: one round trip
    instead of two. Pass what comes back to ``record(locked_head=...)``. Nothing on SQLite, whose
    writing transactions hold the database from their BEGIN."""
    return _HEAD_COLUMNS if session.get_bind().dialect.name == "postgresql" else ()


def _locked_head(session: Session) -> tuple[int, str] | None:
    """The chain's last (seq, hash), read once concurrent appenders can no longer move it.

    PostgreSQL: a transaction-scoped advisory lock, released at commit or rollback (locking the
    last row does not serialise appends: a new row is invisible to the lock), taken and followed
    by the read in one round trip by ``audit_chain_head_locked`` (migration 0010). SQLite: writing
    transactions already began with BEGIN IMMEDIATE (``app.database``).
    """
    if session.get_bind().dialect.name == "postgresql":
        # On the session's connection: a text statement needs none of the ORM's execution path.
        head = session.connection().execute(_HEAD_LOCKED, {"key": AUDIT_APPEND_LOCK}).first()
    else:
        head = session.execute(select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
                               ).first()
    return None if head is None else (head.seq, head.hash)


def record(
    session: Session,
    *,
    action: str,
    actor: "User | str | None",
    organisation: str | None = None,
    subject_type: str | None = None,
    subject_id: str | int | None = None,
    details: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
    locked_head: tuple[int | None, str | None] | None = None,
    protocol: str | None = None,
    subgroup: str | None = None,
    outcome: str | None = None,
    counterparty: str | None = None,
) -> AuditEvent:
    """Append one event to the chain (written at once); the caller's transaction commits it.

    ``locked_head``: as for ``append``. ``protocol`` (``"code:vN"``), ``subgroup``, ``outcome``
    and ``counterparty``: as for ``draft``.
    """
    drafted = draft(action=action, actor=actor, organisation=organisation, subject_type=subject_type,
                    details=details, occurred_at=occurred_at, protocol=protocol, subgroup=subgroup,
                    outcome=outcome, counterparty=counterparty)
    return append(session, drafted, subject_id=subject_id, locked_head=locked_head)


@dataclass(frozen=True, slots=True)
class DraftEvent:
    """An audit event made ready before its transaction takes the chain's lock (``draft``)."""

    event: chain.Draft
    actor_user_id: int | None


def draft(
    *,
    action: str,
    actor: "User | str | None",
    organisation: str | None = None,
    subject_type: str | None = None,
    details: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
    protocol: str | None = None,
    subgroup: str | None = None,
    outcome: str | None = None,
    counterparty: str | None = None,
) -> DraftEvent:
    """Everything of an event but its place in the chain and its subject's id, checked and
    encoded: a service that writes its change first drafts the event, so that only the little
    ``append`` does happens while every other appender waits for the lock.

    ``protocol`` (``"code:vN"``), ``subgroup``, ``outcome`` and ``counterparty`` (the other
    organisation concerned) are written into ``details`` so the hash covers them, and copied
    into the indexed filter columns, as are those keys when ``details`` already has them.
    """
    details = _with_filter_values(details, protocol=protocol, subgroup=subgroup, outcome=outcome,
                                  counterparty=counterparty)
    label, user_id = actor_label(actor)
    return DraftEvent(chain.draft(occurred_at=occurred_at or utcnow(), action=action, actor=label,
                                  organisation=organisation, subject_type=subject_type, details=details), user_id)


def append(
    session: Session,
    drafted: DraftEvent,
    *,
    subject_id: str | int | None = None,
    locked_head: tuple[int | None, str | None] | None = None,
) -> AuditEvent:
    """Append a drafted event to the chain, written at once; the caller's transaction commits it.

    ``locked_head``: the (seq, hash) the caller's last write read through ``head_columns`` in
    this transaction, with nothing appended since; a head read any other way could fork the chain
    (which its unique constraints refuse).
    """
    _sealed, row = _sealed_row(session, drafted, subject_id, locked_head)
    return insert_row(session, AuditEvent(**row))


def append_at_commit(
    session: Session,
    drafted: DraftEvent,
    *,
    subject_id: str | int | None = None,
    locked_head: tuple[int | None, str | None] | None = None,
) -> chain.EventRecord:
    """``append`` for the transaction's last write: the event goes with the COMMIT of
    ``app.database.commit`` (``app.database.stage_insert``), so on PostgreSQL the chain's lock is
    held for one round trip after the head is read, not two. No ORM object is made for it."""
    return append_all_at_commit(session, [(drafted, subject_id)], locked_head=locked_head)[0]


def append_all_at_commit(
    session: Session,
    events: Sequence[tuple[DraftEvent, str | int | None]],
    *,
    locked_head: tuple[int | None, str | None] | None = None,
) -> list[chain.EventRecord]:
    """``append_at_commit`` for several events, (drafted event, subject id) in the order they
    take in the chain: the head is read once, and each event sealed onto the one before it.

    Whatever the caller has pending is written first, then the head read (taking the chain's
    lock): on PostgreSQL the lock is held for that round trip and the COMMIT's, however many
    events there are, instead of two round trips an event.
    """
    staged = _sealed_rows(session, events, locked_head)
    for _sealed, row in staged:
        stage_insert(session, AuditEvent.__table__, row)
    return [sealed for sealed, _row in staged]


def _sealed_row(session: Session, drafted: DraftEvent, subject_id: str | int | None,
                locked_head: tuple[int | None, str | None] | None) -> tuple[chain.EventRecord, dict[str, Any]]:
    """``drafted`` sealed onto the chain's head, and its audit_events row by column."""
    return _sealed_rows(session, [(drafted, subject_id)], locked_head)[0]


def _sealed_rows(session: Session, events: Sequence[tuple[DraftEvent, str | int | None]],
                 locked_head: tuple[int | None, str | None] | None) -> list[tuple[chain.EventRecord, dict[str, Any]]]:
    """The drafted ``events`` sealed in order onto the chain's head, each with its audit_events
    row by column."""
    if not events:
        raise ValueError("append at least one event")
    # Write what the caller has pending first, so the chain's lock is held for the append alone.
    session.flush()
    write_staged(session)
    if locked_head is None:
        head = _locked_head(session)
    else:  # read by the caller's INSERT; (None, None) while the chain is empty
        head = locked_head if locked_head[0] is not None else None
    seq, prev_hash = (head[0] + 1, head[1]) if head else (1, chain.GENESIS_HASH)
    key, sealed_rows = audit_key(), []
    for drafted, subject_id in events:
        sealed = drafted.event.seal(seq=seq, prev_hash=prev_hash,
                                    subject_id=None if subject_id is None else str(subject_id), key=key)
        columns = indexing.indexed_values(sealed.subject_type, sealed.subject_id, sealed.details)
        sealed_rows.append((sealed, {
            "seq": sealed.seq, "occurred_at": sealed.occurred_at, "action": sealed.action, "actor": sealed.actor,
            "actor_user_id": drafted.actor_user_id, "organisation": sealed.organisation,
            "subject_type": sealed.subject_type, "subject_id": sealed.subject_id, "details": sealed.details,
            "prev_hash": sealed.prev_hash, "hash": sealed.hash, "mac": sealed.mac, "protocol": columns.protocol,
            "subgroup": columns.subgroup, "outcome": columns.outcome, "counterparty": columns.counterparty,
        }))
        seq, prev_hash = seq + 1, sealed.hash
    return sealed_rows


def _with_filter_values(details: dict[str, Any] | None, **values: str | None) -> dict[str, Any]:
    """The details with the filter values given as arguments; a conflicting value is a bug."""
    merged = dict(details or {})
    keys = {"protocol": indexing.PROTOCOL_KEY, "subgroup": indexing.SUBGROUP_KEY,
            "outcome": indexing.OUTCOME_KEY, "counterparty": indexing.COUNTERPARTY_KEY}
    for name, value in values.items():
        if value is None:
            continue
        key = keys[name]
        if merged.get(key, value) != value:
            raise ValueError(f"{name}={value!r} contradicts details[{key!r}]={merged[key]!r}")
        merged[key] = value
    return merged


# --- verification and checkpoints ------------------------------------------------------------

#: Who signs checkpoints and runs the nightly verification.
SCHEDULER_ACTOR = "system:scheduler"


def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    """The checkpoint signed last (after a restore, the one signed for the restored head)."""
    return session.scalar(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1))


def as_checkpoint(row: AuditCheckpoint) -> chain.Checkpoint:
    return chain.Checkpoint(seq=row.seq, head_hash=row.head_hash, signed_at=as_utc(row.signed_at),
                            key_id=row.key_id, signature=row.signature)


def head(session: Session) -> tuple[int, str] | None:
    """The last event's (seq, hash), or None for an empty trail."""
    row = session.execute(select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)).first()
    return None if row is None else (row.seq, row.hash)


def verify(
    session: Session,
    *,
    key: bytes | None,
    checkpoint: chain.Checkpoint | None,
    public_key: Ed25519PublicKey | None,
    progress: Callable[[int], None] | None = None,
    parallel: bool = True,
) -> chain.VerifyReport:
    """Recompute the whole chain as stored and check it against ``checkpoint``.

    Streams the rows (``app.audit.verification``): a million events take seconds and little
    memory. Reports the first problem: a gap, a fork, an edited, swapped or deleted row, a
    truncated tail, a rewritten history, a forged checkpoint, or a filter column that no longer
    equals the hashed value it copies. ``key=None`` checks everything but the macs.
    """
    last = head(session)
    head_seq = 0 if last is None else last[0]
    connection = session.connection().connection.driver_connection
    database = verification.Database.from_url(session.get_bind().url)
    report = verification.fast_report(connection, database, head_seq=head_seq, key=key, checkpoint=checkpoint,
                                      public_key=public_key, progress=progress, parallel=parallel)
    if report is None:
        rows = verification.read_rows(connection, database.dialect, after=0, upto=head_seq)
        report = verification.exact_report(rows, key=key, checkpoint=checkpoint, public_key=public_key,
                                           progress=progress)
    return report


def verify_current(session: Session, *, progress: Callable[[int], None] | None = None,
                   checkpoint: chain.Checkpoint | None = None) -> chain.VerifyReport:
    """``verify`` with the configured audit key against the latest stored checkpoint (or the one
    given, such as a checkpoint published to partners)."""
    from app.audit import keys

    if checkpoint is None:
        stored = latest_checkpoint(session)
        checkpoint = None if stored is None else as_checkpoint(stored)
    public_key = None if checkpoint is None else keys.public_key()
    return verify(session, key=audit_key(), checkpoint=checkpoint, public_key=public_key, progress=progress)


def run_verification(session: Session, *, actor: "User | str", now: datetime,
                     progress: Callable[[int], None] | None = None) -> chain.VerifyReport:
    """Verify and record the result in the chain itself (``record_verification``)."""
    report = verify_current(session, progress=progress)
    record_verification(session, report, actor=actor, now=now)
    return report


def record_verification(session: Session, report: chain.VerifyReport, *, actor: "User | str",
                        now: datetime) -> AuditEvent:
    """Record what a verification found, so the trail shows when it was checked and with what
    result (a failure too: appending goes on from the head)."""
    stored = latest_checkpoint(session)
    if not report.ok:
        current_app.logger.error("audit chain verification failed at event %s: %s", report.first_bad_seq,
                                 report.message)
    return record(session, action="audit.verified", actor=actor, subject_type="audit_chain", occurred_at=now,
                  details={"ok": report.ok, "checked": report.checked, "head_seq": report.head_seq,
                           "problem": None if report.problem is None else str(report.problem),
                           "first_bad_seq": report.first_bad_seq, "macs_checked": report.macs_checked,
                           "checkpoint_seq": None if stored is None else stored.seq,
                           "checkpoint_verified": report.checkpoint_verified, "message": report.message})


def create_checkpoint(session: Session, *, now: datetime, signing_key: Ed25519PrivateKey,
                      actor: "User | str" = SCHEDULER_ACTOR) -> AuditCheckpoint:
    """Sign the head (sequence number and hash), store the checkpoint and record it.

    The checkpoint covers the head *before* its own ``audit.checkpoint`` event: an event cannot
    contain a signature over itself. That event (carrying the signature) is covered by the next
    checkpoint, so every checkpoint but the latest is itself inside a signed stretch.
    """
    current = _locked_head(session)  # the head must not move between signing and recording
    if current is None:
        raise Conflict("The audit trail is empty: there is nothing to sign yet.")
    signed = chain.sign_checkpoint(signing_key, chain.key_id_for(signing_key), current[0], current[1], now)
    row = AuditCheckpoint(seq=signed.seq, head_hash=signed.head_hash, signed_at=signed.signed_at,
                          key_id=signed.key_id, signature=signed.signature)
    session.add(row)
    session.flush()
    record(session, action="audit.checkpoint", actor=actor, subject_type="audit_checkpoint", subject_id=row.id,
           occurred_at=now, details={"seq": signed.seq, "head_hash": signed.head_hash, "key_id": signed.key_id,
                                     "signature": signed.signature})
    return row


@dataclass(frozen=True)
class CheckpointResult:
    #: The checkpoint signed, or None when nothing was (``reason`` says why).
    checkpoint: AuditCheckpoint | None
    reason: str
    report: chain.VerifyReport | None = None


def checkpoint_job(session: Session, now: datetime, *, actor: "User | str" = SCHEDULER_ACTOR) -> CheckpointResult:
    """The scheduler's (and ``accord audit checkpoint``'s) checkpoint: verify what is new since
    the last checkpoint, and sign the head only if it verifies, so a broken chain is never
    blessed. Idempotent: with nothing new since the last checkpoint, nothing is signed."""
    from app.audit import keys

    current = head(session)
    if current is None:
        return CheckpointResult(None, "the audit trail is empty")
    last = latest_checkpoint(session)
    if last is not None and current[0] <= last.seq + 1:
        newest = session.get(AuditEvent, current[0])
        if current[0] == last.seq or (newest is not None and newest.action == "audit.checkpoint"
                                      and newest.subject_id == str(last.id)):
            return CheckpointResult(None, f"nothing new since the checkpoint for event {last.seq}")
    signing_key = keys.signing_key()
    report = _verify_since(session, last, signing_key.public_key(), upto=current[0])
    if not report.ok:
        current_app.logger.error("audit checkpoint refused: %s", report.message)
        return CheckpointResult(None, f"the chain does not verify: {report.message}", report)
    return CheckpointResult(create_checkpoint(session, now=now, signing_key=signing_key, actor=actor),
                            "signed", report)


def _verify_since(session: Session, last: AuditCheckpoint | None, public_key: Ed25519PublicKey, *,
                  upto: int) -> chain.VerifyReport:
    """Verify the events after the last checkpoint, starting from its signed hash."""
    connection = session.connection().connection.driver_connection
    dialect = session.get_bind().dialect.name
    after = 0 if last is None else last.seq
    rows = verification.read_rows(connection, dialect, after=after, upto=upto)
    checkpoint = None if last is None else as_checkpoint(last)
    return verification.exact_report(rows, key=audit_key(), checkpoint=checkpoint, public_key=public_key,
                                     start_after=None if last is None else (last.seq, last.head_hash))


def verify_job(session: Session, now: datetime) -> chain.VerifyReport:
    """The scheduler's nightly verification of the whole chain, recorded in the chain."""
    return run_verification(session, actor=SCHEDULER_ACTOR, now=now)
