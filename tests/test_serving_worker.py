"""``app.serving.MainThreadWorker``: gthread's worker answering on its main thread.

A real gunicorn on 127.0.0.1 serves ``tests.wsgi_probe``; the tests hold it to what gthread
gives partners (kept-alive and pipelined requests, a slow client that cannot hold up the others,
a long request that is not taken for a stuck worker, a graceful stop) and to its one difference:
the request is answered on the worker's main thread.
"""
from __future__ import annotations

import gc
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.serving import SETTLED_AFTER_REQUESTS, ConnectionBoard, forget_inherited_connections, share_preloaded_app
from tests.server import HOST, free_port

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"


def start(*options: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        # -c /dev/null: gunicorn would otherwise read the project's gunicorn.conf.py from the folder.
        [str(GUNICORN), "-c", os.devnull, "--worker-class", "app.serving.MainThreadWorker", "--workers", "1",
         "--bind", f"{HOST}:{port}", "--keep-alive", "5", "--no-control-socket", *options, "tests.wsgi_probe:app"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    log.close()  # the child has its own copy
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            get(port, "/ready")
            return process, port
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}")
            time.sleep(0.1)
    stop(process)
    raise RuntimeError("gunicorn did not start within 30 s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def get(port: int, path: str, timeout: float = 10) -> dict:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        connection.close()


@contextmanager
def serving(*options: str) -> Iterator[int]:
    """A gunicorn started with ``options`` for the block, by its port; stopped afterwards."""
    process, port = start(*options)
    try:
        yield port
    finally:
        stop(process)


@pytest.fixture
def server():
    with serving() as port:
        yield port


def test_kept_alive_requests_are_answered_on_the_main_thread(server):
    connection = http.client.HTTPConnection(HOST, server, timeout=10)
    try:
        answers = []
        for path in ("/one", "/two", "/three"):
            connection.request("GET", path)
            response = connection.getresponse()
            assert response.status == 200
            assert response.getheader("Connection", "").lower() != "close"
            answers.append(json.loads(response.read()))
            if path == "/one":
                first_socket = connection.sock
            assert connection.sock is first_socket  # the same connection throughout
    finally:
        connection.close()
    assert [a["path"] for a in answers] == ["/one", "/two", "/three"]
    assert all(a["main_thread"] for a in answers)
    assert [a["answered"] for a in answers] == list(range(answers[0]["answered"], answers[0]["answered"] + 3))


def test_pipelined_requests_are_answered_in_order(server):
    requests = b"".join(f"GET /p{i} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode() for i in range(4))
    requests += f"GET /p4 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    answer = b""
    with socket.create_connection((HOST, server), timeout=10) as sock:
        sock.sendall(requests)  # all five at once, before any answer
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200 OK") == 5
    assert re.findall(rb'"path": "(/p\d)"', answer) == [f"/p{i}".encode() for i in range(5)]


def test_a_client_slow_to_send_holds_up_nobody(server):
    with socket.create_connection((HOST, server), timeout=10) as slow:
        started = time.monotonic()
        assert get(server, "/meanwhile")["path"] == "/meanwhile"
        assert time.monotonic() - started < 2  # not after the slow client's keep-alive timeout
        slow.sendall(f"GET /at-last HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b'"/at-last"' in answer


def test_a_request_longer_than_the_timeout_is_not_taken_for_a_stuck_worker():
    # The arbiter kills a worker it has not heard from for --timeout seconds; the request below
    # holds the main thread three times that long.
    with serving("--timeout", "1") as port:
        before = get(port, "/before")
        during = get(port, "/sleep/3")
        after = get(port, "/after")
    assert before["pid"] == during["pid"] == after["pid"]
    assert after["answered"] == during["answered"] + 1 == before["answered"] + 2


def test_a_stop_lets_the_request_in_hand_finish():
    process, port = start("--graceful-timeout", "10")
    try:
        connection = http.client.HTTPConnection(HOST, port, timeout=10)
        connection.request("GET", "/sleep/1")
        time.sleep(0.3)
        os.killpg(process.pid, signal.SIGTERM)
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["path"] == "/sleep/1"
        connection.close()
        assert process.wait(timeout=15) == 0
    finally:
        stop(process)


def test_what_lives_as_long_as_the_worker_is_frozen_out_of_the_collectors_sight(server):
    connection = http.client.HTTPConnection(HOST, server, timeout=10)
    try:
        answers = []
        for _ in range(SETTLED_AFTER_REQUESTS + 1):
            connection.request("GET", "/settling")
            answers.append(json.loads(connection.getresponse().read()))
    finally:
        connection.close()
    assert answers[0]["frozen"] > 0  # the app, frozen before the first request
    settled = next(a for a in answers if a["answered"] == SETTLED_AFTER_REQUESTS + 1)
    assert settled["frozen"] > answers[0]["frozen"]  # what serving built, once settled


def test_a_worker_at_its_max_requests_is_replaced_and_nothing_is_refused():
    with serving("--max-requests", "5") as port:
        answers = [get(port, f"/n{i}") for i in range(12)]
    assert len({a["pid"] for a in answers}) >= 2  # replaced at least once
    assert all(a["answered"] <= 5 for a in answers)


def wait_for_workers(port: int, count: int) -> None:
    """Until ``count`` workers have published on the board (a worker publishes when it first waits)."""
    deadline = time.monotonic() + 30
    while len(get(port, "/board")["board"]) < count:
        assert time.monotonic() < deadline, f"{count} workers did not start within 30 s"
        time.sleep(0.1)


def hold(port: int, path: str) -> tuple[http.client.HTTPConnection, dict]:
    """A kept-alive connection, and the answer to the request sent on it."""
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    assert response.status == 200
    return connection, json.loads(response.read())


def test_new_connections_are_spread_evenly_over_the_workers():
    # The kernel hands a new connection to whichever worker accepts first: without the board, one
    # worker often takes most of a burst (15 of 16 under the load scenario).
    with serving("--workers", "2") as port:
        wait_for_workers(port, 2)
        held = [hold(port, f"/c{i}") for i in range(8)]
        try:
            by_worker = Counter(answer["pid"] for _, answer in held)
            last_board = held[-1][1]["board"]
        finally:
            for connection, _ in held:
                connection.close()
    assert sorted(by_worker.values()) == [4, 4], by_worker
    assert sorted(last_board.values()) in ([3, 4], [4, 4])  # published as of each worker's last wait


def test_a_worker_busy_with_a_long_request_does_not_hold_up_new_connections():
    # The less loaded worker is left new connections, but one busy for seconds must not keep them
    # waiting: after a short pause the other worker takes them.
    with serving("--workers", "2") as port:
        wait_for_workers(port, 2)
        held = [hold(port, f"/c{i}") for i in range(3)]  # two on one worker, one on the other
        try:
            by_worker = Counter(answer["pid"] for _, answer in held)
            assert sorted(by_worker.values()) == [1, 2], by_worker
            lone = next(c for c, answer in held if by_worker[answer["pid"]] == 1)
            lone.request("GET", "/sleep/3")  # the lone connection's worker is now busy
            time.sleep(0.3)
            started = time.monotonic()
            answer = get(port, "/new")
            waited = time.monotonic() - started
            assert lone.getresponse().status == 200
        finally:
            for connection, _ in held:
                connection.close()
    assert waited < 1.5, f"the new connection waited {waited:.1f} s for the busy worker"
    assert by_worker[answer["pid"]] == 2


def test_the_board_counts_only_live_workers_that_take_connections():
    board = ConnectionBoard()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    board.publish(0, os.getpid(), 5)
    assert board.fewest_elsewhere(0) is None  # alone
    board.publish(1, gone.pid, 0)  # killed before it could withdraw
    assert board.fewest_elsewhere(0) is None
    board.publish(2, os.getppid(), 3)
    board.publish(3, os.getppid(), 7)
    assert board.fewest_elsewhere(0) == 3
    assert board.fewest_elsewhere(2) == 5
    board.withdraw(2)  # stopping
    assert board.fewest_elsewhere(0) == 7
    assert board.workers() == {os.getpid(): 5, gone.pid: 0, os.getppid(): 7}


def test_with_threads_it_is_gthread_as_it_is():
    with serving("--threads", "2") as port:
        answers = [get(port, f"/t{i}") for i in range(3)]
    assert not any(a["main_thread"] for a in answers)


def preloading(app, preload: bool) -> SimpleNamespace:
    """What gunicorn's hooks see of the arbiter and of a worker: the settings and the loaded app."""
    return SimpleNamespace(cfg=SimpleNamespace(preload_app=preload), app=SimpleNamespace(wsgi=lambda: app))


def test_the_preloaded_app_is_frozen_and_shared_without_its_connections(app):
    from app.extensions import db

    with app.app_context():
        pool = db.engine.pool
    frozen = gc.get_freeze_count()
    try:
        share_preloaded_app(preloading(app, True))
        assert gc.get_freeze_count() > frozen
        with app.app_context():
            assert db.engine.pool is not pool  # closed in the arbiter: nothing for a worker to inherit
            pool = db.engine.pool
        forget_inherited_connections(None, preloading(app, True))
        with app.app_context():
            assert db.engine.pool is not pool  # and a worker starts with a pool of its own
    finally:
        gc.unfreeze()


def test_without_preloading_the_hooks_do_nothing(app):
    from app.extensions import db

    with app.app_context():
        pool = db.engine.pool
    frozen = gc.get_freeze_count()
    share_preloaded_app(preloading(app, False))
    forget_inherited_connections(None, preloading(app, False))
    assert gc.get_freeze_count() == frozen
    with app.app_context():
        assert db.engine.pool is pool


def test_the_production_configuration_uses_it():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    printed = subprocess.run([str(GUNICORN), "-c", "gunicorn.conf.py", "--print-config", "app:create_app()"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    settings = {name.strip(): value.strip() for name, _, value in
                (line.partition("=") for line in printed.splitlines() if "=" in line)}
    assert settings["worker_class"] == "app.serving.MainThreadWorker"
    assert settings["threads"] == "1"
    assert settings["http_parser"] == "fast"
    assert settings["preload_app"] == "True"


MALFORMED = {
    "a length and a chunked body": b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two lengths": b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    "a signed length": b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
    "a space before the colon": b"GET /a HTTP/1.1\r\nHost : x\r\n\r\n",
    "bare line feeds": b"GET /a HTTP/1.1\nHost: x\n\n",
    "a folded header": b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  2\r\n\r\n",
    "a NUL in a header": b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
}


@pytest.mark.parametrize("parser", ["fast", "python"])
def test_malformed_requests_are_refused_by_either_parser(parser):
    with serving("--http-parser", parser) as port:
        for name, raw in MALFORMED.items():
            with socket.create_connection((HOST, port), timeout=10) as sock:
                sock.sendall(raw)
                assert sock.recv(64).startswith(b"HTTP/1.1 400 "), name
        assert get(port, "/still-serving")["path"] == "/still-serving"
