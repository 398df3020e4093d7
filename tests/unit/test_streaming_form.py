"""Reading a multipart upload as it arrives: fields before the file, then the file as a stream."""
from __future__ import annotations

import io
import os

import pytest

from app.transfers.multipart import MalformedUpload, StreamingForm

BOUNDARY = b"----accord-test-boundary"


def body(*parts: tuple[str, str | None, bytes], close: bool = True) -> bytes:
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += b"--" + BOUNDARY + b"\r\n" + f"Content-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: text/csv\r\n"
        out += b"\r\n" + content + b"\r\n"
    return out + (b"--" + BOUNDARY + b"--\r\n" if close else b"")


class Trickle(io.RawIOBase):
    """A stream that hands over at most ``step`` bytes per read, like a slow connection."""

    def __init__(self, data: bytes, step: int):
        self.data, self.step, self.position = data, step, 0

    def read(self, size: int = -1) -> bytes:
        size = self.step if size < 0 else min(size, self.step)
        piece = self.data[self.position:self.position + size]
        self.position += len(piece)
        return piece


def read_all(part, size=10_000) -> bytes:
    out = bytearray()
    while piece := part.read(size):
        out += piece
    return bytes(out)


@pytest.mark.parametrize("step", [1, 7, 4096, 1_000_000])
def test_fields_then_the_file_in_pieces(step):
    content = os.urandom(300_000) + b"\r\n--" + BOUNDARY[:10] + b"not a boundary"
    form = StreamingForm(Trickle(body(("csrf_token", None, b"tok3n"), ("payload", "a.csv", content),
                                      ("submit", None, b"")), step), BOUNDARY, read_size=65536)
    part = form.next_file("payload")
    assert form.fields == {"csrf_token": "tok3n"}
    assert part.filename == "a.csv" and part.content_type == "text/csv"
    assert read_all(part) == content
    assert part.read(10) == b""


def test_no_such_file_part_gives_none():
    form = StreamingForm(io.BytesIO(body(("csrf_token", None, b"t"))), BOUNDARY)
    assert form.next_file("payload") is None


def test_other_file_parts_before_it_are_skipped():
    form = StreamingForm(io.BytesIO(body(("other", "x.bin", b"x" * 1000), ("payload", "b.csv", b"wanted"))), BOUNDARY)
    assert read_all(form.next_file("payload")) == b"wanted"


def test_a_body_that_ends_early_is_malformed():
    form = StreamingForm(io.BytesIO(body(("payload", "a.csv", b"x" * 5000), close=False)[:-20]), BOUNDARY)
    part = form.next_file("payload")
    with pytest.raises(MalformedUpload):
        read_all(part)


def test_an_overlong_field_is_malformed():
    form = StreamingForm(io.BytesIO(body(("csrf_token", None, b"t" * 100_000), ("payload", "a", b"x"))), BOUNDARY,
                         max_field_bytes=1000)
    with pytest.raises(MalformedUpload):
        form.next_file("payload")


def test_reads_are_bounded():
    form = StreamingForm(io.BytesIO(body(("payload", "a", b"x" * 10))), BOUNDARY)
    with pytest.raises(ValueError):
        form.next_file("payload").read(-1)
