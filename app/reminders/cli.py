"""``accord reminders sweep`` and ``accord outbox deliver``: the jobs' service functions, by hand."""
from __future__ import annotations

from datetime import date

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from app.clock import today, utcnow
from app.extensions import db


@click.group("reminders", help="Renewal and review reminders.")
def reminders_group() -> None:
    pass


def _parse_date(_ctx, _param, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use the form YYYY-MM-DD, like 2026-11-22") from None


@reminders_group.command("sweep")
@click.option("--as-of", "as_of", callback=_parse_date, metavar="YYYY-MM-DD",
              help="The day to sweep for (default: today in Europe/London).")
@click.option("--dry-run", is_flag=True, help="Show what would go out, and write nothing.")
@with_appcontext
def sweep_command(as_of: date | None, dry_run: bool) -> None:
    """Claim and queue the reminders due on a day, each milestone once; or show them with --dry-run."""
    from app.reminders import service

    as_of = as_of or today()
    try:
        result = service.sweep(db.session, as_of=as_of, now=utcnow(), actor="system:cli", dry_run=dry_run)
    except BaseException:
        db.session.rollback()
        raise
    if dry_run:
        db.session.rollback()
    else:
        db.session.commit()
    verb = "would go out" if dry_run else "queued"
    click.echo(f"Reminders for {as_of.isoformat()}: {len(result.planned)} {verb}"
               + ("" if dry_run else f" ({result.claimed} claimed, {result.messages} e-mails, "
                                     f"{result.notifications} notifications)") + ".")
    for planned in result.planned:
        item, milestone = planned.item, planned.milestone
        to = ", ".join(planned.recipients.emails) or "nobody by e-mail"
        click.echo(f"  {item.due_on.isoformat()}  {milestone.code:<11} {item.kind:<18} {item.title}")
        click.echo(f"  {'':<10}  to: {to}{' (escalated to the chair)' if planned.recipients.escalated else ''}")
    if dry_run:
        click.echo("Dry run: nothing was written.")


@click.group("outbox", help="The e-mail outbox.")
def outbox_group() -> None:
    pass


@outbox_group.command("deliver")
@with_appcontext
def deliver_command() -> None:
    """Send the e-mail waiting in the outbox (each batch one transaction)."""
    from app.reminders import jobs

    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    report = jobs.deliver_outbox(app)
    if not report.configured:
        click.echo("No SMTP server is configured (ACCORD_SMTP_HOST): the e-mail stays in the outbox.")
        return
    click.echo(f"Outbox: {report.sent} sent, {report.retrying} to retry later, {report.failed} failed.")


def register(app: Flask) -> None:
    app.cli.add_command(reminders_group)
    app.cli.add_command(outbox_group)
