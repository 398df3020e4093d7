"""The ``accord`` command: the Flask CLI with Accord's commands. Each command is one transaction."""
from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from app.clock import today, utcnow
from app.extensions import db


def main() -> None:
    from app import create_app

    cli = FlaskGroup(create_app=create_app, help="Accord: information-sharing agreement compliance.")
    cli.main(prog_name="accord")


@click.group("seed", help="Load demonstration data.")
def seed_group() -> None:
    pass


@seed_group.command("demo")
@click.option("--once", is_flag=True, help="Do nothing if the register already has organisations.")
@with_appcontext
def seed_demo_command(once: bool) -> None:
    """Load the Dartford CSP demo register, dated relative to today."""
    from app.policies import loader
    from app.protocols import service as protocols
    from app.registry import seed
    from app.registry import service as registry
    from app.registry.demo import DEMO_PASSWORD, demo_pending_signoffs

    if seed.is_seeded(db.session):
        if once:
            click.echo("The register already has organisations; the demo was not loaded again.")
            return
        raise click.ClickException("The register is not empty: seed the demo only into a new database.")
    root = current_app.config["POLICIES_DIR"]
    bundle = loader.load_bundle(Path(root))
    registry.sync_kmisa_versions(db.session, [(v.label, v.published_on, v.valid) for v in bundle.kmisa.versions],
                                 actor=seed.SEED_ACTOR)
    register = seed.seed_demo(db.session, today())
    protocols.load_policies(db.session, root, actor=seed.SEED_ACTOR)
    protocols.record_demo_sign_offs(db.session, demo_pending_signoffs(), now=utcnow())
    db.session.commit()
    click.echo(f"Loaded the Dartford demo register: {len(register.organisations)} organisations, "
               f"{len(register.signatures)} signatures, {len(register.subgroups)} subgroups.")
    click.echo(f"Demo sign-ins (password for every one: {DEMO_PASSWORD}):")
    for user in register.users:
        click.echo(f"  {user.email:<32} {', '.join(user.roles)} at {user.organisation}")


@click.group("users", help="Manage user accounts.")
def users_group() -> None:
    pass


@users_group.command("create")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--organisation", "organisation_code", required=True, help="Organisation code, e.g. kent-police")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(["admin", "coordinator", "dpo", "officer", "auditor"]))
@click.password_option(prompt="Initial password", help="At least 12 characters; prompted if omitted.")
@with_appcontext
def users_create(email: str, name: str, organisation_code: str, roles: tuple[str, ...], password: str) -> None:
    """Create a user bound to an organisation."""
    from app.auth import service
    from app.errors import ValidationFailed

    try:
        user = service.create_user(db.session, "system:cli", email=email, name=name,
                                   organisation_code=organisation_code, roles=list(roles), password=password)
    except ValidationFailed as exc:
        db.session.rollback()
        for field, message in exc.errors.items():
            click.echo(f"{field}: {message}", err=True)
        sys.exit(2)
    db.session.commit()
    click.echo(f"Created {user.email} ({', '.join(sorted(user.roles))}) at {user.organisation.code}.")


@click.group("tokens", help="Manage API tokens.")
def tokens_group() -> None:
    pass


@tokens_group.command("create")
@click.option("--user", "email", required=True, help="E-mail of the user the token acts for")
@click.option("--name", required=True, help="What the token is for")
@click.option("--scope", "scopes", multiple=True, default=("read",), show_default=True,
              type=click.Choice(["read", "check", "submit", "transfer"]))
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 366))
@with_appcontext
def tokens_create(email: str, name: str, scopes: tuple[str, ...], days: int) -> None:
    """Create an API token; it is printed once and never stored."""
    from app.auth import service, tokens

    user = service.find_user_by_email(db.session, email)
    if user is None:
        raise click.ClickException(f"There is no user with the e-mail {email!r}")
    issued = tokens.create_token(db.session, "system:cli", user, name=name, scopes=list(scopes),
                                 lifetime=timedelta(days=days), now=utcnow(),
                                 pepper=current_app.config["TOKEN_PEPPER"])
    db.session.commit()
    click.echo(issued.plaintext)
    click.echo(f"(shown once; expires {issued.token.expires_at:%Y-%m-%d})", err=True)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
@with_appcontext
def serve_command(host: str, port: int, threads: int) -> None:
    """Serve Accord with one gunicorn worker, its scheduler inside: the embedded default's server."""
    from app.serving import serve

    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    click.echo(f"Accord is running on http://{host}:{port}/ (press Ctrl+C to stop)")
    serve(app, host, port, threads)


@click.command("healthcheck")
@with_appcontext
def healthcheck_command() -> None:
    """Print the health check as JSON; exit 1 if unhealthy."""
    client = current_app.test_client()
    response = client.get("/healthz")
    click.echo(json.dumps(response.get_json(), indent=2))
    sys.exit(0 if response.status_code == 200 else 1)


def register(app: Flask) -> None:
    for command in (seed_group, users_group, tokens_group, serve_command, healthcheck_command):
        app.cli.add_command(command)
    from app.audit import cli as audit_cli
    from app.decisions import cli as decisions_cli
    from app.protocols import cli as protocols_cli
    from app.reminders import cli as reminders_cli
    from app.scheduler import cli as scheduler_cli
    from app.transfers import cli as transfers_cli

    protocols_cli.register(app)
    decisions_cli.register(app)
    audit_cli.register(app)
    reminders_cli.register(app)
    scheduler_cli.register(app)
    transfers_cli.register(app)
