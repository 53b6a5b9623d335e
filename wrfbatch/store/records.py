"""Plain records that the store returns: copies of rows, detached from any session."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..states import JobState, RunState, Stage
from . import models


# Column names of the runs table, which are also field names of RunRecord.
RUN_COLUMNS = tuple(column.key for column in models.Run.__table__.columns)


@dataclass(frozen=True)
class InputFileRecord:
    """An uploaded input file of a run."""

    id: int
    run_id: str
    filename: str
    size_bytes: int
    sha256: str
    time_uploaded: datetime
    staged_sha256: str | None

    @property
    def staged(self) -> bool:
        """True when the cluster's copy has the same SHA-256 as the upload."""
        return self.staged_sha256 == self.sha256

    @classmethod
    def from_row(cls, row: models.InputFile) -> InputFileRecord:
        return cls(
            id=row.id,
            run_id=row.run_id,
            filename=row.filename,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            time_uploaded=row.time_uploaded,
            staged_sha256=row.staged_sha256,
        )


@dataclass(frozen=True)
class RunRecord:
    """A run as stored, with its input files and the users it is shared with."""

    id: str
    owner: str
    run_name: str
    model: str
    version: str
    cluster: str
    status: RunState
    error_code: str | None
    error_message: str | None
    attempt: int
    cores: int | None
    namelist_summary: dict[str, Any] | None
    percent_complete: float | None
    remaining_time_s: float | None
    output_files: list[dict[str, Any]]
    output_size_bytes: int
    disk_usage_bytes: int
    required_input_files: list[Any]
    time_created: datetime
    time_started: datetime | None
    time_stopped: datetime | None
    time_updated: datetime
    deleted: bool
    row_version: int
    warning: str | None = None
    input_files: list[InputFileRecord] = field(default_factory=list)
    shared_with: list[str] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: models.Run) -> RunRecord:
        values = {name: getattr(row, name) for name in RUN_COLUMNS}
        values["status"] = RunState(row.status)
        values["output_files"] = list(row.output_files or [])
        values["required_input_files"] = list(row.required_input_files or [])
        return cls(
            **values,
            input_files=[InputFileRecord.from_row(f) for f in row.input_files],
            shared_with=sorted(share.user_name for share in row.shares),
        )



@dataclass(frozen=True)
class RunJob:
    """One batch job of a run as the store keeps it (``job_id`` is the scheduler's id)."""

    id: int
    run_id: str
    attempt: int
    stage: Stage
    job_name: str
    job_id: str | None
    state: JobState
    slurm_state: str
    reason: str | None
    exit_code: int | None
    time_submitted: datetime | None
    time_started: datetime | None
    time_ended: datetime | None

    @classmethod
    def from_row(cls, row: models.Job) -> RunJob:
        return cls(
            id=row.id,
            run_id=row.run_id,
            attempt=row.attempt,
            stage=Stage(row.stage),
            job_name=row.job_name,
            job_id=row.job_id,
            state=JobState(row.state),
            slurm_state=row.slurm_state,
            reason=row.reason,
            exit_code=row.exit_code,
            time_submitted=row.time_submitted,
            time_started=row.time_started,
            time_ended=row.time_ended,
        )


@dataclass(frozen=True)
class UserRecord:
    """A user of the service."""

    name: str
    is_admin: bool
    time_created: datetime

    @classmethod
    def from_row(cls, row: models.User) -> UserRecord:
        return cls(name=row.name, is_admin=row.is_admin, time_created=row.time_created)


@dataclass(frozen=True)
class TokenRecord:
    """An API token's metadata; the token itself is never stored."""

    id: int
    user_name: str
    label: str
    prefix: str
    time_created: datetime
    time_revoked: datetime | None
    time_last_used: datetime | None

    @property
    def revoked(self) -> bool:
        return self.time_revoked is not None

    @classmethod
    def from_row(cls, row: models.Token) -> TokenRecord:
        return cls(
            id=row.id,
            user_name=row.user_name,
            label=row.label,
            prefix=row.prefix,
            time_created=row.time_created,
            time_revoked=row.time_revoked,
            time_last_used=row.time_last_used,
        )
