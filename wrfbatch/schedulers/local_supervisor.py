"""Supervisor of one local job: waits for its dependency, runs the batch script, records the end.

``python -m wrfbatch.schedulers.local_supervisor <jobs_dir> <job_id>`` is
started by :class:`~wrfbatch.schedulers.local.LocalScheduler` in a new
session. It forks once more so that it is nobody's child (a restarted service
does not have to reap it), then acts like slurmctld and slurmstepd for one
job: it enforces the time limit and carries out cancel requests with SIGTERM
to the job's process group, then SIGKILL after the kill wait.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..states import JobState
from .local_jobs import JobStore, LocalJob, process_start_ticks, utc_now

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1
DEPENDENCY_POLL_INTERVAL_S = 0.25


def main(argv: list[str]) -> int:
    jobs_dir, job_id = Path(argv[0]), argv[1]
    if os.fork() > 0:
        os._exit(0)
    store = JobStore(jobs_dir)
    pid = os.getpid()
    store.update(job_id, lambda job: _set_supervisor(job, pid))
    logging.basicConfig(
        filename=jobs_dir / f"{job_id}.supervisor.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        supervise(store, job_id)
    except Exception:
        logger.exception("supervisor of job %s failed", job_id)
        store.update(job_id, lambda job: _end(job, JobState.FAILED, "SupervisorFailure", 1, None))
        return 1
    return 0


def _set_supervisor(job: LocalJob, pid: int) -> None:
    job.supervisor_pid = pid
    job.supervisor_start_ticks = process_start_ticks(pid)


def supervise(store: JobStore, job_id: str) -> None:
    """Run one job from PENDING to its final state."""
    if not _wait_for_dependency(store, job_id):
        return
    job = store.load(job_id)
    if job is None or job.state is not JobState.PENDING:
        return
    process = _start(store, job)
    if process is not None:
        _wait_for_end(store, job_id, process)


def _wait_for_dependency(store: JobStore, job_id: str) -> bool:
    """Wait until the job may start; False when it was cancelled or never can start."""
    while True:
        job = store.load(job_id)
        if job is None:
            return False
        if job.cancel_requested:
            store.update(job_id, lambda j: _end(j, JobState.CANCELLED, None, 0, None))
            logger.info("job %s cancelled while pending", job_id)
            return False
        if job.after_ok is None:
            return True
        parent = store.load(job.after_ok)
        parent_state = parent.state if parent else JobState.UNKNOWN
        if parent_state is JobState.COMPLETED:
            return True
        if parent is None or parent_state.final:
            # Like Slurm without --kill-on-invalid-dep: the job stays pending until cancelled.
            store.update(job_id, lambda j: setattr(j, "reason", "DependencyNeverSatisfied"))
            logger.info("job %s: dependency on job %s can never be satisfied (%s)",
                        job_id, job.after_ok, parent_state.value)
            return False
        if job.reason != "Dependency":
            store.update(job_id, lambda j: setattr(j, "reason", "Dependency"))
        time.sleep(DEPENDENCY_POLL_INTERVAL_S)


def job_environment(job: LocalJob) -> dict[str, str]:
    """Return the environment of the batch script: this process's, plus Slurm's job variables."""
    environment = dict(os.environ)
    environment.update(
        SLURM_JOB_ID=job.job_id,
        SLURM_JOBID=job.job_id,
        SLURM_JOB_NAME=job.name,
        SLURM_NTASKS=str(job.ntasks),
        SLURM_NPROCS=str(job.ntasks),
        SLURM_JOB_NUM_NODES="1",
        SLURM_SUBMIT_DIR=job.submit_dir,
    )
    return environment


def _start(store: JobStore, job: LocalJob) -> subprocess.Popen[bytes] | None:
    try:
        process = _launch(job)
    except OSError as exc:
        logger.error("job %s could not start: %s", job.job_id, exc)
        store.update(job.job_id, lambda j: _end(j, JobState.FAILED, "JobLaunchFailure", 1, None))
        return None

    def mark_running(record: LocalJob) -> None:
        record.state = JobState.RUNNING
        record.reason = None
        record.start_time = utc_now()
        record.pid = record.pgid = process.pid
        record.pid_start_ticks = process_start_ticks(process.pid)

    store.update(job.job_id, mark_running)
    logger.info("job %s started as process group %d", job.job_id, process.pid)
    return process


def _launch(job: LocalJob) -> subprocess.Popen[bytes]:
    output = open(job.output_path, "ab")
    try:
        error = output if job.error_path == job.output_path else open(job.error_path, "ab")
        try:
            return subprocess.Popen(
                ["/bin/bash", job.script_path],
                cwd=job.workdir,
                env=job_environment(job),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=error,
                start_new_session=True,
            )
        finally:
            error.close()
    finally:
        output.close()


def _wait_for_end(store: JobStore, job_id: str, process: subprocess.Popen[bytes]) -> None:
    job = store.load(job_id)
    if job is None:
        _signal_group(process.pid, signal.SIGKILL)
        return
    deadline = None if job.time_limit_s is None else time.monotonic() + job.time_limit_s
    ending_state: JobState | None = None
    kill_at: float | None = None
    while True:
        try:
            return_code = process.wait(timeout=POLL_INTERVAL_S)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if ending_state is None:
            ending_state = _ending_state(store, job_id, deadline, now)
            if ending_state is not None:
                logger.info("job %s: %s, sending SIGTERM", job_id, ending_state.value)
                _signal_group(process.pid, signal.SIGTERM)
                kill_at = now + job.kill_wait_s
        elif kill_at is not None and now >= kill_at:
            logger.info("job %s still runs after the kill wait, sending SIGKILL", job_id)
            _signal_group(process.pid, signal.SIGKILL)
            kill_at = None
    # Like slurmstepd, end every process the script left behind.
    _signal_group(process.pid, signal.SIGKILL)
    _record_end(store, job_id, return_code, ending_state)


def _ending_state(
    store: JobStore, job_id: str, deadline: float | None, now: float
) -> JobState | None:
    """Return CANCELLED or TIMEOUT when the job must be ended now, else None."""
    job = store.load(job_id)
    if job is not None and job.cancel_requested:
        return JobState.CANCELLED
    if deadline is not None and now >= deadline:
        return JobState.TIMEOUT
    return None


def _signal_group(pgid: int, signal_number: signal.Signals) -> None:
    try:
        os.killpg(pgid, signal_number)
    except ProcessLookupError:
        pass


def _record_end(
    store: JobStore, job_id: str, return_code: int, ending_state: JobState | None
) -> None:
    # Popen reports death by signal N as -N; Slurm reports it as exit code 0, signal N.
    exit_code, signal_number = (0, -return_code) if return_code < 0 else (return_code, 0)
    if ending_state is not None:
        # Slurm reports a cancelled or timed-out job as 0:15 whatever the script returned.
        exit_code, signal_number = 0, signal.SIGTERM.value
        state, reason = ending_state, ("TimeLimit" if ending_state is JobState.TIMEOUT else None)
    elif return_code == 0:
        state, reason = JobState.COMPLETED, None
    else:
        state, reason = JobState.FAILED, "NonZeroExitCode" if exit_code else None
    store.update(job_id, lambda job: _end(job, state, reason, exit_code, signal_number))
    logger.info("job %s ended: %s, exit code %d:%d", job_id, state.value, exit_code, signal_number)


def _end(
    job: LocalJob, state: JobState, reason: str | None, exit_code: int, signal_number: int | None
) -> None:
    job.state = state
    job.reason = reason
    job.exit_code = exit_code
    job.signal = signal_number or 0
    job.end_time = utc_now()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
