"""The audit trail as the service uses it, on PostgreSQL and on SQLite.

- appends per second with 8 concurrent writers, each event its own transaction through
  ``audit.record`` (PostgreSQL's advisory lock and SQLite's BEGIN IMMEDIATE take turns);
- ``audit.verify`` of 1,000,000 events read back from the database (target: under 5 s), in two
  processes and in one;
- a filtered page of the audit workspace at 1,000 and at 1,000,000 events (target: under
  300 ms at both): the service query the page runs, and the whole page through the test client.

The million events are sealed with ``chain.seal`` exactly as ``record`` seals them, in a realistic
mix (decisions with their outcome, protocol and subgroup; transfers; sign-ins; register changes)
spread over three years, and loaded with COPY (PostgreSQL) or executemany (SQLite), the
secondary indexes built after the load. PostgreSQL is a throwaway cluster (``tests/postgres.py``).

    python -m benchmarks.bench_audit [events]       # prints JSON; default 1,000,000
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy.schema import CreateIndex, DropIndex  # noqa: E402

from app.audit import chain, indexing  # noqa: E402

LARGE = 1_000_000
SMALL = 1_000
WRITERS = 8
PER_WRITER = 500
REPEATS = 5
AUDITOR = "auditor@dartford.example"
DPO = "dpo@kent-police.example"

#: (label, GET parameters, who) of the pages timed; each hits one index, or the organisation pair.
PAGES = (
    ("newest", {}, AUDITOR),
    ("outcome_deny", {"outcome": "deny"}, AUDITOR),
    ("protocol", {"protocol": "ocg-disruption"}, AUDITOR),
    ("subgroup_and_outcome", {"subgroup": "vcs-group", "outcome": "refer"}, AUDITOR),
    ("organisation", {"organisation": "probation-kss"}, AUDITOR),
    ("action", {"action": "transfer.destroyed"}, AUDITOR),
    ("actor", {"actor": "officer7@kent-police.example"}, AUDITOR),
    ("date_range", {"since": "1 3 {y}", "until": "31 3 {y}"}, AUDITOR),
    ("dpo_scope", {}, DPO),
    ("dpo_scope_outcome", {"outcome": "deny"}, DPO),
    ("older_page", {"before": "{mid}"}, AUDITOR),
)

ORGANISATIONS = ("kent-police", "dartford-bc", "kent-cc", "nhs-kent-medway", "probation-kss", "kent-fire-rescue",
                 "victim-support", "bluewater", "dartford-nhw")
PROTOCOLS = (("vcs-safeguarding", 2, "vcs-group"), ("vcs-safeguarding", 3, "vcs-group"),
             ("ocg-disruption", 1, "ocg-group"), ("asb-case-review", 1, "community-trigger"),
             ("csp-strategic-assessment", 1, "csp-board"))
OUTCOMES = ("allow", "allow", "allow", "refer", "deny", "allow_emergency")
DIGEST = hashlib.sha256(b"accord").hexdigest()


def run(n: int = LARGE) -> dict[str, Any]:
    from tests import postgres

    figures: dict[str, Any] = {"events": n, "writers": WRITERS, "events_per_writer": PER_WRITER}
    server = postgres.start() if postgres.unavailable_reason() is None else None
    work = Path(tempfile.mkdtemp(prefix="accord-bench-audit-"))
    try:
        if server is not None:
            postgres.admin_execute(server, "CREATE DATABASE bench_audit")
            figures["postgresql"] = _backend(server.url("bench_audit"), work / "pg", n)
        else:
            figures["postgresql"] = {"skipped": postgres.unavailable_reason()}
        figures["sqlite"] = _backend(f"sqlite:///{work / 'bench.sqlite3'}", work / "sqlite", n)
    finally:
        if server is not None:
            postgres.stop(server)
        shutil.rmtree(work, ignore_errors=True)
    figures["targets"] = {"verify_seconds": 5.0, "page_milliseconds": 300.0}
    return figures


# --------------------------------------------------------------------------- one database


def _backend(url: str, instance: Path, n: int) -> dict[str, Any]:
    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db

    instance.mkdir(parents=True, exist_ok=True)
    app = create_app("test", SQLALCHEMY_DATABASE_URI=url, KEYRING_FILE=str(instance / "keyring.json"),
                     AUDIT_SIGNING_KEY_FILE=str(instance / "signing-key.pem"), WTF_CSRF_ENABLED=False,
                     API_RATE_LIMIT=None)
    out: dict[str, Any] = {}
    with app.app_context():
        upgrade()
        result = app.test_cli_runner().invoke(args=["seed", "demo"])
        assert result.exit_code == 0, result.output
        db.session.remove()

        _append(app, SMALL)
        out["pages_at_1000"] = _pages(app)
        out["concurrent_appends"] = _concurrent_appends(app)
        started = time.perf_counter()
        _append(app, n)
        out["load_seconds"] = round(time.perf_counter() - started, 1)
        out["verify"] = _verify(app)
        out[f"pages_at_{n}"] = _pages(app)
        db.session.remove()
        db.engine.dispose()
    return out


def _append(app, total: int) -> None:
    """Seal events after the head until the chain holds ``total``, and load them in bulk."""
    from app.audit import service
    from app.audit.models import AuditEvent
    from app.extensions import db

    head = service.head(db.session)
    db.session.rollback()
    seq, prev_hash = head if head is not None else (0, chain.GENESIS_HASH)
    count = total - seq
    if count <= 0:
        return
    key = service.audit_key()
    end = datetime.now(timezone.utc) - timedelta(minutes=5)
    step = timedelta(days=3 * 365) / max(count, 1)
    first = end - step * count

    def rows():
        nonlocal prev_hash
        for i in range(1, count + 1):
            fields = _fields(seq + i)
            sealed = chain.seal(seq=seq + i, prev_hash=prev_hash, occurred_at=first + step * i, key=key, **fields)
            prev_hash = sealed.hash
            columns = indexing.indexed_values(sealed.subject_type, sealed.subject_id, sealed.details)
            yield sealed, columns

    engine = db.engine
    indexes = sorted(AuditEvent.__table__.indexes, key=lambda index: index.name)
    drops = [str(DropIndex(index).compile(dialect=engine.dialect)) for index in indexes]
    creates = [str(CreateIndex(index).compile(dialect=engine.dialect)) for index in indexes]
    raw = engine.raw_connection()  # one connection throughout: the load sees its own schema changes
    try:
        cursor = raw.driver_connection.cursor()
        if engine.dialect.name == "postgresql":
            for statement in drops:
                cursor.execute(statement)
            _copy_postgresql(cursor, rows())
            for statement in creates:
                cursor.execute(statement)
            cursor.execute("ANALYZE audit_events")
            raw.commit()
        else:
            cursor.execute("BEGIN")
            for statement in drops:
                cursor.execute(statement)
            _insert_sqlite(cursor, rows())
            for statement in creates:
                cursor.execute(statement)
            cursor.execute("COMMIT")
            cursor.execute("ANALYZE")
    finally:
        raw.close()


_COLUMNS = ("seq", "occurred_at", "action", "actor", "organisation", "subject_type", "subject_id", "details",
            "prev_hash", "hash", "mac", "protocol", "subgroup", "outcome", "counterparty")


def _canonical(details: dict) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _copy_postgresql(cursor, rows) -> None:
    with cursor.copy(f"COPY audit_events ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
        for sealed, columns in rows:
            copy.write_row((sealed.seq, sealed.occurred_at, sealed.action, sealed.actor, sealed.organisation,
                            sealed.subject_type, sealed.subject_id, _canonical(sealed.details), sealed.prev_hash,
                            sealed.hash, sealed.mac, *columns))


def _insert_sqlite(cursor, rows) -> None:
    statement = f"INSERT INTO audit_events ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"

    def values():
        for sealed, columns in rows:
            yield (sealed.seq, sealed.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f"), sealed.action, sealed.actor,
                   sealed.organisation, sealed.subject_type, sealed.subject_id, _canonical(sealed.details),
                   sealed.prev_hash, sealed.hash, sealed.mac, *columns)

    cursor.executemany(statement, values())


def _picks(seq: int) -> bytes:
    return hashlib.blake2b(seq.to_bytes(8, "big"), digest_size=8).digest()


def _fields(seq: int) -> dict[str, Any]:
    """A realistic event: four in ten are decisions, two in ten transfers, the rest sign-ins,
    register changes and sign-offs."""
    pick = _picks(seq)  # independent pseudo-random choices: no filter combination is empty by arithmetic
    org = ORGANISATIONS[pick[0] % len(ORGANISATIONS)]
    actor = f"officer{pick[1] % 40}@{org}.example"
    kind = pick[2] % 10
    if kind < 4:
        code, version, subgroup = PROTOCOLS[pick[3] % len(PROTOCOLS)]
        to_org = ORGANISATIONS[(pick[0] + 1 + pick[4] % (len(ORGANISATIONS) - 1)) % len(ORGANISATIONS)]
        outcome = OUTCOMES[pick[5] % len(OUTCOMES)]
        one_off = pick[6] % 23 == 0
        return {"action": "exchange.recorded", "actor": actor, "organisation": org, "subject_type": "exchange",
                "subject_id": str(seq), "details": {
                    "outcome": outcome, "from_org": org, "to_org": to_org, "purpose": "safeguarding_children",
                    "protocol": None if one_off else f"{code}:v{version}", "protocol_hash": None if one_off else DIGEST,
                    "subgroup": None if one_off else subgroup, "bundle_hash": DIGEST, "kmisa_versions": ["2024"],
                    "reasons": [] if outcome == "allow" else ["dpia_scope:refer", "legal_gateway:refer"],
                    "emergency": "risk_to_life" if outcome == "allow_emergency" else None}}
    if kind < 6:
        action = ("transfer.sent", "transfer.downloaded", "transfer.destroyed")[pick[3] % 3]
        transfer = hashlib.md5(str(seq // 3).encode()).hexdigest()  # noqa: S324 - an id, not security
        transfer_id = f"{transfer[:8]}-{transfer[8:12]}-{transfer[12:16]}-{transfer[16:20]}-{transfer[20:32]}"
        return {"action": action, "actor": actor if action != "transfer.destroyed" else "system:retention",
                "organisation": org, "subject_type": "transfer", "subject_id": transfer_id,
                "details": {"transfer_id": transfer_id, "exchange_id": seq - 5,
                            "to_org": ORGANISATIONS[pick[4] % len(ORGANISATIONS)],
                            "sha256": DIGEST, "size": 1000 + seq % 5000, "key_id": "k2026"}}
    if kind < 9:
        return {"action": "auth.signed_in", "actor": actor, "organisation": org, "subject_type": "user",
                "subject_id": str(seq % 400), "details": {}}
    return {"action": "organisation.updated", "actor": "coordinator@dartford.example", "organisation": org,
            "subject_type": "organisation", "subject_id": org,
            "details": {"changes": {"dpo_email": [f"old{seq}@{org}.example", f"dpo@{org}.example"]}}}


# --------------------------------------------------------------------------- measurements


def _concurrent_appends(app) -> dict[str, Any]:
    from app.audit import service
    from app.extensions import db

    before = service.head(db.session)[0]
    db.session.rollback()
    errors: list[BaseException] = []
    barrier = threading.Barrier(WRITERS)

    def writer(number: int) -> None:
        try:
            with app.app_context():
                barrier.wait()
                for i in range(PER_WRITER):
                    service.record(db.session, action="bench.appended", actor=f"writer{number}",
                                   subject_type="bench", subject_id=f"{number}-{i}", details={"i": i})
                    db.session.commit()
                db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    after = service.head(db.session)[0]
    report = service.verify(db.session, key=service.audit_key(), checkpoint=None, public_key=None)
    db.session.rollback()
    assert after - before == WRITERS * PER_WRITER and report.ok, report
    return {"events": WRITERS * PER_WRITER, "seconds": round(seconds, 2),
            "events_per_second": round(WRITERS * PER_WRITER / seconds)}


def _verify(app) -> dict[str, Any]:
    from app.audit import keys, service
    from app.clock import utcnow
    from app.extensions import db

    started = time.perf_counter()
    service.create_checkpoint(db.session, now=utcnow(), signing_key=keys.signing_key())
    db.session.commit()
    checkpoint_seconds = time.perf_counter() - started
    checkpoint = service.as_checkpoint(service.latest_checkpoint(db.session))
    public_key = keys.public_key()
    key = service.audit_key()
    db.session.rollback()
    out: dict[str, Any] = {"checkpoint_seconds": round(checkpoint_seconds, 3)}
    for label, parallel in (("two_processes", True), ("one_process", False)):
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu_before = _cpu()
        started = time.perf_counter()
        report = service.verify(db.session, key=key, checkpoint=checkpoint, public_key=public_key, parallel=parallel)
        seconds = time.perf_counter() - started
        cpu = _cpu() - cpu_before
        db.session.rollback()
        assert report.ok and report.checkpoint_verified, report
        out[label] = {"seconds": round(seconds, 2), "events": report.checked,
                      "events_per_second": round(report.checked / seconds),
                      # CPU time of this process and the child, which other work on the machine
                      # inflates far less than the wall-clock time.
                      "cpu_seconds": round(cpu, 2),
                      "load_average": round(os.getloadavg()[0], 2),
                      "peak_rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                   - rss_before) / 1024, 1)}
    out["seconds"] = out["two_processes"]["seconds"]
    return out


def _cpu() -> float:
    """Seconds of CPU used by this process and its finished children (the verifying child)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _pages(app) -> dict[str, Any]:
    from app.audit import service, workspace
    from app.audit.forms import EventFilterForm
    from app.auth import service as auth
    from app.extensions import db

    head = service.head(db.session)[0]
    year = datetime.now(timezone.utc).year - 1
    db.session.rollback()
    clients = {}
    for email in (AUDITOR, DPO):
        client = app.test_client()
        response = client.post("/sign-in", data={"email": email, "password": _demo_password()})
        assert response.status_code == 302
        clients[email] = client
    out: dict[str, Any] = {}
    for label, params, who in PAGES:
        args = {k: v.format(y=year, mid=head // 2) for k, v in params.items()}
        query = "&".join(f"{k}={part}" for k, v in args.items() for part in (v.split() if k in ("since", "until")
                                                                               else [v]))
        url = "/audit/" + (f"?{query}" if query else "")
        response = clients[who].get(url)  # warm: templates compiled, statements cached
        assert response.status_code == 200, (url, response.status_code)
        page_times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            response = clients[who].get(url)
            page_times.append(time.perf_counter() - started)
            assert response.status_code == 200
        user = auth.find_user_by_email(db.session, who)
        with app.test_request_context(url):
            from flask import request

            form = EventFilterForm(formdata=request.args if request.args else None, meta={"csrf": False})
            form.fill_choices([], [], [])
            filters = workspace.EventFilters(
                **{k: v for k, v in args.items() if k not in ("since", "until", "before")},
                since=form.since.data if "since" in args else None,
                until=form.until.data if "until" in args else None)
        before = int(args["before"]) if "before" in args else None
        query_times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            found = workspace.search_events(db.session, user, filters, before=before)
            query_times.append(time.perf_counter() - started)
        db.session.rollback()
        out[label] = {"query_ms": round(statistics.median(query_times) * 1000, 1),
                      "page_ms": round(statistics.median(page_times) * 1000, 1), "rows": len(found.events)}
    out["slowest_page_ms"] = max(v["page_ms"] for v in out.values() if isinstance(v, dict))
    out["slowest_query_ms"] = max(v["query_ms"] for v in out.values() if isinstance(v, dict) and "query_ms" in v)
    return out


def _demo_password() -> str:
    from app.registry.demo import DEMO_PASSWORD

    return DEMO_PASSWORD


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else LARGE), indent=2))
