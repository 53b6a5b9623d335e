"""Rendering, uploading and submitting the batch scripts of one attempt of a run.

Submission is idempotent. Each job's name carries the run id, the attempt
and the stage, and the scheduler is searched for those names before
anything is submitted. A start that crashed or timed out after sbatch
therefore never produces a second job.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from ..errors import SubmitError
from ..namelist.decomposition import decomposition_problem
from ..namelist.parse import NamelistSummary
from ..rendering import BatchContext, TemplateRenderer, job_name, script_path
from ..states import JobRecord, JobState, Stage
from ..store import Store
from ..store.records import RunRecord
from .clusters import ClusterHandle

logger = logging.getLogger(__name__)


def stages_for(summary: NamelistSummary) -> tuple[Stage, Stage]:
    """Return the two stages of a run: real (or ideal) then wrf."""
    return (Stage.IDEAL if summary.ideal else Stage.REAL, Stage.WRF)


def real_stage_tasks(summary: NamelistSummary, cores: int, real_cores: int | None) -> int:
    """Return the MPI tasks for real.exe: the cluster's real_cores when the grid allows them."""
    if real_cores is None or real_cores >= cores:
        return cores
    if decomposition_problem(summary, real_cores) is None:
        return real_cores
    return cores


class StageSubmitter:
    """Submits and cancels the jobs of a run's attempt."""

    def __init__(self, store: Store, renderer: TemplateRenderer) -> None:
        self.store = store
        self.renderer = renderer

    def render_scripts(
        self,
        handle: ClusterHandle,
        record: RunRecord,
        summary: NamelistSummary,
        cores: int,
        attempt: int,
    ) -> list[tuple[Stage, str]]:
        """Render the batch script of each stage, in submission order."""
        install = handle.config.wrf[record.version]
        first, second = stages_for(summary)
        required = ("wrfinput_d01",) if summary.ideal else None
        scripts = []
        for stage, ntasks in (
            (first, real_stage_tasks(summary, cores, handle.config.real_cores)),
            (second, cores),
        ):
            context = BatchContext.for_cluster(
                handle.config, run_id=record.id, attempt=attempt, stage=stage,
                run_dir=handle.run_dir(record.id), wrf_install_path=install.path,
                ntasks=ntasks, walltime_min=handle.config.max_walltime_min,
                required_inputs=required if stage == Stage.WRF else None,
            )
            scripts.append((stage, self.renderer.render_batch_script(context)))
        return scripts

    def submit_all(self, handle: ClusterHandle, record: RunRecord, summary: NamelistSummary) -> None:
        """Submit every stage of the run's current attempt that the scheduler does not have.

        Raises SchedulerUnavailableError, SubmitError or TransportError; jobs
        submitted before the failure keep their saved ids.
        """
        run_dir = handle.run_dir(record.id)
        scripts = self.render_scripts(handle, record, summary, record.cores or 1, record.attempt)
        names = {stage: job_name(record.id, record.attempt, stage) for stage, _ in scripts}
        known = self._known_jobs(handle, list(names.values()))
        existing = {job.stage: job for job in self.store.jobs_for_run(record.id, record.attempt)}
        previous_id: str | None = None
        for stage, text in scripts:
            job = existing.get(stage) or self.store.add_job(record.id, record.attempt, stage,
                                                             names[stage])
            job_id = job.job_id or known.get(names[stage])
            if job_id is None:
                path = script_path(run_dir, stage)
                handle.transport.write_text(path, text, mode=0o755)
                job_id = handle.scheduler.submit(path, workdir=run_dir, after_ok=previous_id)
                logger.info("run %s: submitted %s stage as job %s", record.id, stage.value, job_id)
            else:
                logger.info("run %s: %s stage already has job %s", record.id, stage.value, job_id)
            if job.job_id != job_id:
                self.store.update_job(job.id, {"job_id": job_id, "state": JobState.PENDING,
                                               "time_submitted": datetime.now(UTC)})
            previous_id = job_id

    @staticmethod
    def _known_jobs(handle: ClusterHandle, names: list[str]) -> dict[str, str]:
        """Return the ids of jobs the scheduler already has under these names (not cancelled)."""
        found: list[JobRecord] = handle.scheduler.find_by_name(names)
        return {
            job.name: job.job_id
            for job in found
            if job.state not in (JobState.CANCELLED,)
        }

    def cancel_attempt(self, handle: ClusterHandle, run_id: str, attempt: int) -> None:
        """Cancel every job of an attempt, including jobs found only by name."""
        jobs = self.store.jobs_for_run(run_id, attempt)
        ids = {job.job_id for job in jobs if job.job_id}
        names = [job.job_name for job in jobs]
        if names:
            ids |= set(self._known_jobs(handle, names).values())
        if ids:
            handle.scheduler.cancel(sorted(ids))
        for job in jobs:
            if not job.state.final:
                self.store.update_job(job.id, {"state": JobState.CANCELLED,
                                               "time_ended": datetime.now(UTC)})
        logger.info("run %s: cancelled jobs %s of attempt %d", run_id, sorted(ids) or "none",
                    attempt)

    def wait_until_ended(
        self, handle: ClusterHandle, run_id: str, attempt: int, timeout_s: float = 30.0
    ) -> bool:
        """Wait until no job of the attempt is pending, running or completing.

        Returns False when jobs are still there after ``timeout_s`` (Slurm's
        KillWait is usually 30 s), so the caller can go on with a warning.
        """
        ids = [job.job_id for job in self.store.jobs_for_run(run_id, attempt) if job.job_id]
        deadline = time.monotonic() + timeout_s
        while ids:
            result = handle.scheduler.query(ids)
            ids = [job_id for job_id, job in result.jobs.items() if not job.state.final]
            if not ids:
                break
            if time.monotonic() > deadline:
                logger.warning("run %s: jobs %s still ending after %.0f s", run_id, ids,
                               timeout_s)
                return False
            time.sleep(0.5)
        return True


__all__ = ["StageSubmitter", "SubmitError", "stages_for"]
