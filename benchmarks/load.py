"""The production load scenario: app instances and schedulers on one PostgreSQL, under a bounded load.

Used by ``benchmarks/bench_load.py`` (the two-minute run with figures) and by
``tests/test_production.py`` (a short run that asserts the invariants). Everything listens on
127.0.0.1 only, every loop is bounded in count and time, and everything started is stopped.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SECRETS = {
    "ACCORD_SECRET_KEY": "load-session-key-not-secret",
    "ACCORD_TOKEN_PEPPER": "load-token-pepper-not-secret",
    "ACCORD_AUDIT_HMAC_KEY": "load-audit-key-not-secret",
}

ALLOWED = {
    "from_org": "kent-police", "to_org": "dartford-bc", "protocol": {"code": "vcs-safeguarding", "version": 2},
    "purpose": "safeguarding_children", "data_categories": ["identity", "contact"], "subject_types": ["child"],
    "transfer_method": "accord_transfer", "lawful_basis": "e", "legal_gateway": "cda-1998-s115",
    "retention_months": 12,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    """Processes started for a run; ``stop()`` ends them all."""

    database_url: str
    env: dict[str, str]
    workdir: Path
    ports: list[int] = field(default_factory=list)
    servers: list[subprocess.Popen] = field(default_factory=list)
    schedulers: list[subprocess.Popen] = field(default_factory=list)

    def accord(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "accord"), *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
                              check=check, timeout=300)

    def start_server(self, workers: int = 2, threads: int = 4) -> int:
        port = free_port()
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
             "--workers", str(workers), "--threads", str(threads), "app:create_app()"],
            env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(self.workdir / f"server-{port}.log", "w"),
            start_new_session=True)
        self.servers.append(process)
        self.ports.append(port)
        wait_ready(port)
        return port

    def start_scheduler(self) -> subprocess.Popen:
        index = len(self.schedulers)
        process = subprocess.Popen([str(BIN / "accord"), "scheduler", "run"], env=self.env, cwd=ROOT,
                                   stdout=subprocess.DEVNULL,
                                   stderr=open(self.workdir / f"scheduler-{index}.log", "w"), start_new_session=True)
        self.schedulers.append(process)
        return process

    def stop(self) -> None:
        for process in self.servers + self.schedulers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.servers + self.schedulers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def make_stack(database_url: str, workdir: Path, **extra_env: str) -> Stack:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env.update(SECRETS)
    env.update({
        "ACCORD_ENV": "production", "ACCORD_DATABASE_URL": database_url, "ACCORD_SECURE_COOKIES": "0",
        "ACCORD_KEYRING_FILE": str(workdir / "keyring.json"),
        "ACCORD_AUDIT_SIGNING_KEY_FILE": str(workdir / "audit-signing-key.pem"),
        "ACCORD_LOG_ACCESS": "0", "ACCORD_API_RATE_LIMIT": "1000000/minute",
        "PATH": f"{BIN}:{env.get('PATH', '')}",
    })
    env.update(extra_env)
    return Stack(database_url=database_url, env=env, workdir=workdir)


def prepare_keys(workdir: Path) -> None:
    """Production needs its keys made beforehand: a keyring and an audit signing key, owner-only."""
    sys.path.insert(0, str(ROOT))
    from app.audit import chain
    from app.transfers.keyring import load_or_create_key_file

    load_or_create_key_file(workdir / "keyring.json")
    if not (workdir / "audit-signing-key.pem").exists():
        chain.generate_signing_key_file(workdir / "audit-signing-key.pem")


def wait_ready(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/livez")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} did not start within {timeout} s")


@dataclass
class LoadResult:
    duration_s: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: list[str] = field(default_factory=list)
    acknowledged_ids: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        result: dict[str, object] = {"duration_s": round(self.duration_s, 1)}
        for kind, values in sorted(self.latencies.items()):
            ordered = sorted(values)
            result[kind] = {
                "requests": len(values),
                "per_second": round(len(values) / self.duration_s, 1),
                "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1) if ordered else None,
                "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 1) if ordered else None,
                "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1) if ordered else None,
                "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else None,
                "errors": self.errors.get(kind, 0),
            }
        result["errors_total"] = sum(self.errors.values())
        result["error_samples"] = self.error_samples[:5]
        return result


def run_load(ports: list[int], token: str, *, clients: int, duration_s: float,
             mix: dict[str, float] | None = None, max_requests_per_client: int = 100_000,
             extra: dict[str, callable] | None = None) -> LoadResult:
    """``clients`` threads with keep-alive connections, round-robin over ``ports``, until ``duration_s``."""
    mix = mix or {"submit": 0.7, "check": 0.2, "read": 0.1}
    kinds, weights = zip(*mix.items())
    result = LoadResult(duration_s=duration_s)
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps(ALLOWED).encode()
    stop_at = time.monotonic() + duration_s

    def client(index: int) -> None:
        rng = random.Random(index)
        port = ports[index % len(ports)]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local: dict[str, list[float]] = defaultdict(list)
        errors: dict[str, int] = defaultdict(int)
        samples: list[str] = []
        acknowledged: list[int] = []
        recent: list[int] = []
        for _ in range(max_requests_per_client):
            if time.monotonic() >= stop_at:
                break
            kind = rng.choices(kinds, weights)[0]
            if kind == "read" and not recent:
                kind = "submit"
            started = time.perf_counter()
            try:
                if kind == "submit":
                    connection.request("POST", "/api/v1/exchanges", body=body, headers=headers)
                elif kind == "check":
                    connection.request("POST", "/api/v1/exchanges/check", body=body, headers=headers)
                elif kind == "read":
                    connection.request("GET", f"/api/v1/exchanges/{rng.choice(recent)}", headers=headers)
                elif extra and kind in extra:
                    extra[kind](connection, headers, recent, rng)
                response = connection.getresponse()
                payload = response.read()
                elapsed = time.perf_counter() - started
                expected = 201 if kind == "submit" else 200
                if response.status != expected:
                    errors[kind] += 1
                    samples.append(f"{kind}: {response.status} {payload[:200]!r}")
                    continue
                local[kind].append(elapsed)
                if kind == "submit":
                    exchange_id = json.loads(payload)["id"]
                    acknowledged.append(exchange_id)
                    recent.append(exchange_id)
                    del recent[:-50]
            except (OSError, http.client.HTTPException) as exc:
                errors[kind] += 1
                samples.append(f"{kind}: {type(exc).__name__}: {exc}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.close()
        with lock:
            for kind, values in local.items():
                result.latencies[kind].extend(values)
            for kind, count in errors.items():
                result.errors[kind] += count
            result.error_samples.extend(samples)
            result.acknowledged_ids.extend(acknowledged)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration_s + 120)
    result.duration_s = time.monotonic() - started
    return result


def create_token(stack: Stack, email: str = "officer@kent-police.example") -> str:
    created = stack.accord("tokens", "create", "--user", email, "--name", "load", "--scope", "read",
                           "--scope", "check", "--scope", "submit", "--scope", "transfer", "--days", "1")
    return created.stdout.strip().splitlines()[0]


def invariants(database_url: str, acknowledged_ids: list[int], audit_key: str) -> dict[str, object]:
    """Every acknowledged submission stored once, and the audit chain intact."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import create_engine, text

    from app.audit import chain

    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored = set(connection.execute(text("SELECT id FROM exchanges")).scalars())
        recorded_events = connection.execute(text(
            "SELECT count(*) FROM audit_events WHERE action = 'exchange.recorded'")).scalar()
        rows = connection.execute(text(
            "SELECT seq, occurred_at, action, actor, organisation, subject_type, subject_id, details, prev_hash, "
            "hash, mac FROM audit_events ORDER BY seq")).mappings()
        events = (chain.EventRecord(**{**row, "details": row["details"] if isinstance(row["details"], dict)
                                       else json.loads(row["details"])}) for row in rows)
        report = chain.verify_chain(events, key=audit_key.encode())
    engine.dispose()
    acknowledged = set(acknowledged_ids)
    return {
        "acknowledged": len(acknowledged_ids),
        "acknowledged_unique": len(acknowledged),
        "lost": len(acknowledged - stored),
        "exchange_rows": len(stored),
        "exchange_audit_events": recorded_events,
        "chain_ok": report.ok,
        "chain_checked": report.checked,
        "chain_problem": None if report.ok else report.message,
    }
