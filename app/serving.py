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

import ctypes
import gc
import multiprocessing
import os
import threading
import time
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

#: How long a worker with more connections than a sibling leaves a waiting connection to that
#: sibling before taking it itself (the sibling may be busy with a long request).
ACCEPT_DEFERRAL_SECONDS = 0.05

#: How often a worker leaving new connections to a sibling looks at the board again: it takes
#: connections again as soon as it holds no more than the sibling.
BOARD_RECHECK_SECONDS = 0.005


class ConnectionBoard:
    """How many connections each worker of one gunicorn instance holds, in memory they share.

    The kernel gives a new connection to whichever worker calls ``accept`` first, so under a
    burst of new keep-alive connections one worker of two took 15 of 16 (seen under the load
    scenario): its clients waited behind each other while the other worker had one client.
    Workers publish their count here and one that holds more than a sibling leaves new
    connections to it for a moment (least connections, as a proxy in front would balance).

    A slot is two integers, the worker's pid and its connection count; a worker writes only its
    own slot (its age modulo the slots), and a reader skips slots of processes that are gone. Made
    by the arbiter before it forks its first worker, so every worker maps the same memory.
    """

    SLOTS = 64

    def __init__(self) -> None:
        self._cells = multiprocessing.RawArray(ctypes.c_long, 2 * self.SLOTS)

    def publish(self, slot: int, pid: int, connections: int) -> None:
        self._cells[2 * slot] = pid
        self._cells[2 * slot + 1] = connections

    def withdraw(self, slot: int) -> None:
        """The worker in ``slot`` takes no new connections (it is stopping)."""
        self._cells[2 * slot] = 0

    def workers(self) -> dict[int, int]:
        """pid: connections, for every worker that has published and not withdrawn."""
        cells = self._cells
        return {cells[2 * slot]: cells[2 * slot + 1] for slot in range(self.SLOTS) if cells[2 * slot]}

    def fewest_elsewhere(self, slot: int) -> int | None:
        """The fewest connections a live sibling of the worker in ``slot`` holds (None: no sibling)."""
        fewest = None
        cells = self._cells
        for other in range(self.SLOTS):
            pid = cells[2 * other]
            if other == slot or pid == 0:
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:  # killed before it could withdraw
                continue
            except PermissionError:  # alive, under another user
                pass
            count = cells[2 * other + 1]
            if fewest is None or count < fewest:
                fewest = count
        return fewest


class MainThreadWorker(gthread.ThreadWorker):
    """gunicorn's gthread worker that, given one thread, answers each request on its main thread.

    gthread keeps connections alive and waits for them in one event loop, and hands every request
    to a pool thread and its connection back: with one thread that hand-off is all it buys, and it
    costs two thread switches and a wake-up through a pipe per request. Under the load scenario
    this worker spent about a sixth less CPU per request than gthread with one thread, and
    recorded a fifth more exchanges a second (docs/production.md, Capacity). Everything else is
    gthread's: keep-alive and its timeout, connections that have sent nothing yet waiting in the
    event loop (gthread's one thread would wait up to 5 s for them), max_requests, graceful stop.
    With more than one thread it answers as gthread does.

    New connections are spread evenly over the instance's workers (``ConnectionBoard``): a worker
    holding more connections than a sibling leaves a new one to it, and takes it after
    ``ACCEPT_DEFERRAL_SECONDS`` if the sibling is busy. Left to the kernel, one worker of two
    took 15 of the load scenario's 16 kept-alive clients and their p99 was twice that of an even
    split (docs/production.md, Capacity). Not with ``reuse_port``, where each worker has a socket
    of its own.

    The arbiter's heartbeat comes from a thread of its own, as gthread's comes from its main
    thread while the pool threads work, so a long transfer is not taken for a stuck worker.

    What lives as long as the worker (the app, and once it has served a few hundred requests the
    register, compiled statements and principals) is frozen out of the garbage collector's sight
    (``gc.freeze``): a worker holds some 170,000 such objects, and each full collection walked
    them all, a pause of 250 to 300 ms measured under load, against some 25 ms frozen.
    Reference counting still frees them when they go; only a cycle among them would stay.
    """

    #: Made by the arbiter with its first worker, inherited by every worker it forks.
    board: ConnectionBoard | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # in the arbiter, before the fork
        if MainThreadWorker.board is None:
            MainThreadWorker.board = ConnectionBoard()
        self._slot = self.age % ConnectionBoard.SLOTS
        self._paused_since: float | None = None  # leaving new connections to a sibling since
        self._take_until = float("-inf")  # a connection that waited out a pause is taken until then

    def init_process(self) -> None:
        # With SO_REUSEPORT each worker has a socket of its own: a connection the kernel queued on
        # this worker's would only wait longer for it.
        self._balance = not self.cfg.reuse_port
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
        self._publish()
        if not self._settled and self.nr >= SETTLED_AFTER_REQUESTS:
            self._settled = True
            gc.collect(1)  # the young generations only: a millisecond or two
            gc.freeze()

    def run(self) -> None:
        stopped = threading.Event()
        # As often as gthread's own loop does, and well within the arbiter's --timeout however short.
        interval = min(1.0, self.timeout / 2)

        def beat() -> None:
            while not stopped.wait(interval):
                self.notify()

        if self._inline:
            threading.Thread(target=beat, name="heartbeat", daemon=True).start()
        try:
            super().run()
        finally:
            stopped.set()
            self.board.withdraw(self._slot)

    # --- connections spread evenly over the instance's workers ----------------------------------

    def _publish(self) -> None:
        if self.alive:
            self.board.publish(self._slot, self.pid, self.nr_conns)
        else:
            self.board.withdraw(self._slot)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        # Called by gthread's event loop before it waits, after any connection timed out; accept
        # and finish_request publish too, so a sibling sees a new or closed connection at once.
        self._publish()
        if self._paused_since is not None:
            waited = time.monotonic() - self._paused_since
            if waited >= ACCEPT_DEFERRAL_SECONDS:
                self._take_until = time.monotonic() + ACCEPT_DEFERRAL_SECONDS
                self._resume_accepting()
            elif not self._over_share():
                self._resume_accepting()
            else:
                timeout = min(timeout, BOARD_RECHECK_SECONDS, ACCEPT_DEFERRAL_SECONDS - waited)
        super().wait_for_and_dispatch_events(timeout)

    def set_accept_enabled(self, enabled: bool) -> None:
        if self._paused_since is not None:
            enabled = False  # gthread's loop asks on every turn; the pause ends in the method above
        super().set_accept_enabled(enabled)

    def accept(self, listener) -> None:
        if self._balance and time.monotonic() >= self._take_until and self._over_share():
            # A less busy sibling is left this connection: stop watching for new ones for a moment.
            self._paused_since = time.monotonic()
            self.set_accept_enabled(False)
            return
        super().accept(listener)
        self._publish()

    def _over_share(self) -> bool:
        """Whether a live sibling holds fewer connections than this worker."""
        fewest = self.board.fewest_elsewhere(self._slot)
        return fewest is not None and self.nr_conns > fewest

    def _resume_accepting(self) -> None:
        self._paused_since = None
        self.set_accept_enabled(self.nr_conns < self.worker_connections)

    # --- answering on the main thread ----------------------------------------------------------

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


def share_preloaded_app(server: Any) -> None:
    """gunicorn's ``when_ready`` (gunicorn.conf.py): ready the app the arbiter loaded
    (``preload_app``) to be shared by the workers it forks.

    Its database connections are closed, so that no worker inherits one, and everything it holds
    is frozen out of the collector's sight (``gc.freeze``), so that a worker's collections do not
    write to those pages and they stay shared between the workers instead of being copied into
    each. Each worker loading the app for itself cost 12 % more app CPU per request under the load
    scenario on two cores (docs/production.md, Capacity). Without ``preload_app`` it does nothing.
    """
    if not server.cfg.preload_app:
        return
    from app.extensions import db

    with server.app.wsgi().app_context():
        db.engine.dispose()
    gc.collect()
    gc.freeze()


def forget_inherited_connections(_server: Any, worker: Any) -> None:
    """gunicorn's ``post_fork`` (gunicorn.conf.py): with ``preload_app``, the worker forgets the
    arbiter's pooled connections (``drop_inherited_connections``)."""
    if worker.cfg.preload_app:
        drop_inherited_connections(worker.app.wsgi())


def drop_inherited_connections(app: Flask) -> None:
    """In a process just forked: drop, without closing them, the pooled connections inherited
    from the parent, which are not this process's to use or to close (closing one would end the
    parent's session on the server too)."""
    from app.extensions import db

    with app.app_context():
        db.engine.dispose(close=False)


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
        # Connections opened in the parent (by the CLI) must not be shared with the forked worker.
        drop_inherited_connections(app)
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
