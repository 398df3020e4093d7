"""A throwaway PostgreSQL cluster for the test session, started on loopback.

``initdb`` refuses to run as root, so the cluster is created and started as the ``postgres``
user in a temporary directory it owns (DESIGN §11), listening on 127.0.0.1 on a free port with
trust authentication, and stopped and removed when the session ends.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    datadir: Path

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here, or None if it can."""
    for name in ("initdb", "pg_ctl"):
        if _binary(name) is None:
            return f"PostgreSQL server binary {name!r} not found (install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run initdb as"
    return None


def start() -> PostgresServer:
    as_postgres: dict = {}
    base = Path(tempfile.mkdtemp(prefix="accord-pg-"))
    user = "postgres"
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(base, entry.pw_uid, entry.pw_gid)
        as_postgres = {"user": "postgres", "group": "postgres", "extra_groups": []}
    else:
        user = pwd.getpwuid(os.geteuid()).pw_name
    datadir = base / "data"
    port = _free_port()
    subprocess.run([_binary("initdb"), "-D", str(datadir), "-U", user, "--auth=trust", "--encoding=UTF8",
                    "--locale=C.UTF-8" if _has_c_utf8() else "--no-locale"],
                   check=True, capture_output=True, cwd=base, **as_postgres)
    options = (f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off "
               f"-c full_page_writes=off -c max_connections=200")
    subprocess.run([_binary("pg_ctl"), "-D", str(datadir), "-o", options, "-l", str(base / "log"), "-w",
                    "-t", "60", "start"], check=True, capture_output=True, cwd=base, **as_postgres)
    server = PostgresServer("127.0.0.1", port, user, datadir)
    _wait_ready(server)
    return server


def _has_c_utf8() -> bool:
    result = subprocess.run(["locale", "-a"], capture_output=True, text=True)
    return "C.utf8" in result.stdout or "C.UTF-8" in result.stdout


def _wait_ready(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(host=server.host, port=server.port, user=server.user, dbname="postgres"):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop(server: PostgresServer) -> None:
    kwargs: dict = {}
    if os.geteuid() == 0:
        kwargs = {"user": "postgres", "group": "postgres", "extra_groups": []}
    subprocess.run([_binary("pg_ctl"), "-D", str(server.datadir), "-m", "immediate", "stop"],
                   capture_output=True, cwd=server.datadir.parent, **kwargs)
    shutil.rmtree(server.datadir.parent, ignore_errors=True)


def admin_execute(server: PostgresServer, *statements: str) -> None:
    import psycopg

    with psycopg.connect(host=server.host, port=server.port, user=server.user, dbname="postgres",
                         autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
