"""Sending, receiving, retaining and destroying encrypted transfers (DESIGN §5).

The cipher and the keyring are pure; this module feeds them from the database in bounded
pieces. A payload of any size passes through in pieces of ``READ_SIZE`` bytes: at most one
segment of plaintext and one batch of sealed segments are held at once.

Who sees what (scoping is here, not only in the views):

- a transfer is visible only to users of its sending and its receiving organisation; to anyone
  else its id is simply not found (404), whatever their role;
- officers and DPOs of the recipient organisation download the payload and confirm the
  destruction of their copies;
- users of the sending organisation see the metadata (status, downloads, destruction) but not
  the payload: they already hold the original, and a second way out of the system for personal
  data is one more thing to audit and to lose (403 on the payload);
- officers and DPOs of the sending organisation send, and only under an exchange that may
  proceed (an approved referral only until its approval lapses).

Services flush, never commit, except :func:`rotate_keys`, which commits each batch so that an
interrupted rotation resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from sqlalchemy import delete, exists, func, insert, not_, or_, select, text
from sqlalchemy.orm import Session, joinedload, selectinload

from app.audit import service as audit
from app.auth.models import Role, User
from app.clock import LONDON, as_utc
from app.database import insert_row_reading, stage_insert
from app.decisions.models import Exchange
from app.errors import AccordError, Conflict, NotFound, NotPermitted, ValidationFailed
from app.reminders import outbox
from app.transfers.cipher import (
    SEGMENT_SIZE,
    Segment,
    SegmentEncryptor,
    TransferTampered,
    decrypt_segments,
    new_data_key,
    open_verified,
    verify_segments,
)
from app.transfers.keyring import Keyring, KeyUnwrapFailed, UnknownKeyId, WrappedKey
from app.transfers.models import Transfer, TransferChunk, TransferDownload, new_transfer_id
from app.transfers.rules import (
    CONFIRMATION_GRACE,
    TransferStatus,
    add_months,
    maximum_retention_from,
    normalise_media_type,
    retention_months,
    sanitise_filename,
)

#: Who handles payloads: sends them, downloads them, confirms their destruction.
HANDLERS = (Role.OFFICER, Role.DPO)
#: Plaintext bytes read from the upload at a time.
READ_SIZE = 256 * 1024
#: Sealed segments inserted per statement (about 1 MiB of ciphertext).
INSERT_BATCH = 16
#: Chunk rows fetched per round trip when reading a payload back.
FETCH_BATCH = 16
DESTRUCTION_METHOD = "crypto_shredding"
SYSTEM_ACTOR = "system:retention"
RECEIPT_ACTOR = "system:transfers"
KEYS_ACTOR = "system:keys"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class PayloadTooLarge(AccordError):
    status_code = 413
    code = "payload_too_large"


class TransferDestroyed(AccordError):
    status_code = 410
    code = "transfer_destroyed"


class TransferUnreadable(Conflict):
    """The stored transfer cannot be released. The boundary commits the audit event recorded
    with it before answering, so the failed attempt stays on the record."""


class TransferIntegrityFailed(TransferUnreadable):
    code = "integrity_check_failed"


class TransferKeyUnavailable(TransferUnreadable):
    code = "transfer_key_unavailable"


# --- sending -------------------------------------------------------------------------------------


def refuse_oversized(declared_length: int | None, max_bytes: int) -> None:
    """Refuse an upload whose declared length is over the limit before a byte of it is read."""
    if declared_length is not None and declared_length > max_bytes:
        raise PayloadTooLarge(_too_large_message(max_bytes))


def _too_large_message(max_bytes: int) -> str:
    return (f"The file is larger than the {_size_label(max_bytes)} Accord accepts for one transfer. "
            "Nothing was stored: split it, or send only what the exchange needs.")


def _size_label(size: int) -> str:
    for unit, factor in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"


def require_may_send(actor: User, exchange: Exchange, *, now: datetime) -> None:
    """Only officers and DPOs of the sending organisation, and only while the exchange may proceed."""
    if actor.organisation_id != exchange.from_organisation_id:
        raise NotPermitted(f"Only {exchange.from_organisation.name} can send data under exchange {exchange.id}.")
    if not actor.has_role(*HANDLERS):
        raise NotPermitted("Only an officer or a data protection officer can send a transfer.")
    if not exchange.may_proceed:
        raise Conflict(f"Exchange {exchange.id} may not proceed ({exchange.status.replace('_', ' ')}), "
                       "so no data can be sent under it.")
    resolution = exchange.resolution
    if exchange.outcome == "refer" and resolution is not None and resolution.valid_until is not None:
        today = as_utc(now).astimezone(LONDON).date()
        if today > resolution.valid_until:
            raise Conflict(f"The DPO's approval of exchange {exchange.id} lapsed on "
                           f"{resolution.valid_until:%d %B %Y}: record a new request to share again.")


def send(session: Session, actor: User, exchange: Exchange, stream: IO[bytes], *, filename: str | None,
         media_type: str | None, now: datetime, keyring: Keyring, max_bytes: int,
         expected_sha256: str | None = None) -> Transfer:
    """Encrypt ``stream`` into a new transfer under ``exchange`` and record it.

    The transfer row goes in first (its chunks refer to it), then the sealed segments in batches
    as they are produced, then the size and digest; a payload of one segment, read whole before
    anything is written, goes in as one complete row and its segment (``_send_one_segment``).
    All in the caller's transaction, so a failure at any point (too large, a digest the sender
    did not expect, a dropped connection) leaves nothing once the boundary rolls back. The audit
    event goes with the COMMIT: the caller commits with ``app.database.commit``.
    """
    require_may_send(actor, exchange, now=now)
    if expected_sha256 is not None:
        expected_sha256 = expected_sha256.strip().lower()
        if not _SHA256_HEX.fullmatch(expected_sha256):
            raise ValidationFailed({"sha256": "Give the SHA-256 of the file as 64 hexadecimal characters"})
    transfer_id = new_transfer_id()
    data_key = new_data_key()
    wrapped = keyring.wrap(data_key, transfer_id)
    months = retention_months(exchange.retention_months, maximum_retention_from(exchange.decision))
    # The organisations as loaded with the exchange, so describing the transfer loads them no more.
    transfer = Transfer(
        id=transfer_id, exchange=exchange, sender=actor, sender_organisation=exchange.from_organisation,
        recipient_organisation=exchange.to_organisation, media_type=normalise_media_type(media_type),
        filename=sanitise_filename(filename), size=0, sha256="", segment_size=SEGMENT_SIZE, segment_count=0,
        wrapped_key=wrapped.blob, key_id=wrapped.key_id, created_at=now, retention_until=add_months(now, months),
    )
    encryptor = SegmentEncryptor(data_key, transfer_id)
    pending: list[Segment] = []
    received = 0
    # Read until the first segment is sealed, which the encryptor does once it holds more than a
    # segment's worth: a payload that ends sooner is one segment, and takes the short way.
    while not pending and (piece := stream.read(READ_SIZE)):
        received = _received(received, piece, max_bytes)
        pending.extend(encryptor.update(piece))
    if not pending:
        return _send_one_segment(session, actor, exchange, transfer, encryptor, expected_sha256)

    session.add(transfer)
    session.flush()
    segment_count = 0
    while piece := stream.read(READ_SIZE):
        received = _received(received, piece, max_bytes)
        pending.extend(encryptor.update(piece))
        if len(pending) >= INSERT_BATCH:
            segment_count += _insert_chunks(session, transfer_id, pending)
            pending = []
    pending.extend(encryptor.finalize())
    segment_count += _insert_chunks(session, transfer_id, pending)
    _check_received(encryptor, expected_sha256)
    transfer.size, transfer.sha256, transfer.segment_count = encryptor.size, encryptor.sha256_hex, segment_count
    # The transaction's last write: the event goes with the COMMIT, so every other appender waits
    # for the chain's lock during the head's read and the commit only.
    audit.append_at_commit(session, _sent_event(actor, exchange, transfer), subject_id=transfer_id)
    return transfer


def _send_one_segment(session: Session, actor: User, exchange: Exchange, transfer: Transfer,
                      encryptor: SegmentEncryptor, expected_sha256: str | None) -> Transfer:
    """``send`` for a payload of one segment (most of them): the transfer's row goes in complete,
    its INSERT taking the audit chain's lock and reading its head (``audit.head_columns``), and
    the segment and the event go with the COMMIT. Three round trips, not five, and no UPDATE."""
    (index, ciphertext), = encryptor.finalize()
    _check_received(encryptor, expected_sha256)
    transfer.size, transfer.sha256, transfer.segment_count = encryptor.size, encryptor.sha256_hex, 1
    event = _sent_event(actor, exchange, transfer)
    transfer, head = insert_row_reading(session, transfer, audit.head_columns(session))
    stage_insert(session, TransferChunk.__table__,
                 {"transfer_id": transfer.id, "segment_index": index, "ciphertext": ciphertext})
    audit.append_at_commit(session, event, subject_id=transfer.id, locked_head=head or None)
    return transfer


def _received(received: int, piece: bytes, max_bytes: int) -> int:
    """The bytes received so far with ``piece``; too many, and the upload is refused."""
    received += len(piece)
    if received > max_bytes:
        raise PayloadTooLarge(_too_large_message(max_bytes))
    return received


def _check_received(encryptor: SegmentEncryptor, expected_sha256: str | None) -> None:
    if encryptor.size == 0:
        raise ValidationFailed({"payload": "The file is empty: choose the file you mean to send"})
    if expected_sha256 is not None and not hmac.compare_digest(expected_sha256, encryptor.sha256_hex):
        raise ValidationFailed({"sha256": "The file received does not match the SHA-256 you gave: it was changed "
                                          "or cut short on the way. Nothing was stored; send it again"})


def _sent_event(actor: User, exchange: Exchange, transfer: Transfer) -> audit.DraftEvent:
    return audit.draft(action="transfer.sent", actor=actor, organisation=exchange.from_organisation.code,
                       subject_type="transfer", occurred_at=transfer.created_at,
                       details={"transfer_id": transfer.id, "exchange_id": exchange.id,
                                "to_org": exchange.to_organisation.code, "size": transfer.size,
                                "sha256": transfer.sha256, "key_id": transfer.key_id,
                                "media_type": transfer.media_type,
                                "retention_until": as_utc(transfer.retention_until).isoformat()})


def _insert_chunks(session: Session, transfer_id: str, segments: list[Segment]) -> int:
    if segments:
        session.execute(insert(TransferChunk), [
            {"transfer_id": transfer_id, "segment_index": index, "ciphertext": ciphertext}
            for index, ciphertext in segments])
    return len(segments)


# --- reading, scoped -------------------------------------------------------------------------------


def _visible(query, actor: User):
    org = actor.organisation_id
    return query.where(or_(Transfer.sender_organisation_id == org, Transfer.recipient_organisation_id == org))


def get_transfer(session: Session, actor: User, transfer_id: str) -> Transfer:
    """The transfer with this id that ``actor``'s organisation sent or received; any other is not found."""
    return _find_transfer(session, actor, transfer_id,
                          selectinload(Transfer.downloads).joinedload(TransferDownload.user))


def _find_transfer(session: Session, actor: User, transfer_id: str, *loads) -> Transfer:
    transfer = session.scalar(_visible(select(Transfer), actor).where(Transfer.id == transfer_id).options(
        joinedload(Transfer.sender_organisation), joinedload(Transfer.recipient_organisation), *loads))
    if transfer is None:
        raise NotFound("There is no transfer with that id that you can see.")
    return transfer


def is_recipient(actor: User, transfer: Transfer) -> bool:
    return actor.organisation_id == transfer.recipient_organisation_id


def may_download(actor: User, transfer: Transfer) -> bool:
    return is_recipient(actor, transfer) and actor.has_role(*HANDLERS) and not transfer.is_destroyed


def _downloaded():
    return exists().where(TransferDownload.transfer_id == Transfer.id)


def _status_condition(status: TransferStatus, now: datetime):
    overdue = (Transfer.destruction_confirmation_requested_at.is_not(None)
               & Transfer.destruction_confirmed_at.is_(None)
               & (Transfer.destruction_confirmation_requested_at < now - CONFIRMATION_GRACE))
    if status is TransferStatus.SENT:
        return Transfer.destroyed_at.is_(None) & not_(_downloaded())
    if status is TransferStatus.DOWNLOADED:
        return Transfer.destroyed_at.is_(None) & _downloaded()
    if status is TransferStatus.DESTROYED:
        return Transfer.destroyed_at.is_not(None) & not_(overdue)
    return Transfer.destroyed_at.is_not(None) & overdue


@dataclass(frozen=True)
class TransferFilters:
    #: ``inbox`` (received), ``outbox`` (sent) or None for both.
    box: str | None = None
    status: TransferStatus | None = None
    exchange_id: int | None = None
    limit: int = 50


def list_transfers(session: Session, actor: User, filters: TransferFilters, *, now: datetime) -> list[Transfer]:
    """The actor's organisation's transfers, newest first."""
    org = actor.organisation_id
    query = _visible(select(Transfer), actor).options(
        joinedload(Transfer.sender_organisation), joinedload(Transfer.recipient_organisation),
        joinedload(Transfer.sender), joinedload(Transfer.destruction_confirmed_by),
        selectinload(Transfer.downloads).joinedload(TransferDownload.user))
    if filters.box == "inbox":
        query = query.where(Transfer.recipient_organisation_id == org)
    elif filters.box == "outbox":
        query = query.where(Transfer.sender_organisation_id == org)
    if filters.status is not None:
        query = query.where(_status_condition(filters.status, now))
    if filters.exchange_id is not None:
        query = query.where(Transfer.exchange_id == filters.exchange_id)
    limit = min(max(filters.limit, 1), 200)
    return list(session.scalars(query.order_by(Transfer.created_at.desc(), Transfer.id).limit(limit)).unique())


def sendable_exchanges(session: Session, actor: User, *, now: datetime, limit: int = 50) -> list[Exchange]:
    """Recent exchanges from the actor's organisation that data may now be sent under."""
    if not actor.has_role(*HANDLERS):
        return []
    candidates = session.scalars(
        select(Exchange).where(Exchange.from_organisation_id == actor.organisation_id,
                               Exchange.outcome.in_(("allow", "allow_emergency", "refer")))
        .options(joinedload(Exchange.to_organisation), selectinload(Exchange.resolution))
        .order_by(Exchange.id.desc()).limit(limit * 2))
    sendable = []
    for exchange in candidates:
        try:
            require_may_send(actor, exchange, now=now)
        except AccordError:
            continue
        sendable.append(exchange)
    return sendable[:limit]


# --- downloading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    """A verified, audited download whose plaintext is streamed by :meth:`plaintext`."""

    transfer_id: str
    filename: str
    media_type: str
    size: int
    sha256: str
    _data_key: bytes = field(repr=False)
    #: The plaintext of a transfer small enough to hold, read and verified in one pass.
    _verified: tuple[bytes, ...] | None = field(default=None, repr=False)

    def plaintext(self, session: Session) -> Iterator[bytes]:
        """Decrypt the stored segments one at a time for the response.

        This second pass runs after the audit commit, so it authenticates everything again: each
        segment, the order, the final flag, the size and the digest. The last segment is held
        back until the digest matches, so a transfer changed between the two passes can at worst
        end short of its Content-Length (the client sees a broken download); it can never
        release forged, reordered or foreign plaintext. A transfer of a few segments was verified
        whole and kept when the download was opened: it is released as it was verified.
        """
        if self._verified is not None:
            yield from self._verified
            return
        digest = hashlib.sha256()
        released = 0
        held: bytes | None = None
        for plaintext in decrypt_segments(self._data_key, self.transfer_id,
                                          stored_segments(session, self.transfer_id)):
            digest.update(plaintext)
            released += len(plaintext)
            if held is not None:
                yield held
            held = plaintext
        if released != self.size or not hmac.compare_digest(digest.hexdigest(), self.sha256):
            raise TransferTampered("the payload changed after it was verified")
        if held:
            yield held


def stored_segments(session: Session, transfer_id: str, *, batched: bool = True) -> Iterator[Segment]:
    """The chunk rows of a transfer in index order, fetched a few at a time (a server-side
    cursor on PostgreSQL), so reading back a payload of any size uses bounded memory.

    ``batched=False``: in one fetch, for a transfer known to have no more than ``FETCH_BATCH``
    segments (the server-side cursor would cost three round trips instead of one).
    """
    query = (select(TransferChunk.segment_index, TransferChunk.ciphertext)
             .where(TransferChunk.transfer_id == transfer_id)
             .order_by(TransferChunk.segment_index))
    result = session.execute(query.execution_options(yield_per=FETCH_BATCH) if batched else query)
    try:
        for index, ciphertext in result:
            yield int(index), bytes(ciphertext)
    finally:
        result.close()


def open_download(session: Session, actor: User, transfer_id: str, keyring: Keyring, *,
                  now: datetime) -> Download:
    """Verify a transfer whole, then record the download, its audit event and the sender's
    receipt; the caller commits (with ``app.database.commit``: the events go with the COMMIT)
    before streaming ``Download.plaintext``.

    Nothing is released unless every stored segment authenticates in order and the size and
    SHA-256 match what was recorded when it was sent. A failed check is itself recorded
    (``transfer.integrity_failed``) and raised as :class:`TransferUnreadable`.
    """
    # With the sender, whom the receipt goes to; not the earlier downloads, which get_transfer loads.
    transfer = _find_transfer(session, actor, transfer_id, joinedload(Transfer.sender))
    if not is_recipient(actor, transfer):
        raise NotPermitted(f"Only {transfer.recipient_organisation.name} can download this transfer; "
                           "your organisation holds the original.")
    if not actor.has_role(*HANDLERS):
        raise NotPermitted("Only an officer or a data protection officer can download a transfer.")
    if transfer.is_destroyed:
        raise TransferDestroyed(f"This transfer was destroyed on {as_utc(transfer.destroyed_at):%d %B %Y} at the end "
                                "of its retention period and can no longer be downloaded.")
    data_key = _unwrap(session, actor, transfer, keyring, now=now)
    small = transfer.segment_count <= FETCH_BATCH
    segments = stored_segments(session, transfer.id, batched=not small)
    verified = None
    try:
        if small:
            verified = tuple(open_verified(data_key, transfer.id, segments, transfer.sha256, transfer.size))
        else:
            verify_segments(data_key, transfer.id, segments, transfer.sha256, transfer.size)
    except TransferTampered as exc:
        _record_unreadable(session, actor, transfer, now=now, fault=str(exc))
        raise TransferIntegrityFailed("The transfer failed its integrity check and was not released. Nothing was "
                                      "downloaded; tell the sender and your data protection officer.") from None

    # The sender's receipt e-mail first, so that the download's INSERT, which takes the audit
    # chain's lock and reads its head, is the last write before the events and the COMMIT.
    _mail_receipt(session, transfer, now=now)
    # By its keys, not its relationships: the backref would add it to ``transfer.downloads``,
    # which the flush inside ``insert_row_reading`` would find holding an object not yet added.
    download, head = insert_row_reading(
        session, TransferDownload(transfer_id=transfer.id, user_id=actor.id, downloaded_at=now, bytes=transfer.size),
        audit.head_columns(session))
    details = {"transfer_id": transfer.id, "exchange_id": transfer.exchange_id, "download_id": download.id,
               "size": transfer.size, "sha256": transfer.sha256}
    downloaded = audit.draft(action="transfer.downloaded", actor=actor,
                             organisation=transfer.recipient_organisation.code, subject_type="transfer",
                             occurred_at=now, details=details)
    receipt = audit.draft(action="transfer.receipt", actor=RECEIPT_ACTOR,
                          organisation=transfer.sender_organisation.code, subject_type="transfer", occurred_at=now,
                          details={"transfer_id": transfer.id, "download_id": download.id,
                                   "to": transfer.sender.email,
                                   "downloaded_by_org": transfer.recipient_organisation.code})
    # The transaction's last writes, with the COMMIT: the chain's lock is held from the download's
    # INSERT to the commit, not for a round trip or two an event.
    audit.append_all_at_commit(session, [(downloaded, transfer.id), (receipt, transfer.id)], locked_head=head or None)
    return Download(transfer_id=transfer.id, filename=transfer.filename, media_type=transfer.media_type,
                    size=transfer.size, sha256=transfer.sha256, _data_key=data_key, _verified=verified)


def _unwrap(session: Session, actor: User, transfer: Transfer, keyring: Keyring, *, now: datetime) -> bytes:
    if transfer.wrapped_key is None or transfer.key_id is None:
        _record_unreadable(session, actor, transfer, now=now, fault="no wrapped data key")
        raise TransferKeyUnavailable("The transfer's data key is missing, so it cannot be opened. Nothing was "
                                     "released; tell your administrator.")
    try:
        return keyring.unwrap(WrappedKey(key_id=transfer.key_id, blob=bytes(transfer.wrapped_key)), transfer.id)
    except UnknownKeyId:
        _record_unreadable(session, actor, transfer, now=now, fault=f"key id {transfer.key_id} not in the keyring")
        raise TransferKeyUnavailable("The key that protects this transfer is not in Accord's keyring, so it cannot "
                                     "be opened. Nothing was released; tell your administrator.") from None
    except KeyUnwrapFailed:
        _record_unreadable(session, actor, transfer, now=now, fault="wrapped data key failed authentication")
        raise TransferIntegrityFailed("The transfer failed its integrity check and was not released. Nothing was "
                                      "downloaded; tell the sender and your data protection officer.") from None


def _record_unreadable(session: Session, actor: User, transfer: Transfer, *, now: datetime, fault: str) -> None:
    # The cipher's messages name the fault (a segment index, "truncated"), never any data.
    audit.record(session, action="transfer.integrity_failed", actor=actor,
                 organisation=transfer.recipient_organisation.code, subject_type="transfer",
                 subject_id=transfer.id, occurred_at=now,
                 details={"transfer_id": transfer.id, "exchange_id": transfer.exchange_id, "fault": fault,
                          "key_id": transfer.key_id})


def _mail_receipt(session: Session, transfer: Transfer, *, now: datetime) -> None:
    """Tell the sender their transfer was collected, by e-mail through the outbox (and on the
    record with the ``transfer.receipt`` event ``open_download`` appends)."""
    recipient = transfer.recipient_organisation
    when = as_utc(now).astimezone(LONDON)
    outbox.enqueue(
        session, to_address=transfer.sender.email, now=now,
        subject=f"Receipt: your transfer {transfer.id[:8]} was downloaded by {recipient.name}",
        body=(f"{recipient.name} downloaded the transfer you sent under exchange {transfer.exchange_id} on "
              f"{when:%d %B %Y at %H:%M} (UK time).\n\n"
              f"Transfer: {transfer.id}\nSize: {transfer.size} bytes\nSHA-256: {transfer.sha256}\n\n"
              "The contents matched the digest recorded when you sent it. This receipt is also in Accord's audit "
              "trail."))


# --- retention and destruction -------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeResult:
    destroyed: list[str]
    chunks_deleted: int
    confirmations_requested: int


#: Transfers destroyed per transaction by the scheduled purge and ``accord transfers purge``.
PURGE_BATCH = 25


def purge_expired_in_batches(session: Session, *, now: datetime, commit: Callable[[], None],
                             batch_size: int | None = None) -> PurgeResult:
    """``purge_expired`` ``batch_size`` transfers at a time, calling ``commit`` after each batch,
    until none past its deadline is left.

    After a pause, thousands of transfers may fall due together. Deleting all their chunks in one
    transaction would hold the database for minutes (on SQLite, every writer) and, if it failed,
    leave every one of them undestroyed, to fail again at the next run; a batch at a time, what
    is destroyed stays destroyed with its audit event, and a later run carries on. The caller owns
    the transaction, so it passes its own commit (as ``rotate_keys`` commits per batch).
    """
    batch_size = batch_size or PURGE_BATCH
    destroyed: list[str] = []
    chunks_deleted = confirmations = 0
    while True:
        batch = purge_expired(session, now=now, limit=batch_size)
        commit()
        destroyed += batch.destroyed
        chunks_deleted += batch.chunks_deleted
        confirmations += batch.confirmations_requested
        if len(batch.destroyed) < batch_size:
            return PurgeResult(destroyed, chunks_deleted, confirmations)


def purge_expired(session: Session, *, now: datetime, limit: int | None = None) -> PurgeResult:
    """Destroy every transfer past its retention deadline (crypto-shredding) and record it.

    The wrapped data key is cleared and the chunks deleted, so the payload cannot be recovered
    from the database even with every key-encryption key in hand. On SQLite the deleted content
    is overwritten (``secure_delete``) rather than left in free pages. A transfer that was
    downloaded asks the recipient to confirm it destroyed its copies. Re-running changes nothing.
    """
    query = (select(Transfer).where(Transfer.destroyed_at.is_(None), Transfer.retention_until <= now)
             .options(joinedload(Transfer.recipient_organisation), selectinload(Transfer.downloads)
                      .joinedload(TransferDownload.user))
             .order_by(Transfer.retention_until, Transfer.id))
    if limit is not None:
        query = query.limit(limit)
    expired = list(session.scalars(query).unique())
    if not expired:
        return PurgeResult([], 0, 0)
    with _secure_delete(session):
        chunks_deleted = confirmations = 0
        for transfer in expired:
            deleted = session.execute(delete(TransferChunk).where(TransferChunk.transfer_id == transfer.id))
            chunks_deleted += deleted.rowcount or 0
            destroyed_key_id = transfer.key_id
            transfer.wrapped_key = None
            transfer.key_id = None
            transfer.destroyed_at = now
            transfer.destruction_method = DESTRUCTION_METHOD
            if transfer.downloads:
                transfer.destruction_confirmation_requested_at = now
                confirmations += 1
                _ask_for_confirmation(session, transfer, now=now)
            session.flush()
            audit.record(session, action="transfer.destroyed", actor=SYSTEM_ACTOR,
                         organisation=transfer.recipient_organisation.code, subject_type="transfer",
                         subject_id=transfer.id, occurred_at=now,
                         details={"transfer_id": transfer.id, "exchange_id": transfer.exchange_id,
                                  "method": DESTRUCTION_METHOD, "key_id": destroyed_key_id,
                                  "retention_until": as_utc(transfer.retention_until).isoformat(),
                                  "chunks_deleted": deleted.rowcount or 0,
                                  "confirmation_requested": transfer.confirmation_pending})
    return PurgeResult([t.id for t in expired], chunks_deleted, confirmations)


class _secure_delete:
    """On SQLite, overwrite deleted content with zeros for the duration (PRAGMA secure_delete)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.sqlite = session.get_bind().dialect.name == "sqlite"
        self.previous: Any = None

    def __enter__(self) -> None:
        if self.sqlite:
            self.previous = self.session.execute(text("PRAGMA secure_delete")).scalar()
            self.session.execute(text("PRAGMA secure_delete = ON"))

    def __exit__(self, *exc_info: object) -> None:
        if self.sqlite and self.previous is not None:
            self.session.execute(text(f"PRAGMA secure_delete = {int(self.previous)}"))


def _ask_for_confirmation(session: Session, transfer: Transfer, *, now: datetime) -> None:
    """Ask the people who downloaded it, and their DPO, to confirm any copies were destroyed."""
    recipient = transfer.recipient_organisation
    addresses = sorted({d.user.email for d in transfer.downloads} | ({recipient.dpo_email} if recipient.dpo_email
                                                                     else set()))
    due = (as_utc(now) + CONFIRMATION_GRACE).astimezone(LONDON)
    for address in addresses:
        outbox.enqueue(
            session, to_address=address, now=now,
            subject=f"Confirm destruction of copies of transfer {transfer.id[:8]}",
            body=(f"The retention period of transfer {transfer.id} (exchange {transfer.exchange_id}) has ended and "
                  "Accord has destroyed its copy. Destroy any copies your organisation made of what was downloaded, "
                  f"then confirm it in Accord by {due:%d %B %Y}."))


def confirm_destruction(session: Session, actor: User, transfer: Transfer, *, now: datetime) -> Transfer:
    """A recipient officer or DPO confirms their organisation destroyed its copies."""
    if not is_recipient(actor, transfer):
        raise NotPermitted(f"Only {transfer.recipient_organisation.name} can confirm the destruction of its copies.")
    if not actor.has_role(*HANDLERS):
        raise NotPermitted("Only an officer or a data protection officer can confirm destruction.")
    if not transfer.is_destroyed:
        raise Conflict(f"This transfer is kept until {as_utc(transfer.retention_until):%d %B %Y}; confirm the "
                       "destruction of copies once Accord asks, after that date.")
    if transfer.destruction_confirmed_at is not None:
        raise Conflict("The destruction of copies was already confirmed.")
    if transfer.destruction_confirmation_requested_at is None:
        raise Conflict("Nobody downloaded this transfer, so there are no copies to confirm destroyed.")
    transfer.destruction_confirmed_by = actor
    transfer.destruction_confirmed_at = now
    session.flush()
    late = transfer.confirmation_overdue(now)
    audit.record(session, action="transfer.destruction_confirmed", actor=actor,
                 organisation=transfer.recipient_organisation.code, subject_type="transfer", subject_id=transfer.id,
                 occurred_at=now, details={"transfer_id": transfer.id, "exchange_id": transfer.exchange_id,
                                           "late": late})
    return transfer


def unconfirmed_destructions(session: Session, *, now: datetime, organisation_id: int | None = None) -> list[Transfer]:
    """Destroyed transfers whose recipient has not confirmed destroying its copies within the grace period."""
    query = (select(Transfer).where(_status_condition(TransferStatus.DESTRUCTION_UNCONFIRMED, now))
             .options(joinedload(Transfer.recipient_organisation), joinedload(Transfer.sender_organisation))
             .order_by(Transfer.destruction_confirmation_requested_at))
    if organisation_id is not None:
        query = query.where(or_(Transfer.sender_organisation_id == organisation_id,
                                Transfer.recipient_organisation_id == organisation_id))
    return list(session.scalars(query))


# --- key rotation -------------------------------------------------------------------------------------


@dataclass
class RotationResult:
    rewrapped: int = 0
    #: Transfers whose data key could not be unwrapped (unknown or failing key id); left as they were.
    failed: list[str] = field(default_factory=list)


def keys_in_use(session: Session) -> dict[str, int]:
    """How many live transfers each key id wraps."""
    rows = session.execute(select(Transfer.key_id, func.count()).where(Transfer.key_id.is_not(None))
                           .group_by(Transfer.key_id))
    return {key_id: count for key_id, count in rows}


def count_to_rewrap(session: Session, keyring: Keyring) -> int:
    return session.scalar(select(func.count()).select_from(Transfer).where(
        Transfer.wrapped_key.is_not(None), Transfer.key_id != keyring.current_key_id)) or 0


def rotate_keys(session: Session, keyring: Keyring, *, batch_size: int = 200,
                progress: Callable[[int], None] | None = None) -> RotationResult:
    """Re-wrap every data key not under the keyring's current key, a batch per transaction.

    Each batch is committed with its audit event, so an interrupted rotation resumes where it
    stopped when run again (only keys not yet under the current key id are selected). Payloads
    are never re-encrypted. A data key that cannot be unwrapped is left alone and reported.
    """
    result = RotationResult()
    after = ""
    current = keyring.current_key_id
    while True:
        batch = list(session.scalars(
            select(Transfer).where(Transfer.wrapped_key.is_not(None), Transfer.key_id != current,
                                   Transfer.id > after)
            .order_by(Transfer.id).limit(batch_size)))
        if not batch:
            break
        previous_ids: set[str] = set()
        rewrapped = 0
        for transfer in batch:
            try:
                wrapped = keyring.rewrap(WrappedKey(transfer.key_id, bytes(transfer.wrapped_key)), transfer.id)
            except (UnknownKeyId, KeyUnwrapFailed):
                result.failed.append(transfer.id)
                continue
            previous_ids.add(transfer.key_id)
            transfer.wrapped_key, transfer.key_id = wrapped.blob, wrapped.key_id
            rewrapped += 1
        after = batch[-1].id
        session.flush()
        if rewrapped:
            audit.record(session, action="keys.rewrapped", actor=KEYS_ACTOR, subject_type="keyring",
                         subject_id=current, details={"to_key_id": current, "from_key_ids": sorted(previous_ids),
                                                      "count": rewrapped})
        session.commit()
        result.rewrapped += rewrapped
        if progress is not None:
            progress(len(batch))
    return result


def record_key_retired(session: Session, key_id: str, *, current_key_id: str) -> None:
    audit.record(session, action="keys.retired", actor=KEYS_ACTOR, subject_type="keyring", subject_id=key_id,
                 details={"retired_key_id": key_id, "current_key_id": current_key_id})


def record_key_added(session: Session, key_id: str) -> None:
    audit.record(session, action="keys.added", actor=KEYS_ACTOR, subject_type="keyring", subject_id=key_id,
                 details={"key_id": key_id})

