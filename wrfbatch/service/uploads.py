"""Streaming multipart uploads: files go from the request body to the run manager in chunks.

The body is never held whole in memory or spooled to a temporary file. A
worker thread runs :meth:`RunManager.upload` for each file part. The file
object that it reads pulls the next chunk of the request body from the event
loop only when it needs more data. So at most one network chunk per request is
buffered here, and a slow disk slows the client down instead of filling memory.
"""

from __future__ import annotations

import io
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import InvalidInputError, PayloadTooLargeError
from ..models import InputFile

logger = logging.getLogger(__name__)

# A request body may exceed the configured upload limit by this much, for the
# multipart boundaries and part headers around the files.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

_PART_BEGIN = "begin"
_PART_DATA = "data"
_PART_END = "end"


class Uploader(Protocol):
    """The part of the run manager that stores one uploaded file."""

    def upload(
        self, run_id: str, filename: str, source: Any, *, max_bytes: int | None = None
    ) -> InputFile: ...


def multipart_boundary(content_type: str | None) -> bytes:
    """Return the boundary of a ``multipart/form-data`` content type, or raise InvalidInputError."""
    media_type, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise InvalidInputError(
            f"invalid upload content type {content_type!r}: send the files as "
            "multipart/form-data, for example curl -F file=@namelist.input"
        )
    return boundary


def check_content_length(value: str | None, max_bytes: int) -> None:
    """Reject a request whose declared body size is over the limit, before reading it."""
    if value is None or not value.isdigit():
        return
    if int(value) > max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise PayloadTooLargeError(_too_large_message(int(value), max_bytes))


def _too_large_message(size_bytes: int, max_bytes: int) -> str:
    return (
        f"upload of {size_bytes} bytes is over the limit of {max_bytes} bytes per request; "
        "upload the files in several requests or ask the administrator to raise "
        "service.max_upload_bytes"
    )


class BodyReader:
    """Pulls the request body chunk by chunk and enforces the size limit while reading."""

    def __init__(self, pull: Callable[[], bytes | None], max_bytes: int) -> None:
        self._pull = pull
        self._max_bytes = max_bytes
        self.size_bytes = 0

    def read_chunk(self) -> bytes | None:
        """Return the next non-empty chunk, or None at the end of the body."""
        while True:
            chunk = self._pull()
            if chunk is None:
                return None
            if chunk:
                break
        self.size_bytes += len(chunk)
        if self.size_bytes > self._max_bytes + MULTIPART_OVERHEAD_BYTES:
            raise PayloadTooLargeError(_too_large_message(self.size_bytes, self._max_bytes))
        return chunk


@dataclass
class PartHeaders:
    """The form field name and file name of one multipart part."""

    name: str
    filename: str | None


class MultipartReader:
    """Splits a multipart/form-data body into parts, pulling body chunks only on demand."""

    def __init__(self, boundary: bytes, body: BodyReader) -> None:
        self._body = body
        self._events: deque[tuple[str, Any]] = deque()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._complete = False
        self._parser = MultipartParser(boundary, self._callbacks())

    def _callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(
                data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(
                data[start:end]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": lambda data, start, end: self._events.append(
                (_PART_DATA, bytes(data[start:end]))),
            "on_part_end": lambda: self._events.append((_PART_END, None)),
            "on_end": self._on_end,
        }

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        self._events.append((_PART_BEGIN, _part_headers(self._headers)))

    def _on_end(self) -> None:
        self._complete = True

    def next_event(self) -> tuple[str, Any] | None:
        """Return the next parser event, reading more of the body when none is queued."""
        while not self._events:
            chunk = self._body.read_chunk()
            if chunk is None:
                self._check_complete()
                return None
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise InvalidInputError(f"invalid multipart upload body: {exc}") from exc
        return self._events.popleft()

    def _check_complete(self) -> None:
        if not self._complete:
            raise InvalidInputError(
                "upload body ended before the final multipart boundary: the client sent an "
                "incomplete request; send it again"
            )

    def parts(self) -> Iterator[tuple[PartHeaders, PartStream]]:
        """Yield each part with a stream of its data; unread data is skipped afterwards."""
        while (event := self.next_event()) is not None:
            kind, value = event
            if kind != _PART_BEGIN:
                continue
            stream = PartStream(self)
            yield value, stream
            stream.drain()


def _part_headers(headers: dict[bytes, bytes]) -> PartHeaders:
    _, options = parse_options_header(headers.get(b"content-disposition", b""))
    filename = options.get(b"filename")
    return PartHeaders(
        name=options.get(b"name", b"").decode("utf-8", "replace"),
        filename=None if filename is None else filename.decode("utf-8", "replace"),
    )


class PartStream(io.RawIOBase):
    """A read-only binary file over the data of one part."""

    def __init__(self, reader: MultipartReader) -> None:
        super().__init__()
        self._reader = reader
        self._pending = b""
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending and not self._ended:
            self._pending = self._next_data()
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _next_data(self) -> bytes:
        while True:
            event = self._reader.next_event()
            if event is None or event[0] == _PART_END:
                self._ended = True
                return b""
            if event[0] == _PART_DATA and event[1]:
                return event[1]

    def drain(self) -> None:
        """Skip the rest of the part."""
        while not self._ended:
            self._pending = b""
            self._pending = self._next_data()
        self._pending = b""


def receive_files(
    uploader: Uploader, run_id: str, reader: MultipartReader, max_bytes: int
) -> list[InputFile]:
    """Store every file part of the body with the uploader; form fields are ignored."""
    stored: list[InputFile] = []
    for headers, stream in reader.parts():
        if headers.filename is None:
            logger.debug("run %s: skipping form field %r in upload", run_id, headers.name)
            continue
        source = io.BufferedReader(stream, buffer_size=256 * 1024)
        stored.append(uploader.upload(run_id, headers.filename, source, max_bytes=max_bytes))
        logger.debug("run %s: received %s (%d bytes)", run_id, headers.filename,
                    stored[-1].size)
    if not stored:
        raise InvalidInputError(
            "no files in the upload: send each file as a multipart file field, "
            "for example curl -F file=@namelist.input"
        )
    return stored
