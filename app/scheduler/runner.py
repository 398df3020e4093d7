"""Running the job registry: as its own process (``accord scheduler run``) or inside the server.

APScheduler 3's ``BackgroundScheduler`` with a ``MemoryJobStore`` holds the jobs (the registry is
code, so no job table is needed and schedulers starting together cannot race to create one).
It starts paused; a small loop asks the leadership every ``poll_seconds``: a standby tries to
take the lock, the leader checks it still holds it. On becoming leader every job is run at once
(a takeover or a start after downtime catches up straight away) and then on its trigger; on
losing the lock the scheduler pauses. Each run checks the lock again before it acts.
"""
from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask

from app.scheduler.leadership import leadership_for
from app.scheduler.registry import JOBS, JobDefinition

log = logging.getLogger("accord.scheduler")

DEFAULT_POLL_SECONDS = 5.0


def _trigger(definition: JobDefinition, every_seconds: float | None):
    if every_seconds is not None:
        return IntervalTrigger(seconds=every_seconds, timezone=timezone.utc)
    if definition.trigger == "interval":
        return IntervalTrigger(timezone=timezone.utc, **definition.trigger_args)
    if definition.trigger == "cron":
        return CronTrigger(timezone=timezone.utc, **definition.trigger_args)
    raise ValueError(f"unknown trigger {definition.trigger!r} for job {definition.id}")


class SchedulerRunner:
    """The job registry on an APScheduler ``BackgroundScheduler``, acting only while leader."""

    def __init__(self, app: Flask, leadership=None, jobs: Sequence[JobDefinition] = JOBS,
                 every: Mapping[str, float] | None = None, poll_seconds: float = DEFAULT_POLL_SECONDS):
        self.app = app
        self.leadership = leadership or leadership_for(app.config["SQLALCHEMY_DATABASE_URI"])
        self.jobs = tuple(jobs)
        self.poll_seconds = poll_seconds
        self.leading = False
        every = dict(every or {})
        unknown = set(every) - {job.id for job in self.jobs}
        if unknown:
            raise ValueError(f"no such job: {', '.join(sorted(unknown))}")
        self.scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(max_workers=max(len(self.jobs), 1))},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=timezone.utc,
        )
        for definition in self.jobs:
            self.scheduler.add_job(
                self._run_job, _trigger(definition, every.get(definition.id)), args=[definition],
                id=definition.id, name=definition.description or definition.id, coalesce=True, max_instances=1,
                misfire_grace_time=definition.misfire_grace_minutes * 60, replace_existing=True)

    def _run_job(self, definition: JobDefinition) -> None:
        if not self.leadership.holds():
            log.info("%s skipped: this scheduler is not the leader", definition.id)
            return
        try:
            result = definition.resolve()(self.app)
        except Exception:  # noqa: BLE001 - one failed run must not stop the scheduler; the next run retries
            log.exception("%s failed", definition.id)
            return
        log.info("%s ran: %s", definition.id, result)  # results give a one-line summary as str()

    def step(self) -> bool:
        """Check or seek leadership once; start or pause the jobs to match. Returns whether leading."""
        if self.leading:
            if not self.leadership.holds():
                self.leading = False
                self.scheduler.pause()
                log.warning("lost leadership; jobs paused (%s)", self.leadership.describe())
        elif self.leadership.try_acquire():
            self.leading = True
            now = datetime.now(timezone.utc)
            for definition in self.jobs:
                self.scheduler.modify_job(definition.id, next_run_time=now)
            self.scheduler.resume()
            log.info("leading: jobs running (%s)", self.leadership.describe())
        return self.leading

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set: the body of ``accord scheduler run`` and of the in-process thread."""
        self.scheduler.start(paused=True)
        log.info("scheduler started with jobs %s; seeking leadership every %ss",
                 ", ".join(job.id for job in self.jobs), self.poll_seconds)
        try:
            self.step()
            while not stop.wait(self.poll_seconds):
                self.step()
        finally:
            self.scheduler.shutdown(wait=True)
            self.leadership.release()
            self.leading = False
            log.info("scheduler stopped")


def start_in_process(app: Flask, poll_seconds: float = DEFAULT_POLL_SECONDS) -> tuple[SchedulerRunner, threading.Event]:
    """Run the scheduler on a daemon thread of this process (the embedded ``accord serve``).

    Only for the embedded default (``SCHEDULER_IN_PROCESS``); production runs ``accord scheduler run``
    as its own process. It still takes the advisory lock on PostgreSQL, so it is never a second leader.
    """
    runner = SchedulerRunner(app, poll_seconds=poll_seconds)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), name="accord-scheduler", daemon=True)
    thread.start()

    def _stop() -> None:
        stop.set()
        thread.join(timeout=30)

    atexit.register(_stop)
    return runner, stop
