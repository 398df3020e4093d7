"""Which scheduler process acts: the holder of a PostgreSQL session-level advisory lock.

Every scheduler host runs the same process; each tries ``pg_try_advisory_lock`` on a dedicated
connection it keeps open. The one that gets it is the leader and runs the jobs; the others are
standbys and try again every few seconds. A session-level lock lives exactly as long as the
connection: when the leader dies (even by ``kill -9``) its server backend sees the socket close
and the lock is released, and the next standby to try becomes leader. TCP keepalives make a
vanished host (not just a dead process) release it too.

Leadership saves work; it is not what makes reminders exactly once. If two processes ever
acted at once, the claims' unique constraint and ``SKIP LOCKED`` delivery would still send each
message once.

SQLite (the embedded default) runs one process, so it needs no lock: :class:`SoleLeadership`.
"""
from __future__ import annotations

import logging
import os
import threading

from sqlalchemy.engine import make_url

log = logging.getLogger("accord.scheduler")

#: The advisory lock key ("ACCORDSC"); any fixed 64-bit number no other code uses.
SCHEDULER_LOCK_KEY = 0x41434344_52445343
#: ``application_name`` of the lock connection, so ``pg_stat_activity`` shows which host leads.
APPLICATION_NAME = "accord-scheduler"


class SoleLeadership:
    """The only scheduler (SQLite, one process): always the leader."""

    def try_acquire(self) -> bool:
        return True

    def holds(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def describe(self) -> str:
        return "sole scheduler (SQLite: no lock needed)"


class AdvisoryLockLeadership:
    """Leadership by a session-level advisory lock on a dedicated PostgreSQL connection."""

    def __init__(self, database_url: str, key: int = SCHEDULER_LOCK_KEY, connect_timeout: int = 10):
        url = make_url(database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self.key = key
        self.connect_timeout = connect_timeout
        self.application_name = f"{APPLICATION_NAME} pid={os.getpid()}"
        self._connection = None
        self._held = False
        # The main loop and the job threads both ask; one psycopg connection answers one at a time.
        self._mutex = threading.Lock()

    def _connect(self):
        import psycopg

        return psycopg.connect(self._conninfo, autocommit=True, application_name=self.application_name,
                               connect_timeout=self.connect_timeout, keepalives=1, keepalives_idle=10,
                               keepalives_interval=5, keepalives_count=3)

    def _drop(self) -> None:
        self._held = False
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
                pass

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this process now leads."""
        with self._mutex:
            if self._held:
                return True
            try:
                if self._connection is None or self._connection.closed:
                    self._connection = self._connect()
                self._held = bool(self._connection.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                                  .fetchone()[0])
            except Exception as exc:  # noqa: BLE001 - the database is unreachable: stay a standby and retry
                log.warning("cannot reach the database to take the scheduler lock: %s", type(exc).__name__)
                self._drop()
            return self._held

    def holds(self) -> bool:
        """Whether the lock is still ours: the connection answers and the server lists the lock."""
        with self._mutex:
            if not self._held or self._connection is None:
                return False
            try:
                row = self._connection.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = pg_backend_pid() AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1)",
                    ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF)).fetchone()
                self._held = bool(row[0])
            except Exception as exc:  # noqa: BLE001 - a lost connection means a lost lock
                log.warning("lost the scheduler lock's connection: %s", type(exc).__name__)
                self._drop()
            return self._held

    def release(self) -> None:
        with self._mutex:
            if self._held and self._connection is not None:
                try:
                    self._connection.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                except Exception:  # noqa: BLE001 - closing the connection releases it anyway
                    pass
            self._drop()

    def describe(self) -> str:
        return f"PostgreSQL advisory lock {self.key:#x} ({self.application_name})"


def leadership_for(database_url: str):
    """The advisory lock on PostgreSQL; no lock on SQLite."""
    if make_url(database_url).get_backend_name() == "postgresql":
        return AdvisoryLockLeadership(database_url)
    return SoleLeadership()
