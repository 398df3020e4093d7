"""Two app instances (gunicorn, 2 workers each) and two schedulers on one PostgreSQL, under load.

The target on this 2-core machine: at least 300 recorded exchange submissions per second with
p99 under 100 ms at 32 concurrent clients, with no error, no lost write, an intact audit chain
and no duplicate reminder. ``ACCORD_LOAD_SECONDS`` shortens the run (default 120).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks import load

ROOT = Path(__file__).resolve().parents[1]


def run(seconds: float | None = None, clients: int = 32, instances: int = 2, workers: int = 2,
        schedulers: int = 2) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    from tests import postgres

    seconds = seconds or float(os.environ.get("ACCORD_LOAD_SECONDS", "120"))
    workdir = Path(tempfile.mkdtemp(prefix="accord-load-"))
    server = postgres.start()
    stack = None
    try:
        postgres.admin_execute(server, "CREATE DATABASE accord_load")
        stack = load.make_stack(server.url("accord_load"), workdir)
        load.prepare_keys(workdir)
        stack.accord("db", "upgrade")
        stack.accord("seed", "demo")
        token = load.create_token(stack)
        for _ in range(instances):
            stack.start_server(workers=workers)
        has_scheduler = stack.accord("scheduler", "--help", check=False).returncode == 0
        for _ in range(schedulers if has_scheduler else 0):
            stack.start_scheduler()
        # Warm every worker up so the measurement is of the steady state, not of imports.
        load.run_load(stack.ports, token, clients=clients, duration_s=3)
        result = load.run_load(stack.ports, token, clients=clients, duration_s=seconds)
        checks = load.invariants(stack.database_url, result.acknowledged_ids, load.SECRETS["ACCORD_AUDIT_HMAC_KEY"])
        checks.update(duplicate_reminders(stack.database_url))
        summary = result.summary()
        submit = summary.get("submit", {})
        return {
            "setup": {"instances": instances, "workers_per_instance": workers, "schedulers": len(stack.schedulers),
                      "clients": clients, "seconds": seconds, "database": "PostgreSQL 15 (throwaway, loopback)"},
            "load": summary,
            "invariants": checks,
            "targets": {
                "submissions_per_second>=300": (submit.get("per_second") or 0) >= 300,
                "submission_p99_ms<100": (submit.get("p99_ms") or 1e9) < 100,
                "no_errors": summary["errors_total"] == 0,
                "no_lost_writes": checks["lost"] == 0,
                "chain_ok": checks["chain_ok"],
                "no_duplicate_reminders": checks.get("duplicate_reminders", 0) == 0,
            },
        }
    finally:
        if stack is not None:
            stack.stop()
        postgres.stop(server)
        shutil.rmtree(workdir, ignore_errors=True)


def duplicate_reminders(database_url: str) -> dict[str, object]:
    """Outbox messages sent twice for the same claim and recipient (the reminders tables, if present)."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        if "outbox_messages" not in tables:
            return {"duplicate_reminders": None}
        columns = {c["name"] for c in inspect(engine).get_columns("outbox_messages")}
        key = [c for c in ("claim_id", "recipient", "to_address") if c in columns]
        if not key:
            return {"duplicate_reminders": None}
        with engine.connect() as connection:
            duplicates = connection.execute(text(
                f"SELECT count(*) FROM (SELECT {', '.join(key)} FROM outbox_messages "
                f"GROUP BY {', '.join(key)} HAVING count(*) > 1) d")).scalar()
        return {"duplicate_reminders": duplicates}
    finally:
        engine.dispose()


if __name__ == "__main__":
    print(json.dumps(run(), indent=2, default=str))
