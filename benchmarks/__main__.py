"""``make bench``: run every benchmark, write each one's JSON and a markdown table of all of them.

Each ``benchmarks/bench_<name>.py`` exposes ``run() -> dict``. Results go to
``benchmarks/results/<name>.json`` (with the machine, the command and the machine's load), and a
summary of every benchmark's latest figures to ``benchmarks/results/summary.json`` and
``summary.md``: running only some benchmarks keeps the others' last results in the summary, each
with the time it was measured, and names those never run or failing this time.

    python -m benchmarks                 # everything
    python -m benchmarks engine audit    # only these
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def machine() -> dict[str, object]:
    memory = None
    try:
        with open("/proc/meminfo") as handle:
            memory = handle.readline().split()[1] + " kB"
    except OSError:
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    # The interpreter's path too: how it was built moves CPU-bound figures by some 15 % (a default pyenv
    # build against Debian's; docs/production.md, "The interpreter").
    return {"python": platform.python_version(), "python_executable": os.path.realpath(sys.executable),
            "platform": platform.platform(), "cpus": os.cpu_count(), "cpu": cpu, "memory": memory}


def flatten(prefix: str, value: object, out: dict[str, object]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, (int, float, str, bool)) or value is None:
        out[prefix] = value


def latest_records() -> dict[str, dict | None]:
    """Every benchmark's last stored result, or None for one never run here."""
    records: dict[str, dict | None] = {}
    for name in available():
        path = RESULTS / f"{name}.json"
        try:
            records[name] = json.loads(path.read_text())
        except (OSError, ValueError):
            records[name] = None
    return records


def write_summary(info: dict[str, object], failed: list[str]) -> None:
    records = latest_records()
    results: dict[str, dict[str, object]] = {}
    lines = ["# Accord benchmarks", "", f"Machine: {info['cpus']} CPUs, {info['cpu']}, {info['memory']}, "
             f"Python {info['python']} ({info['python_executable']})", "", "| benchmark | measured at (load) | status |", "|---|---|---|"]
    for name, record in records.items():
        status = "failed in the latest run; figures below are older" if name in failed else "ok"
        if record is None:
            status = "failed, never measured" if name in failed else "never run: `python -m benchmarks " + name + "`"
            lines.append(f"| {name} | - | {status} |")
            results[name] = {"status": status}
            continue
        load = record.get("loadavg_1min", {})
        lines.append(f"| {name} | {record['measured_at']} ({load.get('before', '?')}) | {status} |")
        flat: dict[str, object] = {}
        flatten("", record["figures"], flat)
        results[name] = {"status": status, "measured_at": record["measured_at"], "loadavg_1min": load,
                         "figures": flat}
    lines += ["", "| benchmark | figure | value |", "|---|---|---|"]
    for name, result in results.items():
        for key, value in result.get("figures", {}).items():
            lines.append(f"| {name} | {key} | {value} |")
    (RESULTS / "summary.json").write_text(json.dumps({"machine": info, "results": results}, indent=2, default=str))
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    info = machine()
    failed = []
    for name in names:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        load_before = os.getloadavg()[0]
        try:
            figures = importlib.import_module(f"benchmarks.bench_{name}").run()
        except Exception:  # noqa: BLE001 - one failing benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            continue
        record = {"benchmark": name, "command": f"python -m benchmarks {name}",
                  "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "seconds": round(time.perf_counter() - started, 1), "machine": info,
                  "loadavg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
                  "figures": figures}
        (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2, default=str))
        print(json.dumps(figures, indent=2, default=str), flush=True)
    write_summary(info, failed)
    print(f"wrote {RESULTS / 'summary.md'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
