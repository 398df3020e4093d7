"""``accord check`` and ``accord policies impact``: the checker from the command line."""
from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import click
from flask import Flask
from flask.cli import with_appcontext

from app.clock import utcnow
from app.errors import ValidationFailed
from app.extensions import db


@click.command("check")
@click.argument("request_file", type=click.File("r"), default="-")
@click.option("--as", "as_user", default=None, help="E-mail of the user asking (default: the first administrator)")
@with_appcontext
def check_command(request_file, as_user: str | None) -> None:
    """Read an exchange request as JSON (a file or stdin) and print the decision as JSON. Records nothing."""
    from app.auth import service as auth
    from app.auth.models import Role, User, UserRole
    from app.decisions import service

    try:
        data = json.load(request_file)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"The request is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise click.ClickException("The request must be a JSON object")
    if as_user:
        user = auth.find_user_by_email(db.session, as_user)
    else:
        user = db.session.query(User).join(UserRole).filter(UserRole.role == Role.ADMIN.value).first()
    if user is None:
        raise click.ClickException("No such user: pass --as with the e-mail of a user who may check exchanges")
    try:
        decision = service.check(db.session, user, data, now=utcnow())
    except ValidationFailed as exc:
        click.echo(json.dumps({"error": {"code": exc.code, "message": exc.message, "fields": [
            {"field": k, "message": v} for k, v in exc.errors.items()]}}, indent=2))
        sys.exit(2)
    db.session.rollback()
    click.echo(json.dumps(decision.to_dict(), indent=2))
    sys.exit(0 if decision.outcome.value in ("allow", "allow_emergency") else 1)


@click.command("impact")
@click.argument("proposed", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), required=True, help="First day, YYYY-MM-DD")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="Last day (default today)")
@with_appcontext
def impact_command(proposed: tuple[Path, ...], since, until) -> None:
    """Replay recorded requests against proposed protocol files and list every changed decision."""
    import yaml

    from app.decisions import service
    from app.policies import loader

    sources = {}
    for path in proposed:
        content = path.read_bytes()
        try:
            meta = yaml.safe_load(content) or {}
            key = f"{loader.PROTOCOLS_DIR}/{meta['subgroup']}/{meta['code']}-v{meta['version']}.yaml"
        except Exception:  # noqa: BLE001 - the loader will report it with line and field
            key = f"{loader.PROTOCOLS_DIR}/proposed/{path.name}"
        sources[key] = content
    until_day: date = (until.date() if until else utcnow().date())
    try:
        total, changes = service.impact(db.session, sources, since=since.date(), until=until_day)
    except ValidationFailed as exc:
        for field, message in exc.errors.items():
            click.echo(f"{field}: {message}", err=True)
        sys.exit(2)
    db.session.rollback()
    click.echo(f"{len(changes)} of {total} recorded request(s) would get a different answer.")
    for change in changes:
        click.echo(f"  request {change.exchange.id}: {change.before} -> {change.after}")
        for rule in change.changed_rules:
            click.echo(f"    {rule['rule']}: {rule['before']} -> {rule['after']}: {rule['message']}")


def register(app: Flask) -> None:
    from app.protocols.cli import policies_group

    app.cli.add_command(check_command)
    policies_group.add_command(impact_command)
