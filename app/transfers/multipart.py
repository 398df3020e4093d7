"""Reading a ``multipart/form-data`` upload as it arrives, so the file part is never buffered.

Werkzeug's own form parser spools a large file part to a temporary file on disk, and for a
transfer that file would hold the plaintext. This reader uses Werkzeug's sans-IO decoder
instead: the small fields before the file (the CSRF token) are collected, then the file part is
handed over as a stream that yields its bytes piece by piece, straight into the cipher.
The form must put its ordinary fields before the file input, as the upload page does.
"""
from __future__ import annotations

from typing import IO

from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData, Preamble


class MalformedUpload(ValueError):
    """The body is not the multipart form it claims to be, or it ended early."""


class StreamingForm:
    def __init__(self, stream: IO[bytes], boundary: bytes, *, read_size: int = 256 * 1024,
                 max_field_bytes: int = 16 * 1024, max_parts: int = 16) -> None:
        self._stream = stream
        self._read_size = read_size
        self._max_field_bytes = max_field_bytes
        # The decoder's buffer is drained before each new piece is fed, so it never holds more
        # than one piece plus a part's headers; anything larger is a malformed body.
        self._decoder = MultipartDecoder(boundary, max_form_memory_size=read_size + max_field_bytes,
                                         max_parts=max_parts)
        self._ended = False
        #: The ordinary fields read so far (the first value of each name).
        self.fields: dict[str, str] = {}

    def next_file(self, name: str) -> "FilePart | None":
        """Read the fields before the file part called ``name`` and return that part, unread;
        None if the body ends without one. Other file parts before it are skipped."""
        while True:
            event = self._next_event()
            if isinstance(event, Preamble):
                continue
            if isinstance(event, Field):
                self.fields.setdefault(event.name, self._field_value())
            elif isinstance(event, File):
                if event.name == name:
                    return FilePart(self, event.filename, event.headers.get("Content-Type"))
                self._skip_part()
            elif isinstance(event, Epilogue):
                return None
            else:
                raise MalformedUpload("unexpected data outside a form part")

    def _field_value(self) -> str:
        value = bytearray()
        while True:
            event = self._next_event()
            if not isinstance(event, Data):
                raise MalformedUpload("a form field ended early")
            value += event.data
            if len(value) > self._max_field_bytes:
                raise MalformedUpload("a form field is too long")
            if not event.more_data:
                return value.decode("utf-8", "replace")

    def _skip_part(self) -> None:
        while True:
            event = self._next_event()
            if not isinstance(event, Data):
                raise MalformedUpload("a form part ended early")
            if not event.more_data:
                return

    def _next_event(self):
        while True:
            try:
                event = self._decoder.next_event()
            except ValueError as exc:
                raise MalformedUpload(str(exc)) from None
            if not isinstance(event, NeedData):
                return event
            if self._ended:
                raise MalformedUpload("the body ended before the form did")
            piece = self._stream.read(self._read_size)
            if piece:
                self._decoder.receive_data(piece)
            else:
                self._ended = True
                self._decoder.receive_data(None)


class FilePart:
    """One file part, readable once, in order, like a file opened for reading."""

    def __init__(self, form: StreamingForm, filename: str, content_type: str | None) -> None:
        self.filename = filename
        self.content_type = content_type
        self._form = form
        self._buffer = bytearray()
        self._done = False

    def read(self, size: int) -> bytes:
        if size < 1:
            raise ValueError("read a positive number of bytes at a time: the part is never held whole")
        while not self._done and len(self._buffer) < size:
            event = self._form._next_event()
            if not isinstance(event, Data):
                raise MalformedUpload("the file part ended early")
            self._buffer += event.data
            self._done = not event.more_data
        piece = bytes(self._buffer[:size])
        del self._buffer[:size]
        return piece
