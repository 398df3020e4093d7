"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, and can be taken down.

``Controller(port=0)`` does not work (DESIGN §11), so a free port is picked first and kept
across restarts, the way a real relay keeps its address.
"""
from __future__ import annotations

import email
import email.policy
import socket
import threading
from dataclasses import dataclass
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Received:
    recipients: tuple[str, ...]
    message: EmailMessage

    @property
    def claim_ids(self) -> tuple[int, ...]:
        """The reminders the e-mail lists (a digest may list several)."""
        value = self.message["X-Accord-Claims"]
        return tuple(int(claim) for claim in str(value).split()) if value else ()


class _Collector:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.received.append(Received(tuple(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class Mailbox:
    """An SMTP server on 127.0.0.1; ``login``/``password`` make it require AUTH."""

    def __init__(self, login: str | None = None, password: str | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.login = login
        self.password = password
        self._collector = _Collector()
        self._controller: Controller | None = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = auth_data.login == (self.login or "").encode() and auth_data.password == (self.password or "").encode()
        # handled=False: aiosmtpd then answers 535 itself (handled=True would leave the client waiting).
        return AuthResult(success=ok, handled=False)

    def start(self) -> "Mailbox":
        options = {}
        if self.login is not None:
            options = {"authenticator": self._authenticate, "auth_require_tls": False}
        self._controller = Controller(self._collector, hostname=self.host, port=self.port, **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def received(self) -> list[Received]:
        with self._collector.lock:
            return list(self._collector.received)

    def configure(self, app) -> None:
        """Point ``app`` at this server."""
        app.config.update(MAIL_SERVER=self.host, MAIL_PORT=self.port, MAIL_USE_TLS=False,
                          MAIL_USERNAME=self.login or "", MAIL_PASSWORD=self.password or "",
                          MAIL_FROM="accord@dartford.example")
