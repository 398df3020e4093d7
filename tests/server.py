"""Accord served by gunicorn in a subprocess, on 127.0.0.1 only, for the tests that need real
worker processes: the lockout every worker agrees on, concurrent submissions and kill -9."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def server_environment(database_url: str, tmp: Path, **extra: str) -> dict[str, str]:
    """The environment a server needs to share this test's database, secrets and keys.

    ``ACCORD_ENV=test`` gives the TestConfig secrets, so tokens and audit chains made in the test
    process and in the server match; the key files are the ones the test's own app uses.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env.update({
        "ACCORD_ENV": "test",
        "ACCORD_DATABASE_URL": database_url,
        "ACCORD_KEYRING_FILE": str(tmp / "keyring.json"),
        "ACCORD_AUDIT_SIGNING_KEY_FILE": str(tmp / "audit-signing-key.pem"),
        "ACCORD_SCHEDULER_IN_PROCESS": "0",
        "ACCORD_API_RATE_LIMIT": "off",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    env.update(extra)
    return env


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    access_log: Path

    @property
    def pgid(self) -> int:
        return os.getpgid(self.process.pid)

    def kill_hard(self) -> None:
        """kill -9 the master and every worker at once (they share a process group)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill_hard()

    def worker_pids(self, method: str, path_prefix: str) -> set[int]:
        """The worker processes that answered requests, from the access log (``%(p)s`` first)."""
        pids = set()
        for line in self.access_log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == method and parts[2].startswith(path_prefix):
                pids.add(int(parts[0].strip("<>")))
        return pids


def start(env: dict[str, str], tmp: Path, *, workers: int = 4, preload: bool = False, threads: int | None = None,
          ready_within: float = 90.0) -> Server:
    """Start gunicorn and wait until every worker has answered /healthz.

    The settings are the project's ``gunicorn.conf.py`` (``app.serving.MainThreadWorker``), which
    gunicorn reads from the working directory, with the bind address, worker count and logs set here.
    ``preload`` builds the app once in the master before forking the workers: a quicker start for
    tests that restart the server many times (the factory opens no connection, so nothing is
    shared across the fork). ``threads=1`` makes each worker take one request at a time, so
    concurrent requests must be spread over the workers.
    """
    port = free_port()
    access_log = tmp / f"access-{port}.log"
    output = open(tmp / f"gunicorn-{port}.log", "wb")  # noqa: SIM115 - the server's, closed with it
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"{HOST}:{port}",
         "--timeout", "60", "--graceful-timeout", "5", "--log-level", "warning",
         "--access-logfile", str(access_log), "--access-logformat", "%(p)s %(m)s %(U)s %(s)s",
         *(["--preload"] if preload else []), *(["--threads", str(threads)] if threads else []),
         "app:create_app()"],
        cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
    )
    output.close()
    server = Server(process, port, access_log)
    deadline = time.monotonic() + ready_within
    # Ready when every worker has answered /healthz: workers boot one by one, and a test about
    # several workers means nothing while only the first is up. Concurrent probes reach them all.
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}: "
                               + (tmp / f"gunicorn-{port}.log").read_text()[-3000:])
        with ThreadPoolExecutor(workers * 2) as pool:
            list(pool.map(lambda _: _probe(port), range(workers * 2)))
        if access_log.exists() and len(server.worker_pids("GET", "/healthz")) >= workers:
            return server
        time.sleep(0.1)
    server.kill_hard()
    raise RuntimeError("gunicorn did not answer /healthz in time: " + (tmp / f"gunicorn-{port}.log").read_text()[-3000:])


def _probe(port: int) -> None:
    try:
        request(port, "GET", "/healthz", timeout=2)
    except OSError:
        pass


def request(port: int, method: str, path: str, *, body: bytes | dict | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict | bytes, dict[str, str]]:
    """One request on a connection of its own, so consecutive requests can land on any worker."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        response_headers = {k.lower(): v for k, v in response.getheaders()}
        if response_headers.get("content-type", "").startswith("application/json"):
            return response.status, json.loads(data), response_headers
        return response.status, data, response_headers
    finally:
        connection.close()


def form_post(port: int, path: str, fields: dict[str, str], timeout: float = 30) -> tuple[int, bytes, dict[str, str]]:
    from urllib.parse import urlencode

    return request(port, "POST", path, body=urlencode(fields).encode(),
                   headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=timeout)
