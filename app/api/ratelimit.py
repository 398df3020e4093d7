"""Rate limits on /api/v1: a fixed window per API token, and per client address without one.

The counting is the ``limits`` library's (the engine of Flask-Limiter), called from the API's
authentication step rather than from a decorator, because only there is the token known: a
limit per token cannot be spent by someone who merely knows its public prefix, and requests
with no token or a bad one are counted against their address before they are refused.

The counts live in process memory unless ``RATELIMIT_STORAGE_URI`` names a shared store (for
example ``redis://``); with memory, each server worker counts on its own, so N workers allow up to
N times the limit. That is acceptable for a limit meant to stop a runaway client; lockouts that
must hold across workers are counted in the database instead (DESIGN §11). The memory counts are
kept by :class:`LocalFixedWindow` rather than the library's memory storage, which starts a timer
thread to expire keys: at hundreds of requests a second that was a new thread for almost every
request.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from flask import Flask, current_app, request
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import TooManyRequests

EXTENSION = "accord_rate_limits"


@dataclass
class LocalFixedWindow:
    """Fixed-window counts in this process, with the two calls of ``limits``' strategy we use.

    A window opens with a key's first hit and lasts the item's period, as in ``limits``; a spent
    window is replaced on the key's next hit, and the table is swept of spent windows when it
    grows, so a stream of addresses cannot fill memory.
    """

    #: key -> (window ends at, hits in the window)
    windows: dict[str, tuple[float, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sweep_above: int = 10_000

    def hit(self, item: RateLimitItem, key: str) -> bool:
        now = time.time()
        with self.lock:
            ends_at, hits = self.windows.get(key, (0.0, 0))
            if ends_at <= now:
                if len(self.windows) >= self.sweep_above:
                    self._sweep(now)
                ends_at, hits = now + item.get_expiry(), 0
            if hits >= item.amount:
                return False
            self.windows[key] = (ends_at, hits + 1)
            return True

    def get_window_stats(self, item: RateLimitItem, key: str) -> tuple[float, int]:
        ends_at, hits = self.windows.get(key, (time.time() + item.get_expiry(), 0))
        return ends_at, max(0, item.amount - hits)

    def _sweep(self, now: float) -> None:
        for key in [k for k, (ends_at, _hits) in self.windows.items() if ends_at <= now]:
            del self.windows[key]


@dataclass
class _RateLimits:
    per_token: RateLimitItem | None
    per_address: RateLimitItem | None
    storage_uri: str
    #: Made on first use, so that the factory starts nothing.
    limiter: FixedWindowRateLimiter | LocalFixedWindow | None = None

    def strategy(self) -> FixedWindowRateLimiter | LocalFixedWindow:
        if self.limiter is None:
            if self.storage_uri.startswith("memory://"):
                self.limiter = LocalFixedWindow()
            else:
                self.limiter = FixedWindowRateLimiter(storage_from_string(self.storage_uri))
        return self.limiter


def _parse(name: str, text: str | None) -> RateLimitItem | None:
    if not text or text.strip().lower() in {"off", "none", "0"}:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        from app.settings import ConfigurationError

        raise ConfigurationError(f"{name} must look like '300/minute' or 'off', not {text!r}") from exc


def init_app(app: Flask) -> None:
    config = app.config
    app.extensions[EXTENSION] = _RateLimits(
        per_token=_parse("ACCORD_API_RATE_LIMIT", config.get("API_RATE_LIMIT")),
        per_address=_parse("ACCORD_API_ANONYMOUS_RATE_LIMIT", config.get("API_ANONYMOUS_RATE_LIMIT")),
        storage_uri=config.get("RATELIMIT_STORAGE_URI") or "memory://",
    )


def _hit(item: RateLimitItem | None, key: str) -> None:
    if item is None:
        return
    strategy = current_app.extensions[EXTENSION].strategy()
    if strategy.hit(item, key):
        return
    reset_at, _remaining = strategy.get_window_stats(item, key)
    wait = max(1, math.ceil(reset_at - time.time()))
    raise TooManyRequests(description=f"Too many requests: at most {item.amount} a {_period(item)}. "
                                      f"Try again in {wait} second{'' if wait == 1 else 's'}.",
                          retry_after=wait)


def _period(item: RateLimitItem) -> str:
    granularity = item.GRANULARITY.name
    return granularity if item.multiples == 1 else f"{item.multiples} {granularity}s"


def hit_token(token_id: int) -> None:
    """Count a request made with a valid token; 429 with Retry-After once its window is spent."""
    _hit(current_app.extensions[EXTENSION].per_token, f"token:{token_id}")


def hit_address() -> None:
    """Count a request made without a valid token against the client's address."""
    _hit(current_app.extensions[EXTENSION].per_address, f"address:{request.remote_addr or 'unknown'}")


HTTP_METHODS = ("get", "put", "post", "delete", "patch")


def document(app) -> None:
    """Add what any operation may answer because of these limits to the OpenAPI document:
    429 everywhere, and 413 wherever a request body is accepted (MAX_FORM_BYTES, or the
    operation's own larger limit)."""
    from flask_openapi3.models import Header, Response, Schema

    for path_item in app.paths.values():
        for method in HTTP_METHODS:
            operation = getattr(path_item, method, None)
            if operation is None or not operation.responses or "401" not in operation.responses:
                continue
            envelope = operation.responses["401"].content
            operation.responses.setdefault("429", Response(
                description="Too many requests: wait the number of seconds in `Retry-After` and try again",
                headers={"Retry-After": Header(description="Seconds to wait", schema=Schema(type="integer"))},
                content=envelope))
            if operation.requestBody is not None:
                operation.responses.setdefault("413", Response(
                    description="The request body is larger than Accord accepts", content=envelope))
