"""The embedded server behind ``accord serve`` (and so ``make run``): one gunicorn worker with threads.

Gunicorn hands the app each request body as it arrives on the socket, so an upload is encrypted
segment by segment as it streams in and its plaintext never touches the disk. (Waitress, which
Accord used before, reads a whole body before the app sees it and spools anything over 512 KiB
to a temporary file.) One worker keeps SQLite to a single process and the scheduler to one
thread; its threads serve requests side by side.
"""
from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

#: A transfer of the largest allowed payload can take minutes; gthread workers answer the
#: arbiter's heartbeat from their main thread, so this only bounds a truly stuck worker.
WORKER_TIMEOUT_SECONDS = 300


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
