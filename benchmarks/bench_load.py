"""Two app instances (gunicorn, 2 workers each) and two schedulers on one PostgreSQL, under load.

The target on this 2-core machine: at least 300 recorded exchange submissions per second with
p99 under 100 ms at 32 concurrent clients, with no error, no lost write, every acknowledged upload
complete and downloadable, an intact audit chain and no duplicate reminder. The database is
durable (``load.DURABLE_POSTGRES``). ``ACCORD_LOAD_SECONDS`` shortens the run (default 120),
``ACCORD_LOAD_THREADS`` sets the threads per worker (default: gunicorn.conf.py's).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import load

ROOT = Path(__file__).resolve().parents[1]


def run(seconds: float | None = None, clients: int = 32, instances: int = 2, workers: int = 2,
        schedulers: int = 2, threads: int | None = None) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    from tests import postgres

    seconds = seconds or float(os.environ.get("ACCORD_LOAD_SECONDS", "120"))
    threads = threads or int(os.environ.get("ACCORD_LOAD_THREADS", "0")) or None
    workdir = Path(tempfile.mkdtemp(prefix="accord-load-"))
    server = load.durable_postgres()
    stack = None
    try:
        postgres.admin_execute(server, "CREATE DATABASE accord_load")
        stack = load.make_stack(server.url("accord_load"), workdir)
        load.prepare_keys(workdir)
        stack.accord("db", "upgrade")
        stack.accord("seed", "demo")
        tokens = load.create_tokens(stack)
        for _ in range(instances):
            stack.start_server(workers=workers, threads=threads)
        for _ in range(schedulers):
            stack.start_scheduler()
        # Warm every worker up so the measurement is of the steady state, not of imports.
        load.run_load(stack.ports, tokens, clients=clients, duration_s=3)
        groups = [process.pid for process in stack.servers]
        postmaster = load.postmaster_pid(server.datadir)
        speed_before = load.host_speed_ms()
        cpu_before, load_before = load.cpu_seconds_by_group(groups, postmaster), os.getloadavg()
        measured_from = time.time()
        result = load.run_load(stack.ports, tokens, clients=clients, duration_s=seconds)
        measured_until = time.time()
        cpu_after, load_after = load.cpu_seconds_by_group(groups, postmaster), os.getloadavg()
        speed_after = load.host_speed_ms()
        checks = load.invariants(stack.database_url, result, load.SECRETS["ACCORD_AUDIT_HMAC_KEY"],
                                 port=stack.ports[0], tokens=tokens)
        checks.update(duplicate_reminders(stack.database_url))
        summary = result.summary()
        submissions = summary["recorded_submissions_per_second"]
        submit = summary.get("submit", {})
        return {
            "setup": {"instances": instances, "workers_per_instance": workers,
                      "threads_per_worker": threads or "gunicorn.conf.py", "schedulers": len(stack.schedulers),
                      "clients": clients, "seconds": seconds, "mix": load.MIX,
                      "database": "PostgreSQL 15 (throwaway, loopback, fsync and synchronous_commit on)"},
            "machine_load": {"loadavg_1min_before": round(load_before[0], 2),
                             "loadavg_1min_after": round(load_after[0], 2), "cpus": os.cpu_count(),
                             # The same Python on one core before and after (load.host_speed_ms):
                             # compare runs only where these are alike.
                             "host_speed_ms_before": speed_before, "host_speed_ms_after": speed_after},
            "load": summary,
            "server_side": load.server_side_ms(stack, measured_from, measured_until),
            "cpu_ms_per_recorded_submission": cpu_per_submission(cpu_before, cpu_after, result),
            "invariants": checks,
            "targets": {
                "submissions_per_second>=300": submissions >= 300,
                "submission_p99_ms<100": (submit.get("p99_ms") or 1e9) < 100,
                "no_errors": summary["errors_total"] == 0,
                "no_lost_writes": checks["lost"] == 0,
                "uploads_complete_and_downloadable": checks["uploads_incomplete"] == 0
                and checks.get("uploads_not_downloadable") == 0,
                "chain_ok": checks["chain_ok"],
                "no_duplicate_reminders": checks.get("duplicate_reminders", 0) == 0,
            },
        }
    finally:
        if stack is not None:
            stack.stop()
        postgres.stop(server)
        shutil.rmtree(workdir, ignore_errors=True)


def cpu_per_submission(before: dict[str, float], after: dict[str, float], result: load.LoadResult
                       ) -> dict[str, float | None]:
    """CPU spent per recorded submission by each party (every request of the mix included), so a
    reader can tell whether the servers, the database or the load generator ran out of cores."""
    recorded = len(result.acknowledged_ids)
    if not recorded:
        return {"app_servers": None, "postgresql": None, "load_generator": None}
    figures = {name: round((after[name] - before[name]) * 1000 / recorded, 2) for name in before}
    figures["load_generator"] = round(result.client_cpu_s * 1000 / recorded, 2)
    return figures


def duplicate_reminders(database_url: str) -> dict[str, object]:
    """Reminders that reached the same address twice: a claim listed in two digests to one address."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(database_url)
    try:
        if "reminder_audience_members" not in set(inspect(engine).get_table_names()):
            return {"duplicate_reminders": None}
        told = ("SELECT c.id, o.to_address FROM outbox_messages AS o JOIN reminder_claims AS c ON c.sweep_id = o.sweep_id "
                "JOIN reminder_audience_members AS m ON m.audience_id = c.audience_id AND m.email = o.to_address")
        with engine.connect() as connection:
            duplicates = connection.execute(text(
                f"SELECT count(*) FROM ({told}) AS t GROUP BY id, to_address HAVING count(*) > 1")).all()
            # How many there were, so that "no duplicate" is not merely "no reminder at all".
            claims = connection.execute(text("SELECT count(*) FROM reminder_claims")).scalar()
            messages = connection.execute(text("SELECT count(*) FROM outbox_messages WHERE sweep_id IS NOT NULL")
                                          ).scalar()
            listed = connection.execute(text(f"SELECT count(*) FROM ({told}) AS t")).scalar()
        return {"duplicate_reminders": len(duplicates), "reminder_claims": claims, "reminder_messages": messages,
                "reminders_mailed": listed}
    finally:
        engine.dispose()


if __name__ == "__main__":
    print(json.dumps(run(), indent=2, default=str))
