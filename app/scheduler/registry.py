"""Every scheduled job, in one registry with fixed ids.

Each job is a function ``job(app)`` in its area's ``jobs.py``: it opens an app context and one
transaction around a service function that a command also calls, and running it twice changes
nothing the first run did. The ids are fixed so that logs, the ``accord scheduler jobs`` list
and any override (``accord scheduler run --every reminders.sweep=600``) name the same job.

Every job runs with ``coalesce=True`` (runs missed while the scheduler was paused or down
collapse into one), ``max_instances=1`` (a slow run is never overlapped by the next) and a
``misfire_grace_time`` in minutes: APScheduler's default of one second silently skips a run
that starts a moment late (DESIGN §11).

Adding a job: one more ``JobDefinition`` below, for example the ones these areas added:

- retention purge (transfers)::

      JobDefinition("transfers.purge", "app.transfers.jobs:purge_expired", "interval", {"hours": 1},
                    misfire_grace_minutes=30, description="Destroy transfers past their retention deadline")

- audit checkpoint (audit)::

      JobDefinition("audit.checkpoint", "app.audit.jobs:checkpoint", "interval", {"hours": 1},
                    misfire_grace_minutes=30, description="Sign the head of the audit chain")

- nightly audit verification (audit), a cron trigger in UTC::

      JobDefinition("audit.verify", "app.audit.jobs:verify", "cron", {"hour": 2, "minute": 30},
                    misfire_grace_minutes=6 * 60, description="Verify the whole audit chain")

The job function must follow the pattern of ``app.reminders.jobs`` (``in_transaction(app, ...)``
around the same service function its command calls).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask


@dataclass(frozen=True)
class JobDefinition:
    #: Fixed id, ``<area>.<job>``.
    id: str
    #: ``module:function`` of ``job(app)``, imported when the job runs (no import cycles at start-up).
    target: str
    #: ``interval`` or ``cron`` (APScheduler 3 trigger names).
    trigger: str
    trigger_args: Mapping[str, Any] = field(default_factory=dict)
    misfire_grace_minutes: int = 10
    description: str = ""

    def resolve(self) -> Callable[[Flask], Any]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


JOBS: tuple[JobDefinition, ...] = (
    JobDefinition("reminders.sweep", "app.reminders.jobs:sweep_reminders", "interval", {"hours": 1},
                  misfire_grace_minutes=30,
                  description="Claim and queue renewal and review reminders due today"),
    JobDefinition("outbox.deliver", "app.reminders.jobs:deliver_outbox", "interval", {"minutes": 1},
                  misfire_grace_minutes=5,
                  description="Send queued e-mail over SMTP, retrying failures with backoff"),
    JobDefinition("transfers.purge", "app.transfers.jobs:purge_expired", "interval", {"hours": 1},
                  misfire_grace_minutes=30, description="Destroy transfers past their retention deadline"),
    JobDefinition("audit.checkpoint", "app.audit.jobs:checkpoint", "interval", {"hours": 1},
                  misfire_grace_minutes=30, description="Sign the head of the audit chain"),
    JobDefinition("audit.verify", "app.audit.jobs:verify", "cron", {"hour": 2, "minute": 30},
                  misfire_grace_minutes=6 * 60, description="Verify the whole audit chain every night"),
)


def job(job_id: str) -> JobDefinition:
    for definition in JOBS:
        if definition.id == job_id:
            return definition
    raise KeyError(job_id)
