"""A WSGI app that reports where it ran, for the tests of the gunicorn worker (``app.serving``).

``/sleep/<seconds>`` answers after that long; every answer says which process and thread
answered it, how many requests that process has answered and how many objects it has frozen
out of the garbage collector's sight.
"""
from __future__ import annotations

import gc
import json
import os
import threading
import time

answered = 0


def app(environ, start_response):
    global answered
    path = environ["PATH_INFO"]
    if path.startswith("/sleep/"):
        time.sleep(float(path.rsplit("/", 1)[1]))
    answered += 1
    body = json.dumps({"path": path, "pid": os.getpid(), "answered": answered, "frozen": gc.get_freeze_count(),
                       "main_thread": threading.current_thread() is threading.main_thread()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
