"""The one registry of scheduled jobs: every job DESIGN §7 names, each resolvable and safe to rerun."""
from __future__ import annotations

from app.scheduler.registry import JOBS


def test_every_designed_job_is_registered_with_a_fixed_id_and_resolves():
    ids = {job.id for job in JOBS}
    assert ids == {"reminders.sweep", "outbox.deliver", "transfers.purge", "audit.checkpoint", "audit.verify"}
    for job in JOBS:
        assert callable(job.resolve()), job.id
        assert job.misfire_grace_minutes >= 5, f"{job.id}: a grace of seconds silently skips runs"


def test_scheduled_jobs_run_twice_without_changing_what_the_first_run_did(app, demo):
    for job in JOBS:
        if job.id == "outbox.deliver":
            continue  # needs an SMTP server; covered by the reminders tests
        job.resolve()(app)
    from app.audit.models import AuditCheckpoint
    from app.extensions import db
    from sqlalchemy import func, select

    checkpoints = db.session.scalar(select(func.count()).select_from(AuditCheckpoint))
    db.session.rollback()  # end this test's own transaction: jobs open their own
    assert checkpoints >= 1
    for job in JOBS:
        if job.id in ("outbox.deliver",):
            continue
        job.resolve()(app)
