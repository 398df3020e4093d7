"""``accord scheduler run``: the scheduler as its own process; ``accord scheduler jobs`` lists the registry."""
from __future__ import annotations

import logging
import signal
import threading

import click
from flask import Flask, current_app
from flask.cli import with_appcontext


@click.group("scheduler", help="The background jobs.")
def scheduler_group() -> None:
    pass


def _parse_every(_ctx, _param, values: tuple[str, ...]) -> dict[str, float]:
    every: dict[str, float] = {}
    for value in values:
        job_id, _, seconds = value.partition("=")
        try:
            every[job_id] = float(seconds)
        except ValueError:
            raise click.BadParameter(f"{value!r}: use JOB=SECONDS, like reminders.sweep=600") from None
        if every[job_id] <= 0:
            raise click.BadParameter(f"{value!r}: the interval must be positive")
    return every


@scheduler_group.command("run")
@click.option("--poll-seconds", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
              help="How often a standby tries to take the lock and the leader checks it still holds it.")
@click.option("--every", "every", multiple=True, callback=_parse_every, metavar="JOB=SECONDS",
              help="Run a job on this interval instead of its own (repeatable).")
@with_appcontext
def run_command(poll_seconds: float, every: dict[str, float]) -> None:
    """Run the jobs until stopped; with PostgreSQL only the holder of the advisory lock acts."""
    from app.scheduler.runner import SchedulerRunner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        runner = SchedulerRunner(app, every=every, poll_seconds=poll_seconds)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--every") from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"Accord scheduler running ({runner.leadership.describe()}); stop with Ctrl+C.", err=True)
    runner.run(stop)


@scheduler_group.command("jobs")
def jobs_command() -> None:
    """List the registered jobs with their ids and triggers."""
    from app.scheduler.registry import JOBS

    for job in JOBS:
        trigger = ", ".join(f"{k}={v}" for k, v in job.trigger_args.items())
        click.echo(f"{job.id:<18} {job.trigger}({trigger})  misfire grace {job.misfire_grace_minutes} min  "
                   f"{job.description}")


def register(app: Flask) -> None:
    app.cli.add_command(scheduler_group)
