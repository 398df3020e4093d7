"""How Accord is served: the gunicorn worker of production (``MainThreadWorker``, named in
gunicorn.conf.py), and the embedded server behind ``accord serve`` (and so ``make run``): one
gunicorn worker with threads.

Gunicorn hands the app each request body as it arrives on the socket, so an upload is encrypted
segment by segment as it streams in and its plaintext never touches the disk. (Waitress, which
Accord used before, reads a whole body before the app sees it and spools anything over 512 KiB
to a temporary file.) One worker keeps SQLite to a single process and the scheduler to one
thread; its threads serve requests side by side.
"""
from __future__ import annotations

import gc
import threading
from collections import deque
from concurrent.futures import Future
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.workers import gthread

#: A transfer of the largest allowed payload can take minutes; gthread workers answer the
#: arbiter's heartbeat from their main thread, so this only bounds a truly stuck worker.
WORKER_TIMEOUT_SECONDS = 300


#: Requests a worker answers before what it has built to serve them (the register, compiled
#: statements, principals) is taken out of the garbage collector's sight.
SETTLED_AFTER_REQUESTS = 200


class MainThreadWorker(gthread.ThreadWorker):
    """gunicorn's gthread worker that, given one thread, answers each request on its main thread.

    gthread keeps connections alive and waits for them in one event loop, and hands every request
    to a pool thread and its connection back: with one thread that hand-off is all it buys, and it
    costs two thread switches and a wake-up through a pipe per request. Under the load scenario
    this worker spent about a sixth less CPU per request than gthread with one thread, and
    recorded a fifth more exchanges a second (docs/production.md, Capacity). Everything else is
    gthread's: keep-alive and its timeout, connections that have sent nothing yet waiting in the
    event loop (gthread's one thread would wait up to 5 s for them), max_requests, graceful stop.
    With more than one thread it is gthread as it is.

    The arbiter's heartbeat comes from a thread of its own, as gthread's comes from its main
    thread while the pool threads work, so a long transfer is not taken for a stuck worker.

    What lives as long as the worker (the app, and once it has served a few hundred requests the
    register, compiled statements and principals) is frozen out of the garbage collector's sight
    (``gc.freeze``): a worker holds some 170,000 such objects, and each full collection walked
    them all, a pause of 250 to 300 ms measured under load, against some 25 ms frozen.
    Reference counting still frees them when they go; only a cycle among them would stay.
    """

    def init_process(self) -> None:
        self._inline = self.cfg.threads == 1
        self._ready: deque = deque()
        self._answering = False
        self._settled = False
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # Before the first request, so nothing waits for the collection.
        gc.collect()
        gc.freeze()

    def finish_request(self, conn, fs) -> None:
        super().finish_request(conn, fs)
        if not self._settled and self.nr >= SETTLED_AFTER_REQUESTS:
            self._settled = True
            gc.collect(1)  # the young generations only: a millisecond or two
            gc.freeze()

    def run(self) -> None:
        if not self._inline:
            super().run()
            return
        stopped = threading.Event()
        interval = max(1.0, self.timeout / 4)

        def beat() -> None:
            while not stopped.wait(interval):
                self.notify()

        threading.Thread(target=beat, name="heartbeat", daemon=True).start()
        try:
            super().run()
        finally:
            stopped.set()

    def enqueue_req(self, conn) -> None:
        # Called from the event loop for a connection that is readable, or that has a request in
        # its buffer already; answering one can make another ready (pipelined requests), so they
        # queue here rather than recurse.
        if not self._inline:
            super().enqueue_req(conn)
            return
        self._ready.append(conn)
        if self._answering:
            return
        self._answering = True
        try:
            while self._ready:
                conn = self._ready.popleft()
                self.finish_request(conn, self._answer(conn))
        finally:
            self._answering = False

    def _answer(self, conn) -> Future:
        """The request on ``conn`` answered, as the finished future gthread's bookkeeping expects."""
        answered: Future = Future()
        try:
            if not conn.initialized and not conn.data_ready:
                # New, and perhaps slow to send: it waits in the event loop, not in this thread.
                answered.set_result(gthread._DEFER)
            else:
                answered.set_result(self.handle(conn))
        except BaseException as error:  # as a pool thread's future would carry it
            answered.set_exception(error)
        return answered


class EmbeddedServer(BaseApplication):
    """gunicorn driven from Python with an app that already exists, instead of an import string."""

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def options(app: Flask, host: str, port: int, threads: int) -> dict[str, Any]:
    """gunicorn settings for the embedded default; the scheduler starts inside the worker."""

    def post_worker_init(worker: Any) -> None:
        from app.extensions import db

        # Connections opened in the parent (by the CLI) must not be shared with the forked worker.
        with app.app_context():
            db.engine.dispose()
        if app.config.get("SCHEDULER_IN_PROCESS"):
            from app.scheduler import start_in_process

            start_in_process(app)

    return {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": WORKER_TIMEOUT_SECONDS,
        "graceful_timeout": 10,
        "keepalive": 5,
        # The app writes its own JSON access lines with request ids.
        "accesslog": None,
        "errorlog": "-",
        "post_worker_init": post_worker_init,
        # No runtime control socket in the user's home folder: Ctrl+C is how this server is managed.
        "control_socket_disable": True,
    }


def serve(app: Flask, host: str, port: int, threads: int) -> None:
    """Serve until interrupted (Ctrl+C stops the worker gracefully)."""
    EmbeddedServer(app, options(app, host, port, threads)).run()
