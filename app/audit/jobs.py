"""The audit chain's scheduled jobs: an app context and a transaction around the same service
functions ``accord audit checkpoint`` and ``accord audit verify`` call. Re-running the checkpoint
with nothing new since the last one signs nothing.

The nightly verification reads the whole chain in a read-only transaction and records what it
found in a second, short one: on SQLite a writing transaction holds the database's only write
lock, and appends must not wait seconds for a verification to finish.
"""
from __future__ import annotations

from flask import Flask

from app import database
from app.audit import chain, service
from app.clock import utcnow
from app.extensions import db
from app.scheduler.transaction import in_transaction


def checkpoint(app: Flask) -> service.CheckpointResult:
    """Sign the head of the chain, once what is new since the last checkpoint verifies."""
    return in_transaction(app, lambda session: service.checkpoint_job(session, utcnow()))


def verify(app: Flask) -> chain.VerifyReport:
    """Verify the whole chain and record the result in it."""
    with app.app_context(), database.read_only():
        try:
            report = service.verify_current(db.session)
        finally:
            db.session.rollback()
    in_transaction(app, lambda session: service.record_verification(
        session, report, actor=service.SCHEDULER_ACTOR, now=utcnow()))
    return report
