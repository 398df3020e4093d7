"""The retention purge as a scheduled job: one app context around the same service function
``accord transfers purge`` calls, committing a batch of transfers at a time. Re-running it
changes nothing: a destroyed transfer is never selected again."""
from __future__ import annotations

from flask import Flask

from app.clock import utcnow
from app.scheduler.transaction import in_transaction
from app.transfers import service


def purge_expired(app: Flask) -> service.PurgeResult:
    """Destroy every transfer past its retention deadline (crypto-shredding)."""
    return in_transaction(app, lambda session: service.purge_expired_in_batches(session, now=utcnow(),
                                                                                 commit=session.commit))
