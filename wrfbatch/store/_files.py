"""Input files of runs: what was uploaded and what the cluster's copy holds."""

from __future__ import annotations

import logging
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import names
from ..errors import InvalidInputError, NotFoundError
from ._base import StoreBase, upsert
from .models import InputFile, Run, utc_now
from .records import InputFileRecord

logger = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def _check_sha256(value: str) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.match(value):
        raise InvalidInputError(
            f"invalid SHA-256 digest {value!r}: give 64 lower-case hex digits"
        )
    return value


def _require_run(session: Session, run_id: str) -> None:
    if session.get(Run, run_id) is None:
        raise NotFoundError(f"run {run_id} not found: check the run id")


def _find_file(session: Session, run_id: str, filename: str) -> InputFile:
    statement = select(InputFile).where(InputFile.run_id == run_id, InputFile.filename == filename)
    row = session.scalars(statement).first()
    if row is None:
        _require_run(session, run_id)
        raise NotFoundError(
            f"input file {filename!r} of run {run_id} not found: upload it first"
        )
    return row


class InputFileMethods(StoreBase):
    """Record uploads and staging of a run's input files."""

    def put_input_file(
        self, run_id: str, filename: str, size_bytes: int, sha256: str
    ) -> InputFileRecord:
        """Record an upload; an upload under the same name replaces the earlier one.

        A replaced file counts as not staged until :meth:`mark_input_file_staged`.

        Raises:
            InvalidInputError: the file name, size or digest is invalid.
            NotFoundError: the run does not exist.
        """
        names.check_file_name(filename)
        _check_sha256(sha256)
        if size_bytes < 0:
            raise InvalidInputError(f"invalid size {size_bytes} of {filename!r}: use 0 or more")
        values = {"size_bytes": size_bytes, "sha256": sha256, "time_uploaded": utc_now(),
                  "staged_sha256": None}
        with self._transaction(write=True) as session:
            _require_run(session, run_id)
            upsert(session, InputFile, {"run_id": run_id, "filename": filename, **values},
                   ["run_id", "filename"], update=values)
            record = InputFileRecord.from_row(_find_file(session, run_id, filename))
        logger.info("run %s: recorded input file %s (%d bytes)", run_id, filename, size_bytes)
        return record

    def get_input_file(self, run_id: str, filename: str) -> InputFileRecord:
        """Return one input file of a run.

        Raises:
            NotFoundError: the run or the file does not exist.
        """
        with self._transaction() as session:
            return InputFileRecord.from_row(_find_file(session, run_id, filename))

    def list_input_files(self, run_id: str) -> list[InputFileRecord]:
        """Return a run's input files sorted by name.

        Raises:
            NotFoundError: the run does not exist.
        """
        statement = select(InputFile).where(InputFile.run_id == run_id)
        with self._transaction() as session:
            _require_run(session, run_id)
            rows = session.scalars(statement.order_by(InputFile.filename))
            return [InputFileRecord.from_row(row) for row in rows]

    def delete_input_file(self, run_id: str, filename: str) -> None:
        """Forget an input file of a run.

        Raises:
            NotFoundError: the run or the file does not exist.
        """
        with self._transaction(write=True) as session:
            session.delete(_find_file(session, run_id, filename))
        logger.info("run %s: deleted input file record %s", run_id, filename)

    def mark_input_file_staged(
        self, run_id: str, filename: str, staged_sha256: str | None
    ) -> InputFileRecord:
        """Record the SHA-256 of the cluster's copy of a file (None: no copy there).

        Raises:
            InvalidInputError: the digest is invalid.
            NotFoundError: the run or the file does not exist.
        """
        if staged_sha256 is not None:
            _check_sha256(staged_sha256)
        with self._transaction(write=True) as session:
            row = _find_file(session, run_id, filename)
            row.staged_sha256 = staged_sha256
            session.flush()
            return InputFileRecord.from_row(row)
