"""The scheduler: one registry of jobs (``registry.JOBS``) and the runner that runs them while it leads."""
from __future__ import annotations

from app.scheduler.registry import JOBS, JobDefinition  # noqa: F401


def start_in_process(app):
    """Run the scheduler on a thread of this process (the embedded ``accord serve``)."""
    from app.scheduler.runner import start_in_process as start

    return start(app)
