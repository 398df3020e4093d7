"""``accord keys rotate`` and ``accord transfers purge``."""
from __future__ import annotations

from datetime import datetime

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from app.clock import utcnow
from app.extensions import db


@click.group("keys", help="The keyring of key-encryption keys that wrap each transfer's data key.")
def keys_group() -> None:
    pass


@keys_group.command("status")
@with_appcontext
def keys_status_command() -> None:
    """List the key ids in the keyring and how many transfers each wraps."""
    from app.transfers import service
    from app.transfers.keys import keyring_for

    keyring = keyring_for(current_app.config)
    in_use = service.keys_in_use(db.session)
    db.session.rollback()
    for key_id in keyring.key_ids:
        marker = " (current)" if key_id == keyring.current_key_id else ""
        click.echo(f"{key_id}{marker}: wraps {in_use.get(key_id, 0)} transfer(s)")
    for key_id in sorted(set(in_use) - set(keyring.key_ids)):
        click.echo(f"{key_id} (NOT IN THE KEYRING): wraps {in_use[key_id]} transfer(s) that cannot be opened")


@keys_group.command("rotate")
@click.option("--retire-old", is_flag=True, help="Afterwards remove every old key that no transfer uses any more.")
@click.option("--resume", is_flag=True, help="Add no new key: finish re-wrapping under the current one.")
@click.option("--batch-size", default=200, show_default=True, type=click.IntRange(1, 10_000))
@with_appcontext
def keys_rotate_command(retire_old: bool, resume: bool, batch_size: int) -> None:
    """Add a new key to the key file and make it current, then re-wrap every data key under it.

    Each batch is its own transaction, so an interrupted rotation is finished with --resume.
    Payloads are never re-encrypted. An old key is removed only once no transfer uses it.
    """
    from app.transfers import service
    from app.transfers.keyring import KeyringError, save_key_file
    from app.transfers.keys import key_file_for, keyring_for

    try:
        path = key_file_for(current_app.config)
        keyring = keyring_for(current_app.config)
    except KeyringError as exc:
        raise click.ClickException(str(exc)) from None
    if not resume:
        keyring, key_id = keyring.with_new_key()
        # The file first: from now on every new transfer is wrapped under the new key.
        save_key_file(path, keyring)
        service.record_key_added(db.session, key_id)
        db.session.commit()
        click.echo(f"Added key {key_id} to {path} and made it current.")
    total = service.count_to_rewrap(db.session, keyring)
    db.session.rollback()
    with click.progressbar(length=total, label="Re-wrapping data keys", show_pos=True) as bar:
        result = service.rotate_keys(db.session, keyring, batch_size=batch_size, progress=bar.update)
    click.echo(f"Re-wrapped {result.rewrapped} data key(s) under {keyring.current_key_id}.")
    if result.failed:
        click.echo(f"{len(result.failed)} transfer(s) could not be re-wrapped (their key is missing or does not "
                   f"match): {', '.join(result.failed[:10])}{' ...' if len(result.failed) > 10 else ''}", err=True)
    if retire_old:
        _retire_unused(path, save_key_file)
    if result.failed:
        raise SystemExit(1)


def _retire_unused(path, save_key_file) -> None:
    from app.transfers import service
    from app.transfers.keyring import load_key_file

    # Re-read: another rotation may have changed the file meanwhile.
    keyring = load_key_file(path)
    in_use = service.keys_in_use(db.session)
    for key_id in keyring.key_ids:
        if key_id == keyring.current_key_id:
            continue
        if in_use.get(key_id):
            click.echo(f"Kept key {key_id}: {in_use[key_id]} transfer(s) still use it.")
            continue
        keyring = keyring.without(key_id)
        save_key_file(path, keyring)
        service.record_key_retired(db.session, key_id, current_key_id=keyring.current_key_id)
        db.session.commit()
        click.echo(f"Retired key {key_id}.")


@click.group("transfers", help="Encrypted transfers.")
def transfers_group() -> None:
    pass


@transfers_group.command("purge")
@click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
              default=None, help="Purge as if it were this moment (UTC if no offset); default now.")
@with_appcontext
def purge_command(as_of: datetime | None) -> None:
    """Destroy every transfer past its retention deadline: data key and chunks deleted (crypto-shredding).

    A batch of transfers is committed at a time: if the command stops, those destroyed stay destroyed."""
    from app.clock import as_utc
    from app.transfers import service

    now = as_utc(as_of) if as_of is not None else utcnow()
    try:
        result = service.purge_expired_in_batches(db.session, now=now, commit=db.session.commit)
    except BaseException:
        db.session.rollback()
        raise
    click.echo(f"Destroyed {len(result.destroyed)} transfer(s) ({result.chunks_deleted} chunks); asked for "
               f"{result.confirmations_requested} confirmation(s) that copies were destroyed.")
    for transfer_id in result.destroyed:
        click.echo(f"  {transfer_id}")


def register(app: Flask) -> None:
    app.cli.add_command(keys_group)
    app.cli.add_command(transfers_group)
