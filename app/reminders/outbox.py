"""The transactional outbox: e-mail written with the change that causes it, sent after commit.

A service adds :class:`OutboxMessage` rows in its own transaction (the reminder sweep writes
them with the claim), so a rolled-back change sends nothing and a committed one cannot lose
its mail. :func:`deliver` then sends what is due over SMTP, one short transaction per batch:

- On PostgreSQL the batch is claimed with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two
  deliverers (a second scheduler host, an operator running ``accord outbox deliver``) each
  take different messages and never send the same one. On SQLite the transaction already
  began with ``BEGIN IMMEDIATE`` (``app.database``), which admits one writer at a time.
- A temporary failure (server down, a 4xx reply) is retried with exponential backoff; a
  permanent refusal (a 5xx reply for the recipient) or too many attempts marks the message
  ``failed``, and it stays on the Outbox page, where it can be sent again.
- Delivery is at least once: a crash between the SMTP server accepting a message and the
  commit that marks it sent makes it go again. Every attempt carries the same Message-ID so a
  receiving system can recognise the copy.
- With no SMTP server configured (the embedded default) nothing is attempted and the mail
  waits in the outbox, visible to coordinators.

Errors are stored as the kind of failure and the SMTP code only: a server's reply text can
echo what it was sent, and no secret may reach the database or a page.
"""
from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased, selectinload

from app.reminders.models import Digest, OutboxMessage, ReminderAudienceMember, ReminderClaim
from app.reminders.text import DIGEST_LISTED

#: The first retry waits this long; each later one twice as long as the one before, up to the cap.
RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=4)
#: After this many attempts (about three days with the backoff above) a message is marked failed.
MAX_ATTEMPTS = 24
BATCH_SIZE = 50


@dataclass(frozen=True)
class MailSettings:
    server: str
    port: int = 25
    use_tls: bool = False
    username: str = ""
    password: str = ""
    sender: str = "accord@localhost"
    timeout: float = 30.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "MailSettings":
        return cls(server=config.get("MAIL_SERVER") or "", port=int(config.get("MAIL_PORT") or 25),
                   use_tls=bool(config.get("MAIL_USE_TLS")), username=config.get("MAIL_USERNAME") or "",
                   password=config.get("MAIL_PASSWORD") or "", sender=config.get("MAIL_FROM") or "accord@localhost")

    @property
    def configured(self) -> bool:
        return bool(self.server)

    def __repr__(self) -> str:  # never show the password in a log or traceback
        return f"MailSettings(server={self.server!r}, port={self.port}, use_tls={self.use_tls})"


class SmtpTransport:
    """One SMTP conversation: connect, STARTTLS when configured, log in when configured, send."""

    def __init__(self, settings: MailSettings, ssl_context: ssl.SSLContext | None = None):
        self.settings = settings
        self.ssl_context = ssl_context
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> "SmtpTransport":
        smtp = smtplib.SMTP(self.settings.server, self.settings.port, timeout=self.settings.timeout)
        try:
            smtp.ehlo()
            if self.settings.use_tls:
                smtp.starttls(context=self.ssl_context or ssl.create_default_context())
                smtp.ehlo()
            if self.settings.username:
                smtp.login(self.settings.username, self.settings.password)
        except BaseException:
            smtp.close()
            raise
        self._smtp = smtp
        return self

    def send(self, message: EmailMessage) -> None:
        assert self._smtp is not None, "use the transport as a context manager"
        self._smtp.send_message(message)

    def __exit__(self, *exc_info: object) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


@dataclass
class DeliveryReport:
    configured: bool = True
    sent: int = 0
    retrying: int = 0
    failed: int = 0

    @property
    def attempted(self) -> int:
        return self.sent + self.retrying + self.failed


def enqueue(session: Session, *, to_address: str, subject: str, body: str, now: datetime,
            claim_id: int | None = None) -> OutboxMessage:
    """Queue one e-mail in the caller's transaction; it is sent after the commit."""
    message = OutboxMessage(to_address=to_address, subject=subject, body=body, claim_id=claim_id,
                            status="pending", attempts=0, next_attempt_at=now, created_at=now)
    session.add(message)
    session.flush()
    return message


def load_digests(session: Session, rows: list[OutboxMessage], listed: int = DIGEST_LISTED) -> list[OutboxMessage]:
    """Give each digest among ``rows`` the reminders it lists, in one query: its sweep's claims
    whose audience holds its address, overdue first then by due date, the first ``listed`` of
    them, with how many there are in all. Fewer than ``text.DIGEST_LISTED`` make a digest fit to
    show its subject but not to send."""
    digests = [row for row in rows if row.sweep_id is not None and row.digest is None]
    if not digests:
        return rows
    window = {"partition_by": (ReminderClaim.sweep_id, ReminderAudienceMember.email)}
    overdue_first = case((ReminderClaim.due_on < ReminderClaim.as_of, 0), else_=1)
    ranked = (
        select(ReminderClaim, ReminderAudienceMember.email.label("email"),
               func.row_number().over(**window, order_by=(overdue_first, ReminderClaim.due_on, ReminderClaim.id))
               .label("rank"),
               func.count().over(**window).label("total"),
               func.sum(1 - overdue_first).over(**window).label("overdue"))
        .join(ReminderAudienceMember, ReminderAudienceMember.audience_id == ReminderClaim.audience_id)
        .where(ReminderClaim.sweep_id.in_({row.sweep_id for row in digests}),
               ReminderAudienceMember.email.in_({row.to_address for row in digests}))
        .subquery())
    claim = aliased(ReminderClaim, ranked)
    found: dict[tuple[int, str], Digest] = {}
    for listed, email, total, overdue in session.execute(
            select(claim, ranked.c.email, ranked.c.total, ranked.c.overdue)
            .where(ranked.c.rank <= listed).order_by(ranked.c.rank)):
        found.setdefault((listed.sweep_id, email), Digest([], int(total), int(overdue))).claims.append(listed)
    for row in digests:
        row.digest = found.get((row.sweep_id, row.to_address), Digest([], 0, 0))
    return rows


def build_email(row: OutboxMessage, sender: str, now: datetime) -> EmailMessage:
    subject, body = row.content()
    email = EmailMessage()
    email["From"] = sender
    email["To"] = row.to_address
    email["Subject"] = subject
    email["Date"] = format_datetime(now)
    email["Message-ID"] = row.message_id
    email["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to reminders
    if row.sweep_id is not None:
        email["X-Accord-Sweep"] = str(row.sweep_id)
    if row.claim_ids:  # the reminders it lists, for a receiving system to match them up
        email["X-Accord-Claims"] = " ".join(map(str, row.claim_ids))
    email.set_content(body)
    return email


def describe_error(exc: BaseException) -> str:
    """The kind of failure and the SMTP code, never the server's text."""
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({str(c) for c, _ in exc.recipients.values()})
        return f"SMTPRecipientsRefused {'/'.join(codes)}"[:200]
    return (f"{type(exc).__name__} {code}" if code else type(exc).__name__)[:200]


def _is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException) and not isinstance(exc, smtplib.SMTPAuthenticationError):
        return exc.smtp_code >= 500
    return False


def backoff(attempts: int) -> timedelta:
    """How long to wait after the ``attempts``-th failed attempt."""
    return min(RETRY_BASE * (2 ** max(attempts - 1, 0)), RETRY_CAP)


def _failed_attempt(row: OutboxMessage, exc: BaseException, now: datetime, report: DeliveryReport,
                    permanent: bool = False) -> None:
    row.attempts += 1
    row.last_attempt_at = now
    row.last_error = describe_error(exc)
    if permanent or row.attempts >= MAX_ATTEMPTS:
        row.status = "failed"
        report.failed += 1
    else:
        row.next_attempt_at = now + backoff(row.attempts)
        report.retrying += 1


def due_messages(session: Session, now: datetime, limit: int) -> list[OutboxMessage]:
    """Pending messages whose next attempt is due, locked for this transaction; rows another
    deliverer has locked are skipped rather than waited for."""
    query = (select(OutboxMessage)
             .options(selectinload(OutboxMessage.claim))
             .where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now)
             .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
             .limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=OutboxMessage)
    return load_digests(session, list(session.scalars(query)))


def deliver(session: Session, *, now: datetime, settings: MailSettings,
            transport_factory: Callable[[MailSettings], Any] = SmtpTransport,
            limit: int = BATCH_SIZE) -> DeliveryReport:
    """Send up to ``limit`` due messages over one SMTP connection; the caller commits."""
    if not settings.configured:
        return DeliveryReport(configured=False)
    report = DeliveryReport()
    rows = due_messages(session, now, limit)
    if not rows:
        return report
    transport = transport_factory(settings)
    try:
        transport.__enter__()
    except (smtplib.SMTPException, OSError) as exc:
        # Could not connect, start TLS or log in: nothing was sent, the whole batch waits.
        for row in rows:
            _failed_attempt(row, exc, now, report)
        session.flush()
        return report
    try:
        for index, row in enumerate(rows):
            try:
                transport.send(build_email(row, settings.sender, now))
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
                _failed_attempt(row, exc, now, report, permanent=_is_permanent(exc))
                continue
            except (smtplib.SMTPException, OSError) as exc:
                # The conversation broke: this message and the rest of the batch wait for a retry.
                for pending in rows[index:]:
                    _failed_attempt(pending, exc, now, report)
                break
            row.attempts += 1
            row.last_attempt_at = now
            row.status = "sent"
            row.sent_at = now
            row.last_error = None
            report.sent += 1
    finally:
        transport.__exit__(None, None, None)
    session.flush()
    return report
