"""Exports of the audit trail that a partner, the ICO or a review can verify without Accord.

The JSON export is the document ``app/audit/chain.py`` reads (``events``, ``checkpoint``,
``public_key_pem``) with a description of the view beside it. What it proves depends on the view:

- The whole chain (no filter, by someone who sees every organisation): ``python chain.py verify
  EXPORT.json --public-key KEY.pem`` recomputes every hash and link from the first event and
  checks them against the checkpoint signed with Accord's published key. It proves the events
  up to the checkpoint are complete, in order and unaltered since they were sealed; events after
  the checkpoint are checked for consistency, but only the next checkpoint vouches for them.
- A filtered view: the events are not consecutive, so the links cannot be followed. ``chain.py
  verify --each`` recomputes each event's own hash from its content, proving each event is
  exactly as it was sealed. It cannot prove that no event is missing from the selection, nor
  (without the events between) tie the hashes to the signed checkpoint: for that, ask for the
  whole chain, or have Accord look each hash up.

Both are written as they are read, in batches, so an export of a million events streams in
bounded memory. CSV carries the same events for spreadsheets; its details column is the canonical
JSON the hash covers.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy.orm import Session

from app.audit import chain, keys, service, workspace
from app.auth.models import User

WHOLE_CHAIN = (
    "This export is the whole audit chain. Verify it without Accord: python chain.py verify "
    "EXPORT.json --public-key accord-audit-public-key.pem (chain.py is Accord's app/audit/chain.py; "
    "get the public key from Accord's /audit/public-key.pem). It recomputes every hash, link and "
    "the signed checkpoint: the events up to the checkpoint are complete and unaltered."
)
FILTERED_VIEW = (
    "This export is a filtered view, not the whole chain. python chain.py verify --each EXPORT.json "
    "recomputes each event's own hash from its content, proving each event is as it was sealed. It "
    "cannot prove that no event is missing, nor tie these events to the signed checkpoint without "
    "the events between them: export the whole chain for that."
)

CSV_COLUMNS = ("seq", "occurred_at", "action", "actor", "organisation", "subject_type", "subject_id", "details",
               "prev_hash", "hash", "mac")


def _view(session: Session, actor: User | None, filters: workspace.EventFilters):
    workspace.require_reader(actor)
    stored = service.latest_checkpoint(session)
    checkpoint = None if stored is None else service.as_checkpoint(stored)
    last = service.head(session)
    upto = 0 if last is None else last[0]
    return checkpoint, upto, workspace.is_whole_chain(filters, actor)


def json_export(session: Session, actor: User | None, filters: workspace.EventFilters, *,
                now: datetime) -> Iterator[str]:
    """The export document, in pieces (the events one by one, last, after the description)."""
    checkpoint, upto, whole = _view(session, actor, filters)
    header = {
        "format": "accord-audit-export",
        "exported_at": chain.format_timestamp(now),
        "exported_by": None if actor is None else actor.email,
        "filters": filters.as_args(),
        "whole_chain": whole,
        "statement": WHOLE_CHAIN if whole else FILTERED_VIEW,
        "checkpoint": None if checkpoint is None else checkpoint.to_dict(),
        "public_key_pem": keys.public_key_pem(),
    }
    yield json.dumps(header, ensure_ascii=False)[:-1] + ', "events": ['
    separator = "\n"
    for event in workspace.stream_events(session, actor, filters, upto=upto):
        yield separator + json.dumps(event.to_dict(), ensure_ascii=False)
        separator = ",\n"
    yield "\n]}\n"


def csv_export(session: Session, actor: User | None, filters: workspace.EventFilters) -> Iterator[str]:
    """The events of the view as CSV rows, in chain order."""
    _checkpoint, upto, _whole = _view(session, actor, filters)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for count, event in enumerate(workspace.stream_events(session, actor, filters, upto=upto), start=1):
        row = event.to_dict()
        row["details"] = json.dumps(row["details"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        writer.writerow([_cell(row[column]) for column in CSV_COLUMNS])
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _cell(value: object) -> object:
    """Neutralise spreadsheet formulas: a cell starting with = + - @ is prefixed with '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return "" if value is None else value


def checkpoint_document(session: Session) -> dict[str, object]:
    """The latest checkpoint with the public key that checks it, as the API and the page publish it."""
    stored = service.latest_checkpoint(session)
    return {
        "checkpoint": None if stored is None else service.as_checkpoint(stored).to_dict(),
        "public_key_pem": keys.public_key_pem(),
        "key_id": chain.key_id_for(keys.public_key()),
    }
