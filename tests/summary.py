"""Figures a test wants shown at the end of the run without ``-s`` (the matrix's request count,
the number of generated API cases), printed by the terminal summary hook in conftest.py."""
from __future__ import annotations

import pytest

LINES = pytest.StashKey[list[str]]()


def report(config: pytest.Config, line: str) -> None:
    config.stash.setdefault(LINES, []).append(line)
