"""``accord serve``, the server ``make run`` starts, streams an upload's plaintext into the cipher.

The server runs as a real subprocess on 127.0.0.1 with the embedded SQLite default and its
scheduler inside. Half-way through an upload the test looks at every file the server's processes
hold open: none may be a temporary file (a server that spools request bodies to disk would leave
plaintext in the temporary folder, even if unlinked).
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.server import free_port

ROOT = Path(__file__).resolve().parent.parent
ACCORD = Path(sys.executable).parent / "accord"
OFFICER = "officer@kent-police.example"
RECIPIENT = "officer@dartford.example"
PIECE = b"\x5a" * (256 * 1024)
PIECES = 12  # 3 MiB, well past the 512 KiB a spooling server keeps in memory

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc to list open files")


def _environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env.update({"ACCORD_ENV": "test", "ACCORD_DATABASE_URL": f"sqlite:///{tmp_path / 'accord.sqlite3'}",
                "ACCORD_KEYRING_FILE": str(tmp_path / "keyring.json"),
                "ACCORD_AUDIT_SIGNING_KEY_FILE": str(tmp_path / "audit-signing-key.pem"),
                "ACCORD_SCHEDULER_IN_PROCESS": "1", "TMPDIR": str(tmp_path / "tmp")})
    (tmp_path / "tmp").mkdir()
    return env


def _accord(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([str(ACCORD), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"accord {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _token(env: dict[str, str], email: str, *scopes: str) -> str:
    flags = [part for scope in scopes for part in ("--scope", scope)]
    return _accord(env, "tokens", "create", "--user", email, "--name", "embedded server test", *flags).strip()


def _request(port: int, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connection.request(method, path, body=payload, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, json.loads(data) if data else {}


def _open_files(pids: list[int]) -> list[str]:
    files = []
    for pid in pids:
        folder = Path(f"/proc/{pid}/fd")
        for fd in folder.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("/"):
                files.append(target)
    return files


def _server_processes(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [parent, *(int(c) for c in children)]


def _wait_ready(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"accord serve exited: {process.stdout.read() if process.stdout else ''}"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    pytest.fail("accord serve did not become ready within 60 s")


def test_an_upload_streams_through_accord_serve_without_a_temporary_file(tmp_path):
    env = _environment(tmp_path)
    _accord(env, "db", "upgrade")
    _accord(env, "seed", "demo")
    sender = _token(env, OFFICER, "submit", "transfer", "read")
    recipient = _token(env, RECIPIENT, "transfer", "read")
    port = free_port()
    server = subprocess.Popen([str(ACCORD), "serve", "--port", str(port), "--threads", "4"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    connections: list[http.client.HTTPConnection] = []
    try:
        _wait_ready(port, server)
        status, exchange = _request(port, "POST", "/api/v1/exchanges", sender, {
            "from_org": "kent-police", "to_org": "dartford-bc", "protocol": {"code": "vcs-safeguarding", "version": 2},
            "purpose": "safeguarding_children", "data_categories": ["identity", "contact"],
            "subject_types": ["child"], "transfer_method": "accord_transfer", "lawful_basis": "e",
            "legal_gateway": "cda-1998-s115", "retention_months": 12})
        assert status == 201, exchange

        upload = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connections.append(upload)
        upload.putrequest("POST", f"/api/v1/exchanges/{exchange['id']}/transfer")
        for name, value in {"Authorization": f"Bearer {sender}", "Content-Type": "application/octet-stream",
                            "X-Accord-Filename": "case-notes.bin", "Content-Length": str(len(PIECE) * PIECES)}.items():
            upload.putheader(name, value)
        upload.endheaders()
        for _ in range(PIECES // 2):
            upload.send(PIECE)
        time.sleep(1.0)  # let the server read what has arrived
        held = _open_files(_server_processes(server.pid))
        # gunicorn's own heartbeat file (wgunicorn-*) is empty; anything else temporary could hold plaintext.
        temporary = [f for f in held if (f.startswith(str(tmp_path / "tmp")) or "(deleted)" in f)
                     and "/wgunicorn-" not in f]
        assert not temporary, f"the server holds temporary files during an upload: {temporary}"
        for _ in range(PIECES - PIECES // 2):
            upload.send(PIECE)
        response = upload.getresponse()
        stored = json.loads(response.read())
        assert response.status == 201, stored
        assert stored["size"] == len(PIECE) * PIECES

        download = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connections.append(download)
        download.request("GET", f"/api/v1/transfers/{stored['id']}/payload",
                         headers={"Authorization": f"Bearer {recipient}"})
        received = download.getresponse()
        assert received.status == 200
        assert received.read() == PIECE * PIECES
        left = [p.name for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("wgunicorn-")]
        assert not left, f"nothing may be left in the temporary folder: {left}"
    finally:
        for connection in connections:
            connection.close()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout:
            server.stdout.close()
