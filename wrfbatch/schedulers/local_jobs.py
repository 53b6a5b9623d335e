"""Job records of the local scheduler, kept as one JSON file per job in a jobs directory.

The scheduler and each job's supervisor process share these files. Every
read-modify-write holds an exclusive ``flock`` on ``<jobs_dir>/.lock`` and
replaces the file atomically, so a reader without the lock reads either the
old or the new record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import SchedulerError
from ..states import JobRecord, JobState

_LOCK_NAME = ".lock"
_LAST_ID_NAME = "last_job_id"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class LocalJob:
    """One job of the local scheduler: what to run, and its state so far."""

    job_id: str
    name: str
    script_path: str
    workdir: str
    submit_dir: str
    output_path: str
    error_path: str
    ntasks: int = 1
    # None means no time limit.
    time_limit_s: float | None = None
    after_ok: str | None = None
    kill_wait_s: float = 5.0
    state: JobState = JobState.PENDING
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    supervisor_pid: int | None = None
    supervisor_start_ticks: int | None = None
    pid: int | None = None
    pid_start_ticks: int | None = None
    pgid: int | None = None
    cancel_requested: bool = False

    def to_json(self) -> str:
        values = dataclasses.asdict(self)
        values["state"] = self.state.value
        for key in ("submit_time", "start_time", "end_time"):
            moment = values[key]
            values[key] = moment.isoformat() if moment else None
        return json.dumps(values, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LocalJob:
        values: dict[str, Any] = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in values.items() if key in known}
        values["state"] = JobState(values["state"])
        for key in ("submit_time", "start_time", "end_time"):
            if values.get(key):
                values[key] = datetime.fromisoformat(values[key])
        return cls(**values)

    def to_record(self) -> JobRecord:
        """Return the job as the scheduler interface reports it."""
        return JobRecord(
            job_id=self.job_id,
            name=self.name,
            state=self.state,
            slurm_state=self.state.value,
            reason=self.reason,
            exit_code=self.exit_code,
            signal=self.signal,
            submit_time=self.submit_time,
            start_time=self.start_time,
            end_time=self.end_time,
            partition="local",
        )


class JobStore:
    """The JSON job records in one jobs directory."""

    def __init__(self, jobs_dir: Path) -> None:
        self.jobs_dir = Path(jobs_dir)

    def path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the jobs directory's lock, which serializes every record update."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        with open(self.jobs_dir / _LOCK_NAME, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def allocate_id(self) -> str:
        """Return the next job id: increasing integers, never reused in this directory."""
        with self.locked():
            counter = self.jobs_dir / _LAST_ID_NAME
            last = int(counter.read_text().strip() or 0) if counter.exists() else 0
            self._write(counter, f"{last + 1}\n")
        return str(last + 1)

    def load(self, job_id: str) -> LocalJob | None:
        """Return a job's record, or None when this directory has no job with that id."""
        if not job_id.isdigit():
            return None
        try:
            text = self.path(job_id).read_text()
        except FileNotFoundError:
            return None
        try:
            return LocalJob.from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise SchedulerError(
                f"job record {self.path(job_id)} is not valid: {exc}; remove it if the job "
                "is no longer needed"
            ) from exc

    def save(self, job: LocalJob) -> None:
        self._write(self.path(job.job_id), job.to_json())

    def update(self, job_id: str, change: Callable[[LocalJob], None]) -> LocalJob | None:
        """Apply ``change`` to a job's record under the lock; return the new record."""
        with self.locked():
            job = self.load(job_id)
            if job is not None:
                change(job)
                self.save(job)
        return job

    def all_jobs(self) -> list[LocalJob]:
        jobs = []
        for path in sorted(self.jobs_dir.glob("*.json")):
            job = self.load(path.stem)
            if job is not None:
                jobs.append(job)
        return jobs

    def _write(self, target: Path, text: str) -> None:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=self.jobs_dir)
        try:
            with open(handle, "w") as out:
                out.write(text)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def process_start_ticks(pid: int) -> int | None:
    """Return a live process's start time in clock ticks since boot, None if it is gone.

    With the pid, the start time identifies a process even after its pid is reused.
    A zombie counts as gone. Reads ``/proc/<pid>/stat`` (Linux).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in field 2 may contain spaces, so split after its closing bracket.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_is_alive(pid: int | None, start_ticks: int | None) -> bool:
    """Return whether the process with this pid and start time still runs."""
    if pid is None:
        return False
    ticks = process_start_ticks(pid)
    return ticks is not None and (start_ticks is None or ticks == start_ticks)
