"""``accord policies``: check and load the policy files."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from app.extensions import db


@click.group("policies", help="Check and load the protocols and rules in policies/.")
def policies_group() -> None:
    pass


def _root(path: str | None) -> Path:
    return Path(path or current_app.config["POLICIES_DIR"])


@policies_group.command("check")
@click.option("--path", type=click.Path(file_okay=False), help="Policies folder (default: the configured one)")
@with_appcontext
def check_command(path: str | None) -> None:
    """Validate every policy file; each problem names the file, the line and the field."""
    from app.policies import loader

    problems = loader.check_policies(_root(path))
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) found.", err=True)
        sys.exit(1)
    click.echo(f"{_root(path)}: every policy file is valid.")


@policies_group.command("load")
@click.option("--path", type=click.Path(file_okay=False), help="Policies folder (default: the configured one)")
@with_appcontext
def load_command(path: str | None) -> None:
    """Store new protocol versions and rule files; refuse any change to a version already loaded."""
    from app.policies.loader import PolicyError
    from app.protocols import service

    try:
        report = service.load_policies(db.session, _root(path), actor="system:cli")
    except PolicyError as exc:
        db.session.rollback()
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    except service.PolicyLoadRefused as exc:
        db.session.rollback()
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(1)
    db.session.commit()
    click.echo(f"Policy bundle {report.bundle_hash[:12]}: {len(report.added)} protocol version(s) added, "
               f"{len(report.unchanged)} unchanged.")
    for label in report.added:
        click.echo(f"  added {label}")
    for path_ in report.documents_updated:
        click.echo(f"  updated {path_}")


def register(app: Flask) -> None:
    app.cli.add_command(policies_group)
