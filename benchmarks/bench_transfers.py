"""A transfer end to end over HTTP: upload a generated payload through the API of ``accord serve``
(one gunicorn worker), download it again, and measure both rates and the worker's memory growth.

Run as ``python -m benchmarks.bench_transfers [size_mib]`` (default 1024, i.e. 1 GiB); prints
JSON. The server runs in a subprocess (``app.serving.serve``, exactly what ``accord serve`` runs) on
127.0.0.1 with an SQLite database in a temporary directory, so 1 GiB of chunk rows lands in
that file (and its WAL) and the directory needs about 2.5 GiB free. The client streams the body
from a generator and reads the response in pieces, so neither side holds the payload.

Memory is read from ``/proc/<pid>/status``: ``VmRSS`` after a warm-up request and ``VmHWM``
(the peak) after the upload and after the download. Raw AES-256-GCM and SHA-256 rates from
``bench_crypto`` are measured in the same run for comparison.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

MIB = 1024 * 1024
#: Client-side piece size for sending and receiving.
PIECE = MIB
SERVER_THREADS = 4


def run(size_mib: int = 1024) -> dict[str, object]:
    size = size_mib * MIB
    workdir = Path(tempfile.mkdtemp(prefix="accord-bench-transfers-"))
    try:
        overrides = {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir / 'accord.sqlite3'}",
            "KEYRING_FILE": str(workdir / "keyring.json"),
            "AUDIT_SIGNING_KEY_FILE": str(workdir / "audit-signing-key.pem"),
            "MAX_PAYLOAD_BYTES": size,
            "SCHEDULER_IN_PROCESS": False,
        }
        exchange_id, sender, recipient = _prepare(overrides)
        block = os.urandom(PIECE)
        expected = hashlib.sha256()
        for _ in range(size // PIECE):
            expected.update(block)
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_transfers", "--serve", str(port),
                                   json.dumps(overrides)], cwd=Path(__file__).resolve().parent.parent)
        try:
            _wait_for(port, server)
            _request(port, "GET", "/healthz")  # warm-up: imports, first connection
            worker = _worker(server.pid)
            before = _memory(worker)

            start = time.perf_counter()
            status, body, sent = _upload(port, exchange_id, sender, _generate(block, size), size)
            upload_seconds = time.perf_counter() - start
            body_sent_seconds = sent - start
            assert status == 201, (status, body[:500])
            transfer = json.loads(body)
            assert transfer["size"] == size and transfer["sha256"] == expected.hexdigest()
            after_upload = _memory(worker)

            start = time.perf_counter()
            received, digest, header_digest = _download(port, transfer["id"], recipient)
            download_seconds = time.perf_counter() - start
            assert received == size and digest == expected.hexdigest() == header_digest
            after_download = _memory(worker)
        finally:
            server.terminate()
            server.wait(timeout=30)
        database_bytes = sum(p.stat().st_size for p in workdir.glob("accord.sqlite3*"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    from benchmarks import bench_crypto

    crypto = bench_crypto.run(256)
    return {
        "size_mib": size_mib,
        "database": "sqlite (file in a temporary directory, WAL)",
        "server": f"accord serve: 1 gunicorn gthread worker, {SERVER_THREADS} threads, on 127.0.0.1",
        "unit": "MiB/s",
        "upload_seconds": round(upload_seconds, 2),
        "upload_mib_per_s": _rate(size, upload_seconds),
        # The body streams into the cipher, so the last byte is sent just before the response.
        "upload_body_sent_seconds": round(body_sent_seconds, 2),
        "download_seconds": round(download_seconds, 2),
        "download_mib_per_s": _rate(size, download_seconds),
        "server_rss_before_mib": round(before["VmRSS"] / MIB, 1),
        "server_peak_after_upload_mib": round(after_upload["VmHWM"] / MIB, 1),
        "server_peak_after_download_mib": round(after_download["VmHWM"] / MIB, 1),
        "server_peak_growth_mib": round((after_download["VmHWM"] - before["VmRSS"]) / MIB, 1),
        "server_peak_growth_target_mib": 100,
        "database_file_mib": round(database_bytes / MIB, 1),
        "raw_aesgcm_encrypt": crypto["raw_aesgcm_encrypt"],
        "raw_aesgcm_decrypt": crypto["raw_aesgcm_decrypt"],
        "raw_sha256": crypto["raw_sha256"],
        "segment_encrypt_with_sha256": crypto["segment_encrypt_with_sha256"],
        "download_verify_then_decrypt_in_memory": crypto["download_verify_then_decrypt_incl_reads"],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def _prepare(overrides: dict) -> tuple[int, dict[str, str], dict[str, str]]:
    """Migrate, load the demo, record an allowed exchange and make the two tokens."""
    from flask_migrate import upgrade

    from app import create_app
    from app.auth import service as auth_service
    from app.auth import tokens
    from app.clock import utcnow
    from app.decisions import service as decisions
    from app.extensions import db

    app = create_app("test", **overrides)
    with app.app_context():
        upgrade()
        result = app.test_cli_runner().invoke(args=["seed", "demo"])
        assert result.exit_code == 0, result.output
        officer = auth_service.find_user_by_email(db.session, "officer@kent-police.example")
        exchange = decisions.record(db.session, officer, {
            "from_org": "kent-police", "to_org": "dartford-bc",
            "protocol": {"code": "vcs-safeguarding", "version": 2}, "purpose": "safeguarding_children",
            "data_categories": ["identity", "contact"], "subject_types": ["child"], "lawful_basis": "e",
            "legal_gateway": "cda-1998-s115", "transfer_method": "accord_transfer", "retention_months": 12,
        }, now=utcnow())
        assert exchange.may_proceed, exchange.outcome
        headers = []
        for email in ("officer@kent-police.example", "officer@dartford.example"):
            issued = tokens.create_token(db.session, "bench", auth_service.find_user_by_email(db.session, email),
                                         name="bench", scopes=["read", "transfer"], lifetime=timedelta(days=1),
                                         now=utcnow(), pepper=app.config["TOKEN_PEPPER"])
            headers.append({"Authorization": f"Bearer {issued.plaintext}"})
        db.session.commit()
        exchange_id = exchange.id
        db.session.remove()
        db.engine.dispose()
    return exchange_id, headers[0], headers[1]


def serve(port: int, overrides: dict) -> None:
    """The server subprocess: the app under ``accord serve``'s own server and settings."""
    from app import create_app
    from app.serving import serve as embedded

    embedded(create_app("test", **overrides), "127.0.0.1", port, SERVER_THREADS)


def _worker(parent: int) -> int:
    """The gunicorn worker (the process that holds the payload's buffers) under the arbiter."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    assert len(children) == 1, f"expected one worker under the server, found {children}"
    return int(children[0])


def _generate(block: bytes, size: int) -> Iterator[bytes]:
    for _ in range(size // len(block)):
        yield block


def _upload(port: int, exchange_id: int, headers: dict, body: Iterator[bytes], size: int) -> tuple[int, bytes, float]:
    """POST the generated body piece by piece with its length declared up front, as a client
    streaming a file would; also return when the last byte was handed to the socket."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    connection.putrequest("POST", f"/api/v1/exchanges/{exchange_id}/transfer")
    for name, value in {**headers, "Content-Type": "application/octet-stream",
                        "X-Accord-Filename": quote("bench payload.bin"), "Content-Length": str(size)}.items():
        connection.putheader(name, value)
    connection.endheaders()
    for piece in body:
        connection.send(piece)
    sent = time.perf_counter()
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    return response.status, answer, sent


def _download(port: int, transfer_id: str, headers: dict) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    connection.request("GET", f"/api/v1/transfers/{transfer_id}/payload", headers=headers)
    response = connection.getresponse()
    assert response.status == 200, (response.status, response.read(500))
    digest = hashlib.sha256()
    received = 0
    while piece := response.read(PIECE):
        digest.update(piece)
        received += len(piece)
    header_digest = response.getheader("X-Content-SHA256")
    connection.close()
    return received, digest.hexdigest(), header_digest


def _request(port: int, method: str, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request(method, path)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start within 60 seconds")


def _rate(size: int, seconds: float) -> float:
    return round(size / MIB / seconds, 1) if seconds > 0 else float("inf")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), json.loads(sys.argv[3]))
    else:
        print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1024), indent=2))
