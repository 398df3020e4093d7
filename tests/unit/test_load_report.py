"""The load benchmark's server-side figures, read back from the servers' JSON access lines."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from benchmarks import load


def access_line(method: str, path: str, duration_ms: float, at: float, logger: str = "accord.access") -> str:
    return json.dumps({"time": datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds"),
                       "level": "info", "logger": logger, "message": f"{method} {path} 200", "method": method,
                       "path": path, "status": 200, "duration_ms": duration_ms}) + "\n"


def test_each_operation_is_told_apart_and_only_the_measured_window_counts(tmp_path):
    start = 1_800_000_000.0
    lines = [
        access_line("POST", "/api/v1/exchanges", 999.0, start - 5),  # the warm-up: left out
        *(access_line("POST", "/api/v1/exchanges", float(ms), start + 1) for ms in range(1, 101)),
        access_line("POST", "/api/v1/exchanges/check", 3.0, start + 2),
        access_line("GET", "/api/v1/exchanges/42", 5.0, start + 2),
        access_line("POST", "/api/v1/exchanges/42/transfer", 20.0, start + 2),
        access_line("GET", "/api/v1/transfers/0c7e-ab/payload", 15.0, start + 2),
        access_line("GET", "/api/v1/organisations", 1.0, start + 2),  # not in the mix
        access_line("POST", "/api/v1/exchanges", 7.0, start + 2, logger="accord"),  # not an access line
        "gunicorn's own line, not JSON\n",
        access_line("GET", "/api/v1/transfers/0c7e-ab/payload", 40.0, start + 11),  # the checks after: left out
    ]
    (tmp_path / "server-1.log").write_text("".join(lines[:50]))
    (tmp_path / "server-2.log").write_text("".join(lines[50:]))
    stack = load.Stack(database_url="postgresql://unused", env={}, workdir=tmp_path)

    figures = load.server_side_ms(stack, since=start, until=start + 10)

    assert figures["submit"] == {"requests": 100, "p50_ms": 51.0, "p95_ms": 96.0, "p99_ms": 100.0}
    assert {kind: f["requests"] for kind, f in figures.items()} == {
        "check": 1, "download": 1, "read": 1, "submit": 100, "upload": 1}
    assert figures["upload"]["p50_ms"] == 20.0
