"""The filter columns of an audit event: indexed copies of values inside its hashed details.

The workspace filters a million events by protocol, subgroup, outcome and the organisations
concerned, so those values need columns with indexes. The chain's hash covers only ``details``
(its format is fixed and third parties verify it), so the columns are *derived* from hashed
values by :func:`indexed_values`, written by ``record()`` and checked by ``verify``: a column
edited to hide an event from a filtered view no longer equals what the details say.

Pure: no Flask, no database, so the rule is the same wherever it runs.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

#: The keys of ``details`` the columns copy; ``protocol`` is ``"code:vN"`` and the column
#: keeps the code, so one filter finds every version of a protocol.
PROTOCOL_KEY = "protocol"
SUBGROUP_KEY = "subgroup"
OUTCOME_KEY = "outcome"
COUNTERPARTY_KEY = "to_org"
#: Events about a protocol version name it as their subject (``code:vN``) rather than in details.
PROTOCOL_SUBJECT = "protocol_version"
#: Column widths: a longer value is not copied (the column stays empty), never cut short.
WIDTHS = {"protocol": 64, "subgroup": 64, "outcome": 32, "counterparty": 64}


class IndexedValues(NamedTuple):
    protocol: str | None
    subgroup: str | None
    outcome: str | None
    counterparty: str | None


def protocol_code(reference: str) -> str:
    """``"cdsg-fsp:v2"`` -> ``"cdsg-fsp"``; a bare code stays as it is."""
    return reference.split(":v", 1)[0]


def indexed_values(subject_type: str | None, subject_id: str | None, details: Mapping[str, Any]) -> IndexedValues:
    """What the filter columns of an event with these hashed values must hold."""
    protocol = details.get(PROTOCOL_KEY)
    if isinstance(protocol, str):
        protocol = protocol_code(protocol)
    elif subject_type == PROTOCOL_SUBJECT and subject_id is not None:
        protocol = protocol_code(subject_id)
    else:
        protocol = None
    return IndexedValues(
        protocol=_fits(protocol, "protocol"),
        subgroup=_fits(details.get(SUBGROUP_KEY), "subgroup"),
        outcome=_fits(details.get(OUTCOME_KEY), "outcome"),
        counterparty=_fits(details.get(COUNTERPARTY_KEY), "counterparty"),
    )


def _fits(value: Any, column: str) -> str | None:
    if isinstance(value, str) and len(value) <= WIDTHS[column]:
        return value
    return None


#: In canonical JSON a member is written ``"key":`` and every quote inside a string is escaped,
#: so when none of these occurs anywhere in the text, no copied key holds a string at any depth.
KEY_MARKERS = tuple(f'"{key}":"' for key in (PROTOCOL_KEY, SUBGROUP_KEY, OUTCOME_KEY, COUNTERPARTY_KEY))
_NOTHING = (None, None, None, None)
_KEYS = (("protocol", PROTOCOL_KEY), ("subgroup", SUBGROUP_KEY), ("outcome", OUTCOME_KEY),
         ("counterparty", COUNTERPARTY_KEY))
_quote = json.encoder.encode_basestring


def row_columns_match(row: tuple[Any, ...]) -> bool:
    """Whether a stored event's filter columns equal what its details say, for
    ``chain.verify_rows``'s ``row_check``. The row is ``chain.ROW_COLUMNS`` (its canonical text
    already matched to its hash) then subject_type, subject_id, protocol, subgroup, outcome and
    counterparty. The event's own members (action, actor, details, ...) share no name with the
    copied keys, so the whole text can be searched as if it were the details.

    Most events copy nothing, and a substring test proves it; details without nested objects
    (one brace of their own) are checked by finding each ``"key":"value"`` member; anything else
    is parsed. It runs for each of a million events, hence the tests prepared per combination of
    column values and kept (they repeat: a few outcomes, protocols, subgroups, organisations).
    """
    text = row[4]
    columns = row[7:11]
    if row[5] != PROTOCOL_SUBJECT:
        if columns == _NOTHING:
            m1, m2, m3, m4 = KEY_MARKERS
            if m1 not in text and m2 not in text and m3 not in text and m4 not in text:
                return True
        elif text.count("{") == 2:  # the event's brace and its details': no nested object
            tests = _tests.get(columns)
            if tests is None:
                tests = _tests_for(columns)
            for absent, present in tests:
                if absent is not None:
                    if absent in text:
                        break
                    continue
                for member in present:
                    if member in text:
                        break
                else:
                    break
            else:
                return True
    try:
        details = json.loads(text)["details"]
    except (TypeError, ValueError, KeyError):
        return False
    if not isinstance(details, dict):
        return False
    return indexed_values(row[5], row[6], details) == columns


_tests: dict[tuple[Any, ...], tuple[tuple[str | None, tuple[str, ...]], ...]] = {}


def _tests_for(columns: tuple[Any, ...]) -> tuple[tuple[str | None, tuple[str, ...]], ...]:
    """Per column: the marker that must be absent (an empty column), or the member texts one of
    which must be present. A value too long to copy gets no member text, so the row is parsed."""
    tests = []
    for (column, key), value in zip(_KEYS, columns):
        if value is None:
            tests.append((f'"{key}":"', ()))
            continue
        if not isinstance(value, str) or len(value) > WIDTHS[column]:
            tests.append((None, ()))
            continue
        member = f'"{key}":{_quote(value)}'
        present = (member + ",", member + "}")
        if column == "protocol" and ":v" not in value:
            present += (member[:-1] + ":v",)  # "code:vN" copied as "code"
        tests.append((None, present))
    result = tuple(tests)
    if len(_tests) < 4096:  # a bound, so that odd values cannot pile up
        _tests[columns] = result
    return result
