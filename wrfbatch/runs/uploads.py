"""Uploaded input files, kept in the service's data directory until setup stages them."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import PayloadTooLargeError
from ..names import check_file_name, check_run_id

CHUNK_BYTES = 1024 * 1024


@dataclass
class StoredUpload:
    """A file written to the upload directory, with its size and SHA-256."""

    path: Path
    size_bytes: int
    sha256: str


class UploadArea:
    """The directory ``<data_dir>/uploads/<run_id>/`` that contains a run's uploaded files."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "uploads"

    def run_dir(self, run_id: str) -> Path:
        return self.root / check_run_id(run_id)

    def path(self, run_id: str, filename: str) -> Path:
        return self.run_dir(run_id) / check_file_name(filename)

    def save(
        self, run_id: str, filename: str, source: BinaryIO, max_bytes: int | None = None
    ) -> StoredUpload:
        """Stream ``source`` to the run's upload directory through a temporary file.

        The SHA-256 is computed on the way and the file is renamed into place
        only when complete, so a failed or oversized upload leaves the earlier
        file of the same name untouched. Raises PayloadTooLargeError past
        ``max_bytes``.
        """
        target = self.path(run_id, filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".upload-", dir=target.parent)
        try:
            size, digest = _copy_limited(source, handle, filename, max_bytes)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return StoredUpload(target, size, digest)

    def remove_run(self, run_id: str) -> None:
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)


def _copy_limited(
    source: BinaryIO, handle: int, filename: str, max_bytes: int | None
) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(handle, "wb") as out:
        while chunk := source.read(CHUNK_BYTES):
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise PayloadTooLargeError(
                    f"upload of {filename} exceeds the limit of {max_bytes} bytes; split the "
                    "input or ask the administrator to raise service.max_upload_bytes"
                )
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest()
