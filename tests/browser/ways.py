"""The three ways a core journey runs: an ordinary desktop browser, without JavaScript (every
journey must work without it) and on a 320 px wide screen, where no page may scroll sideways."""
from __future__ import annotations

import pytest

WAYS = [
    pytest.param({}, id="desktop"),
    pytest.param({"javascript": False}, id="without-javascript"),
    pytest.param({"narrow": True}, id="320px-wide"),
]


def journey_name(role: str, way: dict) -> str:
    """``recipient``, ``recipient-without-javascript`` or ``recipient-320px``: the screenshot folder."""
    if way.get("javascript") is False:
        return f"{role}-without-javascript"
    if way.get("narrow"):
        return f"{role}-320px"
    return role
