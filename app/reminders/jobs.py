"""The reminder jobs: thin wrappers, one app context and one transaction around a service.

The scheduler (``app.scheduler.registry.JOBS``) and the commands (``accord reminders sweep``,
``accord outbox deliver``) call the same functions, so what runs at night is what an operator
can run by hand. Both are idempotent: the sweep claims each milestone once, and delivery only
takes messages still pending.
"""
from __future__ import annotations

from flask import Flask

from app.clock import today, utcnow
from app.reminders import outbox, service
from app.scheduler.transaction import in_transaction

#: Batches one delivery run sends at most, each in its own transaction (so a crash resends one batch at most).
MAX_BATCHES_PER_RUN = 20


def sweep_reminders(app: Flask) -> service.SweepResult:
    """Claim and queue every reminder due today (Europe/London)."""
    return in_transaction(app, lambda session: service.sweep(session, as_of=today(), now=utcnow()))


def deliver_outbox(app: Flask, transport_factory=outbox.SmtpTransport) -> outbox.DeliveryReport:
    """Send what is due in the outbox, batch by batch, until nothing due is left."""
    settings = outbox.MailSettings.from_config(app.config)
    total = outbox.DeliveryReport(configured=settings.configured)
    if not settings.configured:
        return total
    for _ in range(MAX_BATCHES_PER_RUN):
        report = in_transaction(app, lambda session: outbox.deliver(
            session, now=utcnow(), settings=settings, transport_factory=transport_factory))
        total.sent += report.sent
        total.retrying += report.retrying
        total.failed += report.failed
        if report.attempted < outbox.BATCH_SIZE:
            break
    return total
