"""A WSGI app that reports where it ran, for the tests of the gunicorn worker (``app.serving``).

``/sleep/<seconds>`` answers after that long; every answer says which process and thread
answered it, how many requests that process has answered, how many objects it has frozen
out of the garbage collector's sight and which workers have published their connections on the
instance's board (``app.serving.ConnectionBoard``).
"""
from __future__ import annotations

import gc
import json
import os
import threading
import time

from app.serving import MainThreadWorker

answered = 0


def board() -> dict[str, int]:
    """pid: connections, for every worker on the board (none when the worker is another class)."""
    if MainThreadWorker.board is None:
        return {}
    return {str(pid): connections for pid, connections in MainThreadWorker.board.workers().items()}


def app(environ, start_response):
    global answered
    path = environ["PATH_INFO"]
    if path.startswith("/sleep/"):
        time.sleep(float(path.rsplit("/", 1)[1]))
    answered += 1
    body = json.dumps({"path": path, "pid": os.getpid(), "answered": answered, "frozen": gc.get_freeze_count(),
                       "main_thread": threading.current_thread() is threading.main_thread(),
                       "board": board()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
