"""Production as deployed: two gunicorn instances and two schedulers on one PostgreSQL, under a
short mixed load (the two-minute version with figures is ``python -m benchmarks load``).

Every acknowledged submission must be stored once with its audit event, every acknowledged
upload must be complete and downloadable intact by the recipient, the chain must verify, and no
reminder may go out twice. Bounded in time, loopback only, and everything started is stopped.
"""
from __future__ import annotations

import pytest

from benchmarks import bench_load, load
from tests import postgres


SECONDS = 8
CLIENTS = 8
#: More uploads and downloads than the benchmark's mix, so a short run surely has some.
MIX = {"submit": 0.5, "check": 0.1, "read": 0.1, "upload": 0.15, "download": 0.15}


def test_the_api_neither_reads_nor_writes_the_cookie_session(client, auth, api_token):
    """A bearer-token API answer must not vary on cookies nor refresh one; pages keep their session."""
    auth.sign_in("officer@kent-police.example")
    page = client.get("/", follow_redirects=True)
    assert page.status_code == 200 and "Cookie" in page.headers.get("Vary", "")
    answer = client.get("/api/v1/me", headers=api_token("officer@kent-police.example", "read"))
    assert answer.status_code == 200
    assert "Set-Cookie" not in answer.headers and "Cookie" not in answer.headers.get("Vary", "")


@pytest.fixture
def stack(pg_server, tmp_path):
    postgres.admin_execute(pg_server, "CREATE DATABASE accord_production")
    running = load.make_stack(pg_server.url("accord_production"), tmp_path)
    try:
        load.prepare_keys(tmp_path)
        running.accord("db", "upgrade")
        running.accord("seed", "demo")
        for _ in range(2):
            running.start_server(workers=2)
        for _ in range(2):
            running.start_scheduler()
        yield running
    finally:
        running.stop()
        postgres.admin_execute(pg_server, "DROP DATABASE IF EXISTS accord_production WITH (FORCE)")


@pytest.mark.slow
@pytest.mark.postgres
def test_two_instances_and_two_schedulers_lose_nothing_under_mixed_load(stack):
    tokens = load.create_tokens(stack)
    result = load.run_load(stack.ports, tokens, clients=CLIENTS, duration_s=SECONDS, mix=MIX)
    summary = result.summary()
    checks = load.invariants(stack.database_url, result, load.SECRETS["ACCORD_AUDIT_HMAC_KEY"],
                             port=stack.ports[1], tokens=tokens)
    checks.update(bench_load.duplicate_reminders(stack.database_url))

    assert summary["errors_total"] == 0, summary["error_samples"]
    assert checks["acknowledged"] > 0 and checks["uploads_acknowledged"] > 0, (summary, checks)
    assert checks["lost"] == 0 and checks["acknowledged_unique"] == checks["acknowledged"], checks
    # Every stored exchange, acknowledged or not, was recorded in the chain exactly once.
    assert checks["exchange_audit_events"] == checks["exchange_rows"], checks
    assert checks["uploads_incomplete"] == 0 and checks["uploads_not_downloadable"] == 0, checks
    assert checks["downloads_verified_under_load"] > 0, checks
    assert checks["chain_ok"], checks["chain_problem"]
    assert checks["duplicate_reminders"] == 0, checks
    # Both instances served: the clients are spread over them.
    assert all(process.poll() is None for process in stack.servers + stack.schedulers)
