"""Batch jobs of runs: one per stage and attempt."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..errors import ConflictError, InvalidInputError, NotFoundError
from ..states import JobState, Stage
from ._base import StoreBase
from .models import Job, Run
from .records import RunJob

logger = logging.getLogger(__name__)

UPDATABLE_JOB_FIELDS = frozenset(
    {"job_id", "state", "slurm_state", "reason", "exit_code",
     "time_submitted", "time_started", "time_ended"}
)
# Run ids per IN (...) query: below SQLite's default limit of 999 bound parameters.
_IDS_PER_QUERY = 500
_ACTIVE_JOB_STATES = [state.value for state in JobState if not state.final]


def _coerce_enum(enum_type: type[JobState] | type[Stage], value: Any, what: str) -> str:
    try:
        return enum_type(value).value
    except ValueError as exc:
        allowed = ", ".join(member.value for member in enum_type)
        raise InvalidInputError(f"invalid {what} {value!r}: use one of {allowed}") from exc


class JobMethods(StoreBase):
    """Record the batch jobs of runs and their states."""

    def add_job(
        self,
        run_id: str,
        attempt: int,
        stage: Stage | str,
        job_name: str,
        *,
        job_id: str | None = None,
        state: JobState | str = JobState.PENDING,
        time_submitted: datetime | None = None,
    ) -> RunJob:
        """Insert the job of one stage of one attempt of a run and return it.

        Add the job before calling sbatch and set ``job_id`` with
        :meth:`update_job` once sbatch has returned it, so that a crash in
        between leaves a trace.

        Raises:
            InvalidInputError: ``stage`` or ``state`` is invalid.
            NotFoundError: the run does not exist.
            ConflictError: the run already has a job for this attempt and stage.
        """
        row = Job(
            run_id=run_id, attempt=attempt, stage=_coerce_enum(Stage, stage, "stage"),
            job_name=job_name, job_id=job_id, state=_coerce_enum(JobState, state, "job state"),
            slurm_state="", time_submitted=time_submitted,
        )
        try:
            with self._transaction(write=True) as session:
                if session.get(Run, run_id) is None:
                    raise NotFoundError(f"run {run_id} not found: check the run id")
                session.add(row)
                session.flush()
                record = RunJob.from_row(row)
        except IntegrityError as exc:
            raise ConflictError(
                f"run {run_id} already has a {row.stage} job for attempt {attempt}: "
                "start a new attempt instead"
            ) from exc
        logger.info("run %s: added %s job %s of attempt %d", run_id, row.stage, job_name, attempt)
        return record

    def update_job(self, job_key: int, changes: Mapping[str, Any]) -> RunJob:
        """Apply ``changes`` to the job whose store id (``RunJob.id``) is ``job_key``.

        Raises:
            NotFoundError: no job has this id.
            InvalidInputError: a field is unknown or read-only, or a state is invalid.
        """
        values = self._checked_job_changes(changes)
        with self._transaction(write=True) as session:
            row = session.get(Job, job_key, with_for_update=True)
            if row is None:
                raise NotFoundError(f"job {job_key} not found in the store: check the job id")
            for key, value in values.items():
                setattr(row, key, value)
            session.flush()
            return RunJob.from_row(row)

    def jobs_for_run(self, run_id: str, attempt: int | None = None) -> list[RunJob]:
        """Return a run's jobs by attempt and submission order (only ``attempt``'s if given).

        Raises:
            NotFoundError: the run does not exist.
        """
        statement = select(Job).where(Job.run_id == run_id)
        if attempt is not None:
            statement = statement.where(Job.attempt == attempt)
        with self._transaction() as session:
            if session.get(Run, run_id) is None:
                raise NotFoundError(f"run {run_id} not found: check the run id")
            rows = session.scalars(statement.order_by(Job.attempt, Job.id))
            return [RunJob.from_row(row) for row in rows]

    def jobs_for_runs(self, runs: Mapping[str, int]) -> dict[str, list[RunJob]]:
        """Return the jobs of many runs at once: run id -> that attempt's jobs, in order.

        ``runs`` maps each run id to its attempt. A cluster refresh needs the jobs of
        every running run, and one query per run cost about 1 ms each on SQLite, so
        this reads them in one query per chunk of ids. Unknown run ids get an empty list.
        """
        found: dict[str, list[RunJob]] = {run_id: [] for run_id in runs}
        ids = list(runs)
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start:start + _IDS_PER_QUERY]
            statement = (select(Job).where(Job.run_id.in_(chunk))
                         .order_by(Job.run_id, Job.attempt, Job.id))
            with self._transaction() as session:
                for row in session.scalars(statement):
                    if row.attempt == runs[row.run_id]:
                        found[row.run_id].append(RunJob.from_row(row))
        return found

    def update_jobs(self, updates: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Apply many (job store id, changes) pairs in one transaction.

        The same rules as :meth:`update_job` apply, and nothing is written when one
        update is invalid or names an unknown job.
        """
        checked = [(key, self._checked_job_changes(changes)) for key, changes in updates]
        if not checked:
            return
        with self._transaction(write=True) as session:
            for key, values in checked:
                row = session.get(Job, key, with_for_update=True)
                if row is None:
                    raise NotFoundError(f"job {key} not found in the store: check the job id")
                for name, value in values.items():
                    setattr(row, name, value)

    @staticmethod
    def _checked_job_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(changes) - UPDATABLE_JOB_FIELDS
        if unknown:
            raise InvalidInputError(
                f"cannot update job field(s) {sorted(unknown)}: updatable fields are "
                f"{sorted(UPDATABLE_JOB_FIELDS)}"
            )
        values = dict(changes)
        if "state" in values:
            values["state"] = _coerce_enum(JobState, values["state"], "job state")
        return values

    def active_jobs(self, cluster: str) -> list[RunJob]:
        """Return the jobs on ``cluster`` whose state is not final, deleted runs included.

        Jobs whose ``job_id`` is still None (sbatch has not returned) are included.
        """
        statement = (
            select(Job)
            .join(Run, Run.id == Job.run_id)
            .where(Run.cluster == cluster, Job.state.in_(_ACTIVE_JOB_STATES))
            .order_by(Job.run_id, Job.attempt, Job.id)
        )
        with self._transaction() as session:
            return [RunJob.from_row(row) for row in session.scalars(statement)]
