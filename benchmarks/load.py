"""The production load scenario: app instances and schedulers on one PostgreSQL, under a bounded load.

Used by ``benchmarks/bench_load.py`` (the two-minute run with figures) and by
``tests/test_production.py`` (a short run that asserts the invariants). Everything listens on
127.0.0.1 only, every loop is bounded in count and time, and everything started is stopped.

The clients are coroutines on one event loop, each with its own keep-alive connection, rather
than threads with ``http.client``: the load generator shares the cores with the servers and the
database, and threads spent a good part of a core on their own locking at a few hundred requests
a second. The mix records exchanges (most of it), checks them, reads them back, and sends small
encrypted transfers that the recipient organisation then downloads.
"""
from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SECRETS = {
    "ACCORD_SECRET_KEY": "load-session-key-not-secret",
    "ACCORD_TOKEN_PEPPER": "load-token-pepper-not-secret",
    "ACCORD_AUDIT_HMAC_KEY": "load-audit-key-not-secret",
}

SENDER = "officer@kent-police.example"
RECIPIENT = "officer@dartford.example"

ALLOWED = {
    "from_org": "kent-police", "to_org": "dartford-bc", "protocol": {"code": "vcs-safeguarding", "version": 2},
    "purpose": "safeguarding_children", "data_categories": ["identity", "contact"], "subject_types": ["child"],
    "transfer_method": "accord_transfer", "lawful_basis": "e", "legal_gateway": "cda-1998-s115",
    "retention_months": 12,
}

#: Shares of the operations; an upload is a submission followed by a transfer under it.
MIX = {"submit": 0.80, "check": 0.10, "read": 0.05, "upload": 0.03, "download": 0.02}
#: A small transfer: the point is the path through the service, not the cipher's throughput.
PAYLOAD_BYTES = 2048

#: A production-like PostgreSQL: durable commits (fsync and synchronous_commit stay on), room in
#: memory, and checkpoints spread out so that none lands in the middle of a two-minute run.
DURABLE_POSTGRES = ("-c fsync=on -c synchronous_commit=on -c full_page_writes=on -c shared_buffers=256MB "
                    "-c wal_buffers=16MB -c max_wal_size=4GB -c checkpoint_timeout=30min "
                    "-c checkpoint_completion_target=0.9 -c max_connections=200")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def durable_postgres():
    """A throwaway cluster (``tests.postgres``) restarted with durable, production-like settings.

    The test cluster turns fsync and synchronous commit off for speed; a throughput figure from
    such a database would count commits that were never on disk.
    """
    sys.path.insert(0, str(ROOT))
    from tests import postgres

    server = postgres.start()
    as_postgres = {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
    options = f"-h 127.0.0.1 -p {server.port} -k {server.datadir.parent} {DURABLE_POSTGRES}"
    # The log file keeps the server's output off our pipes, or run() would wait for it to exit.
    subprocess.run([postgres._binary("pg_ctl"), "-D", str(server.datadir), "-o", options,
                    "-l", str(server.datadir.parent / "log"), "-w", "-t", "60", "restart"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=server.datadir.parent,
                   timeout=120, **as_postgres)
    postgres._wait_ready(server)
    return server


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

    def start_server(self, workers: int = 2, threads: int | None = None) -> int:
        """One gunicorn instance with ``gunicorn.conf.py``; ``threads`` overrides its threads per worker."""
        port = free_port()
        thread_args = ["--threads", str(threads)] if threads else []
        process = self._spawn([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "--bind",
                               f"127.0.0.1:{port}", "--workers", str(workers), *thread_args, "app:create_app()"],
                              f"server-{port}.log")
        self.servers.append(process)
        self.ports.append(port)
        wait_ready(port)
        return port

    def start_scheduler(self) -> subprocess.Popen:
        process = self._spawn([str(BIN / "accord"), "scheduler", "run"], f"scheduler-{len(self.schedulers)}.log")
        self.schedulers.append(process)
        return process

    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen:
        """Start ``command`` in its own process group (so ``stop`` ends its children too), logging
        to a file in the work directory."""
        with open(self.workdir / log_name, "w") as log:
            return subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
                                    start_new_session=True)

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
        "ACCORD_API_RATE_LIMIT": "1000000/minute",
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
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/livez")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
        finally:
            connection.close()
    raise RuntimeError(f"the server on port {port} did not start within {timeout} s")


def create_token(stack: Stack, email: str = SENDER, scopes: tuple[str, ...] = ("read", "check", "submit", "transfer")
                 ) -> str:
    scope_args = [arg for scope in scopes for arg in ("--scope", scope)]
    created = stack.accord("tokens", "create", "--user", email, "--name", "load", *scope_args, "--days", "1")
    return created.stdout.strip().splitlines()[0]


@dataclass(frozen=True)
class Tokens:
    #: The sending officer's: records, checks, reads and uploads.
    sender: str
    #: The receiving organisation's officer's: downloads.
    recipient: str


def create_tokens(stack: Stack) -> Tokens:
    return Tokens(create_token(stack), create_token(stack, RECIPIENT, ("read", "transfer")))


# --- the clients -----------------------------------------------------------------------------------


class ServerClosed(Exception):
    """The server closed a kept-alive connection before answering (a worker restarting)."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection, just enough of the protocol for these requests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Response:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        try:
            response = await self._read_response()
        except (ConnectionError, asyncio.IncompleteReadError, ServerClosed):
            self.close()
            raise
        if response.headers.get("connection", "").lower() == "close":
            self.close()
        return response

    async def _read_response(self) -> Response:
        # The head in one read rather than a line at a time: the load generator shares the cores
        # with the servers, and every await of its own is CPU they do not get.
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:  # closed while idle: the caller retries on a new connection
                raise ServerClosed() from None
            raise
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split()[1])
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                body += await self.reader.readexactly(size)
                await self.reader.readline()
            await self.reader.readline()
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Response(status, headers, body)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def aclose(self) -> None:
        writer = self.writer
        self.close()
        if writer is not None:
            try:
                await writer.wait_closed()
            except OSError:
                pass


@dataclass
class LoadResult:
    duration_s: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: list[str] = field(default_factory=list)
    #: Exchanges whose recording was answered 201, uploads' included.
    acknowledged_ids: list[int] = field(default_factory=list)
    #: Transfers whose upload was answered 201: id -> SHA-256 of what was sent.
    uploads: dict[str, str] = field(default_factory=dict)
    downloads_verified: int = 0
    #: Kept-alive connections the server closed between requests (then retried on a new one).
    reconnects: int = 0
    client_cpu_s: float = 0.0

    def summary(self) -> dict[str, object]:
        result: dict[str, object] = {"duration_s": round(self.duration_s, 1)}
        for kind in sorted(set(self.latencies) | set(self.errors)):
            values = sorted(self.latencies.get(kind, []))
            result[kind] = {
                "requests": len(values),
                "per_second": round(len(values) / self.duration_s, 1),
                "p50_ms": _percentile_ms(values, 0.50),
                "p95_ms": _percentile_ms(values, 0.95),
                "p99_ms": _percentile_ms(values, 0.99),
                "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else None,
                "errors": self.errors.get(kind, 0),
            }
        total = sum(len(v) for v in self.latencies.values())
        result["requests_per_second"] = round(total / self.duration_s, 1)
        result["recorded_submissions_per_second"] = round(len(self.acknowledged_ids) / self.duration_s, 1)
        result["errors_total"] = sum(self.errors.values())
        result["error_samples"] = self.error_samples[:5]
        result["reconnects"] = self.reconnects
        result["load_generator_cpu_s"] = round(self.client_cpu_s, 1)
        return result


def _percentile_ms(ordered: list[float], share: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000, 1)


class Client:
    """One simulated partner system: a connection to one instance and a stream of operations."""

    def __init__(self, index: int, port: int, tokens: Tokens, result: LoadResult, mix: dict[str, float]) -> None:
        self.rng = random.Random(index)
        self.connection = Connection(port)
        self.result = result
        self.kinds, self.weights = zip(*mix.items())
        self.sender = {"Authorization": f"Bearer {tokens.sender}"}
        self.recipient = {"Authorization": f"Bearer {tokens.recipient}"}
        self.json_headers = {**self.sender, "Content-Type": "application/json"}
        self.body = json.dumps(ALLOWED).encode()
        self.recent: list[int] = []

    async def run(self, stop_at: float, max_requests: int) -> None:
        for _ in range(max_requests):
            if time.monotonic() >= stop_at:
                break
            kind = self.rng.choices(self.kinds, self.weights)[0]
            if (kind == "read" and not self.recent) or (kind == "download" and not self.result.uploads):
                kind = "submit"
            try:
                await getattr(self, kind)()
            except (OSError, asyncio.IncompleteReadError, ServerClosed, ValueError) as exc:
                self.fail(kind, f"{type(exc).__name__}: {exc}")
                await self.connection.aclose()
        await self.connection.aclose()

    async def send(self, kind: str, expected: int, method: str, path: str, headers: dict[str, str],
                   body: bytes = b"") -> Response | None:
        """One timed request; a connection the server closed while idle is reopened once."""
        started = time.perf_counter()
        try:
            response = await self.connection.request(method, path, headers, body)
        except ServerClosed:
            self.result.reconnects += 1
            started = time.perf_counter()
            response = await self.connection.request(method, path, headers, body)
        elapsed = time.perf_counter() - started
        if response.status != expected:
            self.fail(kind, f"{response.status} {response.body[:200]!r}")
            return None
        self.result.latencies[kind].append(elapsed)
        return response

    def fail(self, kind: str, sample: str) -> None:
        self.result.errors[kind] += 1
        self.result.error_samples.append(f"{kind}: {sample}")

    async def submit(self) -> int | None:
        response = await self.send("submit", 201, "POST", "/api/v1/exchanges", self.json_headers, self.body)
        if response is None:
            return None
        exchange_id = json.loads(response.body)["id"]
        self.result.acknowledged_ids.append(exchange_id)
        self.recent.append(exchange_id)
        del self.recent[:-50]
        return exchange_id

    async def check(self) -> None:
        await self.send("check", 200, "POST", "/api/v1/exchanges/check", self.json_headers, self.body)

    async def read(self) -> None:
        await self.send("read", 200, "GET", f"/api/v1/exchanges/{self.rng.choice(self.recent)}", self.sender)

    async def upload(self) -> None:
        exchange_id = await self.submit()
        if exchange_id is None:
            return
        payload = self.rng.randbytes(PAYLOAD_BYTES)
        digest = hashlib.sha256(payload).hexdigest()
        headers = {**self.sender, "Content-Type": "application/octet-stream", "X-Accord-Filename": "cases.bin",
                   "X-Content-SHA256": digest}
        response = await self.send("upload", 201, "POST", f"/api/v1/exchanges/{exchange_id}/transfer", headers,
                                   payload)
        if response is not None:
            self.result.uploads[json.loads(response.body)["id"]] = digest

    async def download(self) -> None:
        transfer_id, digest = self.rng.choice(list(self.result.uploads.items()))
        response = await self.send("download", 200, "GET", f"/api/v1/transfers/{transfer_id}/payload", self.recipient)
        if response is None:
            return
        if hashlib.sha256(response.body).hexdigest() != digest:
            self.fail("download", f"transfer {transfer_id} came back different from what was sent")
        else:
            self.result.downloads_verified += 1


def run_load(ports: list[int], tokens: Tokens, *, clients: int, duration_s: float,
             mix: dict[str, float] | None = None, max_requests_per_client: int = 1_000_000) -> LoadResult:
    """``clients`` concurrent clients, spread over ``ports``, until ``duration_s`` has passed."""
    result = LoadResult(duration_s=duration_s)
    cpu_started = time.process_time()

    async def main() -> None:
        stop_at = time.monotonic() + duration_s
        everyone = [Client(i, ports[i % len(ports)], tokens, result, mix or MIX) for i in range(clients)]
        await asyncio.wait_for(asyncio.gather(*(c.run(stop_at, max_requests_per_client) for c in everyone)),
                               timeout=duration_s + 120)

    started = time.monotonic()
    # uvloop's event loop: the generator shares the cores with what it measures, and with
    # asyncio's own loop it spent 5 to 10 % more CPU a request, and its clients saw p99s 8 ms
    # longer, the loop's own queueing of 32 clients' responses (three interleaved pairs of runs).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    result.duration_s = time.monotonic() - started
    result.client_cpu_s = time.process_time() - cpu_started
    return result


# --- where the CPU went ---------------------------------------------------------------------------


def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds_by_group(servers: list[int], postmaster: int | None) -> dict[str, float]:
    """CPU (user and system) used so far by the app servers' process groups and by PostgreSQL's
    processes, from /proc; a process that has exited since is no longer counted, so take the
    difference of two readings over a window in which none exits."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = {"app_servers": 0.0, "postgresql": 0.0}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # After the command name: state, ppid, pgrp, ...; utime and stime are the 12th and 13th.
        parent, group, cpu = int(fields[1]), int(fields[2]), (int(fields[11]) + int(fields[12])) / ticks
        if group in servers:
            totals["app_servers"] += cpu
        elif postmaster is not None and (int(pid) == postmaster or parent == postmaster):
            totals["postgresql"] += cpu
    return totals


def postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


#: The operations of the mix, by the method and path shape their access lines show.
_OPERATIONS = (
    ("POST", re.compile(r"^/api/v1/exchanges$"), "submit"),
    ("POST", re.compile(r"^/api/v1/exchanges/check$"), "check"),
    ("GET", re.compile(r"^/api/v1/exchanges/\d+$"), "read"),
    ("POST", re.compile(r"^/api/v1/exchanges/\d+/transfer$"), "upload"),
    ("GET", re.compile(r"^/api/v1/transfers/[^/]+/payload$"), "download"),
)


def server_side_ms(stack: Stack, since: float, until: float) -> dict[str, dict[str, float | int | None]]:
    """p50/p95/p99 of the time each operation took inside the servers (the access lines'
    ``duration_ms``, from the first byte of the request to the last of the answer) for requests
    logged from ``since`` to ``until`` (``time.time()`` values): the measured run, not the
    warm-up before it nor the invariant checks' downloads after it. Set beside the clients'
    figures, the gap is the time requests waited for their worker."""
    durations: dict[str, list[float]] = defaultdict(list)
    for log in stack.workdir.glob("server-*.log"):
        with open(log, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if '"accord.access"' not in line:
                    continue
                try:
                    entry = json.loads(line)
                    logged = datetime.fromisoformat(entry["time"]).timestamp()
                except (ValueError, KeyError):
                    continue
                if not since <= logged <= until:
                    continue
                kind = next((name for method, path, name in _OPERATIONS
                             if entry.get("method") == method and path.match(entry.get("path", ""))), None)
                if kind is not None:
                    durations[kind].append(entry["duration_ms"] / 1000)
    return {kind: {"requests": len(values), "p50_ms": _percentile_ms(values, 0.50),
                   "p95_ms": _percentile_ms(values, 0.95), "p99_ms": _percentile_ms(values, 0.99)}
            for kind, values in sorted((k, sorted(v)) for k, v in durations.items())}


def host_speed_ms(rounds: int = 5) -> float:
    """CPU milliseconds a fixed piece of Python (dicts, strings, JSON, SHA-256) takes on one core,
    the fastest of ``rounds``: lower is faster. Virtual machines' speed wanders from one run to
    the next; this, taken before and after a run, tells a slow host from a slow build."""
    def work() -> str:
        table = {}
        for i in range(200_000):
            table[i % 1000] = str(i)
        return hashlib.sha256(json.dumps(table).encode()).hexdigest()

    timings = []
    for _ in range(rounds):
        started = time.process_time()
        work()
        timings.append(time.process_time() - started)
    return round(min(timings) * 1000, 1)


# --- what must hold afterwards --------------------------------------------------------------------


def invariants(database_url: str, result: LoadResult, audit_key: str, *, port: int | None = None,
               tokens: Tokens | None = None) -> dict[str, object]:
    """Every acknowledged submission stored once, every acknowledged upload complete (and, given a
    server, downloadable intact by the recipient), and the audit chain intact."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import create_engine, text

    from app.audit import chain

    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored = set(connection.execute(text("SELECT id FROM exchanges")).scalars())
        recorded_events = connection.execute(text(
            "SELECT count(*) FROM audit_events WHERE action = 'exchange.recorded'")).scalar()
        transfers = {row.id: row for row in connection.execute(text(
            "SELECT t.id, t.sha256, t.size, t.segment_count, (SELECT count(*) FROM transfer_chunks c "
            "WHERE c.transfer_id = t.id) AS chunks FROM transfers t"))}
        rows = connection.execute(text(
            "SELECT seq, occurred_at, action, actor, organisation, subject_type, subject_id, details, prev_hash, "
            "hash, mac FROM audit_events ORDER BY seq")).mappings()
        events = (chain.EventRecord(**{**row, "details": row["details"] if isinstance(row["details"], dict)
                                       else json.loads(row["details"])}) for row in rows)
        report = chain.verify_chain(events, key=audit_key.encode())
    engine.dispose()
    acknowledged = set(result.acknowledged_ids)
    incomplete = [tid for tid, digest in result.uploads.items()
                  if tid not in transfers or transfers[tid].sha256 != digest or transfers[tid].size != PAYLOAD_BYTES
                  or transfers[tid].chunks != transfers[tid].segment_count]
    checks: dict[str, object] = {
        "acknowledged": len(result.acknowledged_ids),
        "acknowledged_unique": len(acknowledged),
        "lost": len(acknowledged - stored),
        "exchange_rows": len(stored),
        "exchange_audit_events": recorded_events,
        "uploads_acknowledged": len(result.uploads),
        "uploads_incomplete": len(incomplete),
        "downloads_verified_under_load": result.downloads_verified,
        "chain_ok": report.ok,
        "chain_checked": report.checked,
        "chain_problem": None if report.ok else report.message,
    }
    if port is not None and tokens is not None:
        checks["uploads_not_downloadable"] = len(undownloadable(port, tokens, result.uploads))
    return checks


def undownloadable(port: int, tokens: Tokens, uploads: dict[str, str]) -> list[str]:
    """The acknowledged uploads the recipient cannot download intact now, after the load."""

    async def main() -> list[str]:
        connection = Connection(port)
        headers = {"Authorization": f"Bearer {tokens.recipient}"}
        failed = []
        for transfer_id, digest in uploads.items():
            response = await connection.request("GET", f"/api/v1/transfers/{transfer_id}/payload", headers)
            if response.status != 200 or hashlib.sha256(response.body).hexdigest() != digest:
                failed.append(transfer_id)
        await connection.aclose()
        return failed

    return asyncio.run(main())
