"""bandit, the security linter, over the app: no finding of medium severity or above.

A finding that is not a problem is marked where it is, with ``# nosec BXXX`` and the reason
beside it, so the reason is reviewed with the code.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bandit_finds_nothing_of_medium_severity_or_above():
    if shutil.which("bandit", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("bandit is not installed: it is in the test extras (pip install -e '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "bandit", "-r", "app", "config.py", "-ll", "-f", "json", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    report = json.loads(result.stdout)
    findings = [f"{r['filename']}:{r['line_number']}: {r['test_id']} {r['issue_severity']}: {r['issue_text']}"
                for r in report["results"]]
    assert not findings, "bandit findings (fix them, or justify each with `# nosec BXXX` and a reason):\n" + \
        "\n".join(findings)
    assert not report["errors"], report["errors"]
    assert report["metrics"]["_totals"]["loc"] > 1000  # it really scanned the app
    assert result.returncode == 0, result.stderr
