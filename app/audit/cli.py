"""``accord audit verify``, ``accord audit checkpoint`` and ``accord audit export``.

Each command is one transaction. ``verify`` only reads (the scheduler's nightly run is the one
that records its result in the chain); ``export`` writes the document to standard output, so a
million events stream to a file without being held in memory.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask import Flask
from flask.cli import with_appcontext

from app.clock import utcnow
from app.extensions import db


@click.group("audit", help="Verify, checkpoint and export the tamper-evident audit trail.")
def audit_group() -> None:
    pass


@audit_group.command("verify")
@click.option("--checkpoint", "checkpoint_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A published checkpoint (JSON, as /audit/checkpoint.json gives it) to compare with, instead "
                   "of the latest one stored in the database")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON")
@with_appcontext
def verify_command(checkpoint_file: Path | None, as_json: bool) -> None:
    """Recompute the whole chain; exit 1 naming the first bad event if it does not verify."""
    from app.audit import chain, service

    checkpoint = None
    if checkpoint_file is not None:
        try:
            document = json.loads(checkpoint_file.read_text())
            checkpoint = chain.Checkpoint.from_dict(document.get("checkpoint", document))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise click.ClickException(f"{checkpoint_file} is not a checkpoint: {exc}") from None
    last = service.head(db.session)
    total = 0 if last is None else last[0]
    shown = [0]
    with click.progressbar(length=total, label="Verifying the audit chain", file=sys.stderr,
                           show_pos=True) as bar:
        def progress(checked: int) -> None:
            if checked > shown[0]:
                bar.update(checked - shown[0])
                shown[0] = checked

        report = service.verify_current(db.session, progress=progress, checkpoint=checkpoint)
    db.session.rollback()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"audit chain: {'OK' if report.ok else 'FAILED'}")
        if not report.ok:
            where = "" if report.first_bad_seq is None else f" at event {report.first_bad_seq}"
            click.echo(f"problem: {report.problem}{where}")
        click.echo(report.message)
        click.echo(f"{'head' if report.ok else 'last good event'}: event {report.head_seq}, hash {report.head_hash}")
    if not report.ok:
        sys.exit(1)


@audit_group.command("checkpoint")
@with_appcontext
def checkpoint_command() -> None:
    """Sign the head of the chain (after verifying what is new since the last checkpoint)."""
    from app.audit import service

    result = service.checkpoint_job(db.session, utcnow(), actor="system:cli")
    if result.checkpoint is None:
        db.session.rollback()
        if result.report is not None and not result.report.ok:
            raise click.ClickException(f"Nothing signed: {result.reason}")
        click.echo(f"Nothing signed: {result.reason}.")
        return
    db.session.commit()
    row = result.checkpoint
    click.echo(f"Signed checkpoint {row.id}: event {row.seq}, hash {row.head_hash}, key {row.key_id}.")


@audit_group.command("export")
@click.option("--format", "output_format", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@click.option("--organisation", help="Events concerning this organisation code")
@click.option("--protocol", help="Protocol code (every version)")
@click.option("--subgroup")
@click.option("--outcome", type=click.Choice(["allow", "allow_emergency", "refer", "deny"]))
@click.option("--actor", help="E-mail or system label, exactly")
@click.option("--action", help="e.g. exchange.recorded, exactly")
@click.option("--subject-type")
@click.option("--subject-id")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), help="From this day (YYYY-MM-DD)")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d"]), help="To this day, inclusive")
@with_appcontext
def export_command(output_format: str, since, until, **filters) -> None:
    """Write the trail (or a filtered view) to standard output: ``accord audit export > trail.json``.
    An unfiltered JSON export verifies with ``python app/audit/chain.py verify trail.json``."""
    from app.audit import export, workspace
    from app.errors import ValidationFailed

    try:
        view = workspace.EventFilters(since=since.date() if since else None, until=until.date() if until else None,
                                      **{k: v for k, v in filters.items() if v})
    except ValidationFailed as exc:
        raise click.ClickException("; ".join(exc.errors.values())) from None
    chunks = (export.json_export(db.session, None, view, now=utcnow()) if output_format == "json"
              else export.csv_export(db.session, None, view))
    for chunk in chunks:
        click.echo(chunk, nl=False)
    db.session.rollback()


def register(app: Flask) -> None:
    app.cli.add_command(audit_group)
