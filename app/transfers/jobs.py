"""The retention purge as a scheduled job: one app context and one transaction around the same
service function ``accord transfers purge`` calls. Re-running it changes nothing: a destroyed
transfer is never selected again."""
from __future__ import annotations

from flask import Flask

from app.clock import utcnow
from app.scheduler.transaction import in_transaction
from app.transfers import service


def purge_expired(app: Flask) -> service.PurgeResult:
    """Destroy every transfer past its retention deadline (crypto-shredding)."""
    return in_transaction(app, lambda session: service.purge_expired(session, now=utcnow()))
