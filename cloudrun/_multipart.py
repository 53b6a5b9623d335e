"""A multipart/form-data request body that streams files from disk and reports progress."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

CHUNK_BYTES = 1024 * 1024

#: ``progress(bytes_sent, bytes_total)``, counting file contents only.
ProgressCallback = Callable[[int, int], None]


def _quote(filename: str) -> str:
    return filename.replace("\\", "\\\\").replace('"', '\\"')


class MultipartFiles:
    """Files sent as the ``file`` fields of one multipart/form-data body.

    The body is generated chunk by chunk, so a file is never read whole into
    memory, and its length is known in advance for the Content-Length header.
    """

    def __init__(self, paths: Sequence[Path], field: str = "file") -> None:
        self.paths = list(paths)
        self.boundary = "cloudrun-" + secrets.token_hex(16)
        self._heads = [self._head(field, path.name) for path in self.paths]
        self._tail = f"--{self.boundary}--\r\n".encode()
        self.file_bytes = sum(path.stat().st_size for path in self.paths)

    def _head(self, field: str, filename: str) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{_quote(filename)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        framing = sum(len(head) + 2 for head in self._heads) + len(self._tail)
        return framing + self.file_bytes

    def iter_body(self, progress: ProgressCallback | None = None) -> Iterator[bytes]:
        """Yield the body; ``progress`` is called after each chunk of file data."""
        sent = 0
        for head, path in zip(self._heads, self.paths, strict=True):
            yield head
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    sent += len(chunk)
                    yield chunk
                    if progress is not None:
                        progress(sent, self.file_bytes)
            yield b"\r\n"
        yield self._tail
