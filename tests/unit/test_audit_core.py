"""The audit workspace's pure pieces: the filter columns' rule, the fast path over stored rows
(it must give verify_chain's report or step aside), COPY parsing, the SVG chart and
``chain.py verify --each``."""
from __future__ import annotations

import contextlib
import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from app.audit import chain, chart, indexing, verification

KEY = b"unit-test-audit-key-not-secret"
START = datetime(2026, 1, 5, 9, 30, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- the filter columns


@pytest.mark.parametrize(("subject_type", "subject_id", "details", "expected"), [
    ("exchange", "7", {"outcome": "deny", "protocol": "vcs-safeguarding:v2", "subgroup": "vcs-group",
                       "to_org": "kent-police"}, ("vcs-safeguarding", "vcs-group", "deny", "kent-police")),
    ("exchange", "8", {"outcome": "allow", "protocol": None, "subgroup": None, "to_org": "bluewater"},
     (None, None, "allow", "bluewater")),
    ("protocol_version", "ocg-disruption:v1", {"content_hash": "ab"}, ("ocg-disruption", None, None, None)),
    ("protocol_version", "ocg-disruption:v1", {"protocol": "asb-case-review:v1"}, ("asb-case-review", None, None, None)),
    ("user", "3", {}, (None, None, None, None)),
    ("exchange", "9", {"outcome": 3, "subgroup": ["a"], "to_org": {"x": 1}}, (None, None, None, None)),
    ("exchange", "10", {"outcome": "x" * 33, "protocol": "p" * 65}, (None, None, None, None)),
    ("exchange", "11", {"protocol": "bare-code"}, ("bare-code", None, None, None)),
    ("exchange", "12", {"nested": {"outcome": "deny"}}, (None, None, None, None)),
])
def test_filter_columns_copy_top_level_strings_of_the_details(subject_type, subject_id, details, expected):
    assert tuple(indexing.indexed_values(subject_type, subject_id, details)) == expected


def _row(subject_type, subject_id, details, columns, actor=None):
    text = chain.canonical_bytes(1, "0" * 64, START, "x.y", actor, "kent-cc", subject_type, subject_id,
                                 details).decode()
    return (1, "0" * 64, "1" * 64, "", text, subject_type, subject_id, *columns)


@pytest.mark.parametrize(("details", "columns", "matches"), [
    ({}, (None, None, None, None), True),
    ({"nested": {"outcome": "deny"}}, (None, None, None, None), True),  # nested: not copied
    ({"outcome": "deny"}, (None, None, None, None), False),  # a copied value was blanked
    ({"outcome": "deny"}, (None, None, "deny", None), True),
    ({"outcome": "deny"}, (None, None, "allow", None), False),
    ({"note": 'he said "outcome":"deny"'}, (None, None, None, None), True),  # inside a string
    ({"to_org": "kent-cc", "protocol": "a:v1"}, ("a", None, None, "kent-cc"), True),
    ({"to_org": "kent-cc", "protocol": "a:v1"}, ("a", None, None, "dartford-bc"), False),
    ({}, (None, None, "deny", None), False),  # a value added to a column
    ({"protocol": "a:v1", "nested": {"protocol": "b:v1"}}, ("a", None, None, None), True),  # parsed
    ({"protocol": "a:v1", "nested": {"protocol": "b:v1"}}, ("b", None, None, None), False),
    ({"outcome": "x" * 40}, (None, None, None, None), True),  # too long to copy
    ({"protocol": "a:b:v2"}, ("a:b", None, None, None), True),
    ({"protocol": "a:v1:v2"}, ("a:v1", None, None, None), False),  # the code ends at the first ":v"
    ({"subgroup": 'q"uote\\'}, (None, 'q"uote\\', None, None), True),
    ({"outcome": 'x","y":"z'}, (None, None, 'x","y":"z', None), True),  # quotes escaped in the text
    ({"outcome": "x", "y": "z"}, (None, None, 'x","y":"z', None), False),  # a column spelling two members
    ({"outcome": "a\\"}, (None, None, "a\\", None), True),
    ({"outcome": 'a\\",'}, (None, None, "a\\", None), False),
    ({"outcome": "deny", "to_org": "kent-cc"}, (None, None, "deny", "dartford-bc"), False),
])
def test_a_stored_rows_columns_are_checked_against_its_details(details, columns, matches):
    assert indexing.row_columns_match(_row("exchange", "1", details, columns)) is matches
    expected = tuple(indexing.indexed_values("exchange", "1", details)) == columns
    assert matches is expected  # the fast check agrees with the rule itself


def test_columns_of_protocol_version_events_come_from_their_subject():
    assert indexing.row_columns_match(_row("protocol_version", "ocg:v1", {}, ("ocg", None, None, None)))
    assert not indexing.row_columns_match(_row("protocol_version", "ocg:v1", {}, (None, None, None, None)))
    assert indexing.row_columns_match(_row("exchange", "1", {}, (None, None, None, None), actor='"outcome":"deny"'))


# --------------------------------------------------------------------------- the fast path


def _chain(n: int, *, key: bytes = KEY) -> list[chain.EventRecord]:
    events, prev = [], chain.GENESIS_HASH
    for seq in range(1, n + 1):
        details = {"outcome": ("allow", "deny")[seq % 2], "to_org": "kent-police", "note": f"é\"{seq}\\\n"} \
            if seq % 3 else {"n": seq}
        event = chain.seal(seq=seq, prev_hash=prev, occurred_at=START + timedelta(seconds=seq, microseconds=seq),
                           action="exchange.recorded", actor=f"officer{seq}@kent-cc.example" if seq % 4 else None,
                           organisation="kent-cc", subject_type="exchange", subject_id=str(seq), details=details,
                           key=key)
        events.append(event)
        prev = event.hash
    return events


def _rows(events: list[chain.EventRecord]) -> list[tuple]:
    """Rows as the database hands them to the fast path."""
    rows = []
    for e in events:
        text = chain.canonical_bytes(e.seq, e.prev_hash, e.occurred_at, e.action, e.actor, e.organisation,
                                     e.subject_type, e.subject_id, e.details).decode()
        rows.append((e.seq, e.prev_hash, e.hash, e.mac, text, e.subject_type, e.subject_id,
                     *indexing.indexed_values(e.subject_type, e.subject_id, e.details)))
    return rows


def _column_rows(events: list[chain.EventRecord]) -> list[tuple]:
    """Rows as the database hands them to the exact path."""
    return [(e.seq, chain.format_timestamp(e.occurred_at), e.action, e.actor, e.organisation, e.subject_type,
             e.subject_id, json.dumps(e.details, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
             e.prev_hash, e.hash, e.mac, *indexing.indexed_values(e.subject_type, e.subject_id, e.details))
            for e in events]


def _signed(events, seq):
    signing = chain.Ed25519PrivateKey.generate()
    checkpoint = chain.sign_checkpoint(signing, chain.key_id_for(signing), seq, events[seq - 1].hash, START)
    return checkpoint, signing.public_key()


def test_the_fast_path_reports_exactly_what_verify_chain_reports_for_a_sound_chain():
    events = _chain(40)
    checkpoint, public = _signed(events, 30)
    for kwargs in ({"key": KEY}, {"key": None}, {"key": KEY, "checkpoint": checkpoint, "public_key": public},
                   {"key": KEY, "start_after": (10, events[9].hash)}):
        rows = _rows(events[kwargs["start_after"][0]:] if "start_after" in kwargs else events)
        fast = chain.verify_rows(rows, row_check=indexing.row_columns_match, **kwargs)
        slow = chain.verify_chain(events[kwargs["start_after"][0]:] if "start_after" in kwargs else events, **kwargs)
        assert fast == slow and fast.ok


def _edit(rows, index, position, value):
    row = list(rows[index])
    row[position] = value
    rows[index] = tuple(row)


@pytest.mark.parametrize("tamper", [
    lambda rows: _edit(rows, 9, 4, rows[9][4].replace("officer", "mallory")),  # content
    lambda rows: _edit(rows, 9, 4, rows[9][4].replace("kent-police", "kent-cc")),  # details
    lambda rows: _edit(rows, 9, 4, rows[9][4].replace('":', '": ')),  # same event, not canonical text
    lambda rows: _edit(rows, 9, 3, "0" * 64),  # mac
    lambda rows: _edit(rows, 9, 1, "f" * 64),  # link
    lambda rows: _edit(rows, 9, 2, "f" * 64),  # stored hash
    lambda rows: rows.pop(9),  # gap
    lambda rows: rows.insert(9, rows.pop(10)),  # order
    lambda rows: _edit(rows, 9, 9, "allow" if rows[9][9] == "deny" else "deny"),  # filter column
    lambda rows: _edit(rows, 9, 4, rows[9][4].replace("T09:30", " 09:30")),  # timestamp written another way
])
def test_the_fast_path_steps_aside_at_anything_unusual(tamper):
    rows = _rows(_chain(20))
    tamper(rows)
    assert chain.verify_rows(rows, key=KEY, row_check=indexing.row_columns_match) is None


def test_the_fast_path_steps_aside_for_a_forged_or_unmet_checkpoint():
    events = _chain(20)
    checkpoint, public = _signed(events, 15)
    forged = chain.Checkpoint(checkpoint.seq, checkpoint.head_hash, checkpoint.signed_at, checkpoint.key_id,
                              "00" * 64)
    assert chain.verify_rows(_rows(events), key=KEY, checkpoint=forged, public_key=public) is None
    assert chain.verify_rows(_rows(events[:12]), key=KEY, checkpoint=checkpoint, public_key=public) is None


def test_segments_joined_read_as_the_whole():
    events = _chain(30)
    checkpoint, public = _signed(events, 25)
    first = chain.verify_rows(_rows(events[:12]), key=KEY)
    second = chain.verify_rows(_rows(events[12:]), key=KEY, start_after=(12, events[11].hash),
                               checkpoint=checkpoint, public_key=public)
    joined = chain.joined_report(checked=first.checked + second.checked, head_seq=second.head_seq,
                                 head_hash=second.head_hash, checkpoint=checkpoint, checkpoint_verified=True,
                                 macs_checked=True)
    assert joined == chain.verify_chain(events, key=KEY, checkpoint=checkpoint, public_key=public)


def test_the_exact_path_names_a_filter_column_edited_after_sealing():
    events = _chain(20)
    rows = _column_rows(events)
    _edit(rows, 13, 13, "allow" if rows[13][13] == "deny" else "deny")
    report = verification.exact_report(rows, key=KEY, checkpoint=None, public_key=None)
    assert not report.ok and report.first_bad_seq == 14 and report.problem == "column_mismatch"
    assert report.head_seq == 13 and report.head_hash == events[12].hash and report.checked == 13
    _edit(rows, 4, 3, "mallory")  # a broken chain before it is reported first
    report = verification.exact_report(rows, key=KEY, checkpoint=None, public_key=None)
    assert report.first_bad_seq == 5 and report.problem == chain.Problem.HASH_MISMATCH


def test_the_exact_path_reports_unreadable_rows_as_malformed():
    rows = _column_rows(_chain(5))
    _edit(rows, 2, 7, "{not json")
    report = verification.exact_report(rows, key=KEY, checkpoint=None, public_key=None)
    assert report.problem == chain.Problem.MALFORMED_EVENT and report.first_bad_seq == 3
    rows = _column_rows(_chain(5))
    _edit(rows, 2, 1, "yesterday")
    report = verification.exact_report(rows, key=KEY, checkpoint=None, public_key=None)
    assert report.problem == chain.Problem.MALFORMED_EVENT and report.first_bad_seq == 3


# --------------------------------------------------------------------------- COPY text format


def test_copy_lines_are_read_with_nulls_and_escapes():
    plain = "\t".join(["7", "2026-01-05T09:30:00.000000Z", "a.b", "\\N", "kent-cc", "exchange", "7", '{"a":1}',
                       "0" * 64, "1" * 64, "2" * 64, "\\N", "\\N", "deny", "\\N"])
    assert verification._copy_row(plain) == (7, "2026-01-05T09:30:00.000000Z", "a.b", None, "kent-cc", "exchange",
                                             "7", '{"a":1}', "0" * 64, "1" * 64, "2" * 64, None, None, "deny", None)
    escaped = "\t".join(["8", "t", "a.b", "tab\\there", "\\\\N", "\\N", "\\N", '{"q":"\\\\"x\\\\""}', "p", "h", "m",
                         "\\N", "\\N", "\\N", "\\N"])
    row = verification._copy_row(escaped)
    assert row[3] == "tab\there" and row[4] == "\\N" and row[5] is None and row[7] == '{"q":"\\"x\\""}'
    with pytest.raises(ValueError):
        verification._copy_row("1\t2")


# --------------------------------------------------------------------------- the chart


def test_the_chart_is_an_accessible_image_whose_bars_carry_the_figures():
    svg = chart.stacked_bars("Decisions <per> month", "Two groups & one-offs", ["Jan 2026", "Feb 2026", "Mar 2026"],
                             [chart.Series("VCS <group>", (3, 0, 5)), chart.Series("One-off", (1, 2, 0))])
    assert svg.startswith("<svg") and 'role="img"' in svg and 'aria-labelledby="chart-title chart-desc"' in svg
    assert "<title id=\"chart-title\">Decisions &lt;per&gt; month</title>" in svg
    assert "VCS &lt;group&gt;" in svg and "<group>" not in svg and "style=" not in svg
    totals = [int(t) for t in re.findall(r'data-total="(\d+)"', svg)]
    assert totals == [4, 2, 5]
    values = re.findall(r'data-series="([^"]+)" data-value="(\d+)"', svg)
    assert sorted(values) == sorted([("VCS &lt;group&gt;", "3"), ("VCS &lt;group&gt;", "5"), ("One-off", "1"),
                                     ("One-off", "2")])


def test_the_chart_refuses_figures_that_do_not_fit():
    with pytest.raises(ValueError):
        chart.stacked_bars("t", "d", ["a", "b"], [chart.Series("s", (1,))])
    with pytest.raises(ValueError):
        chart.stacked_bars("t", "d", ["a"], [chart.Series("s", (-1,))])
    assert 'data-total="0"' in chart.stacked_bars("t", "d", ["a"], [])


# --------------------------------------------------------------------------- chain.py verify --each


def test_verify_each_checks_every_event_of_a_filtered_export(tmp_path, capsys):
    events = _chain(12)
    selection = [e for e in events if e.seq % 3 == 0]
    path = tmp_path / "filtered.json"
    path.write_text(json.dumps(chain.export_document(selection)))
    assert chain.main(["verify", str(path)]) == 1  # not a chain: the first event is 3
    assert chain.main(["verify", "--each", str(path)]) == 0
    assert "each of the 4 events matches its own hash" in capsys.readouterr().out
    document = json.loads(path.read_text())
    document["events"][1]["actor"] = "mallory@example.org"
    path.write_text(json.dumps(document))
    assert chain.main(["verify", "--each", "--json", str(path)]) == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mismatched"] == [6]


def test_fast_copy_lines_read_empty_as_null_and_unescape_values():
    text = _row("exchange", "9", {"outcome": "deny"}, ())[4]
    fields = ["9", "a" * 64, "b" * 64, "c" * 64, text, "exchange", "9", "", "", "deny", ""]
    row = verification._fast_copy_row("\t".join(fields))
    assert row == (9, "a" * 64, "b" * 64, "c" * 64, text, "exchange", "9", None, None, "deny", None)
    assert indexing.row_columns_match(row)
    blanked = verification._fast_copy_row("\t".join(fields[:9] + ["", ""]))  # the outcome column emptied
    assert not indexing.row_columns_match(blanked)
    escaped = "\t".join(["9", "p", "h", "m", '{"q":"\\\\"x\\\\"\\\\n"}', "", "", "", "", "", ""])
    assert verification._fast_copy_row(escaped)[4] == '{"q":"\\"x\\"\\n"}'
    with pytest.raises(ValueError):
        verification._fast_copy_row("\t".join(fields[:-1]))  # a field short


class _FakeCopy:
    """COPY output as psycopg hands it over: usually one row per block, sometimes not."""

    def __init__(self, blocks):
        self.blocks = blocks

    def __enter__(self):
        return iter(self.blocks)

    def __exit__(self, *exc):
        return False


class _FakeConnection:
    def __init__(self, blocks):
        self.blocks = blocks

    def transaction(self):
        return contextlib.nullcontext()

    def cursor(self):
        connection = self

        class Cursor:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def copy(self, statement):
                return _FakeCopy(connection.blocks)

        return Cursor()


def test_copy_blocks_are_read_as_lines_whether_whole_several_or_split():
    blocks = [memoryview(b"1\ta\n"), memoryview(b"2\tb\n3\tc\n"), memoryview(b"4\t"), memoryview(b"d\n5\te"),
              memoryview("\tf\u00e9\n".encode())]
    rows = list(verification._postgresql_rows(_FakeConnection(blocks), "x", lambda line: tuple(line.split("\t"))))
    assert rows == [("1", "a"), ("2", "b"), ("3", "c"), ("4", "d"), ("5", "e", "f\u00e9")]
