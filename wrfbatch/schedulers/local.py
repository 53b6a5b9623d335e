"""The local scheduler: runs the Slurm batch scripts as background process groups here.

It is the embedded default's scheduler, for machines without Slurm. Each job
gets a detached supervisor process (:mod:`.local_supervisor`) in a new
session, so jobs outlive the process that submitted them, and a JSON record in
the jobs directory, so a restarted service finds them. The batch script's
``#SBATCH`` header supplies the job name, task count, time limit, output and
error files and working directory; the script gets ``SLURM_JOB_ID``,
``SLURM_JOB_NAME``, ``SLURM_NTASKS`` and ``SLURM_SUBMIT_DIR`` as under Slurm.
Partition, account, QOS and other options are ignored.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ..errors import InvalidInputError, SubmitError
from ..states import JobRecord, JobState
from ..transports.local import LocalTransport
from .base import CheckResult, QueryResult, Scheduler
from .local_jobs import JobStore, LocalJob, process_is_alive, utc_now

logger = logging.getLogger(__name__)

#: Time a new job's supervisor has to record its pid before the job counts as lost.
SUPERVISOR_START_GRACE = timedelta(seconds=30)

_SHORT_OPTIONS = {"-J": "job-name", "-n": "ntasks", "-t": "time", "-o": "output",
                  "-e": "error", "-D": "chdir"}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


@dataclass
class BatchHeader:
    """The ``#SBATCH`` options of a batch script that the local scheduler honours."""

    job_name: str | None = None
    ntasks: int = 1
    time_limit_s: float | None = None
    output: str | None = None
    error: str | None = None
    chdir: str | None = None


def parse_slurm_time(text: str) -> float | None:
    """Convert a Slurm time limit to seconds; None for ``UNLIMITED`` or ``INFINITE``.

    Slurm's formats are ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M`` and ``D-H:M:S``.
    """
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "-1"):
        return None
    match = _TIME.match(text)
    if not match:
        raise InvalidInputError(
            f"invalid time limit {text!r}: use minutes, M:S, H:M:S or D-H:M:S as in sbatch"
        )
    days, first, second, third = match.groups()
    if days is not None:
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        return float(((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds)
    if third is not None:
        return float((int(first) * 60 + int(second)) * 60 + int(third))
    return float(int(first) * 60 + int(second or 0))


def parse_batch_header(script: str) -> BatchHeader:
    """Read the ``#SBATCH`` lines at the top of a batch script, as sbatch does.

    sbatch stops at the first line that is neither blank nor a comment.
    """
    header = BatchHeader()
    for line in script.splitlines()[1:]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if stripped.startswith("#SBATCH"):
            for option, value in _sbatch_options(stripped[len("#SBATCH"):]):
                _apply_option(header, option, value)
    return header


def _sbatch_options(text: str) -> list[tuple[str, str]]:
    words = shlex.split(text, comments=True)
    options = []
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("--") and "=" in word:
            option, value = word[2:].split("=", 1)
        elif word in _SHORT_OPTIONS or word.startswith("--"):
            option = _SHORT_OPTIONS.get(word, word[2:])
            index += 1
            value = words[index] if index < len(words) else ""
        else:
            option, value = _SHORT_OPTIONS.get(word[:2], word), word[2:]
        options.append((option, value))
        index += 1
    return options


def _apply_option(header: BatchHeader, option: str, value: str) -> None:
    if option == "job-name":
        header.job_name = value
    elif option == "ntasks":
        if not value.isdigit() or int(value) < 1:
            raise InvalidInputError(f"invalid #SBATCH --ntasks {value!r}: give a positive number")
        header.ntasks = int(value)
    elif option == "time":
        header.time_limit_s = parse_slurm_time(value)
    elif option in ("output", "error", "chdir"):
        setattr(header, option, value)


def expand_file_pattern(pattern: str, job_id: str, job_name: str, workdir: str) -> str:
    """Expand sbatch's ``%j``, ``%x``, ``%u`` and ``%%`` in an output file name."""
    replacements = {"j": job_id, "J": job_id, "x": job_name, "u": getpass.getuser(), "%": "%"}
    path = re.sub(r"%([jJxu%])", lambda match: replacements[match.group(1)], pattern)
    return os.path.join(workdir, path)


class LocalScheduler(Scheduler):
    """Runs batch scripts on this machine; job records live in ``jobs_dir``."""

    def __init__(
        self, transport: LocalTransport, jobs_dir: Path, *, kill_wait_s: float = 5.0
    ) -> None:
        super().__init__(transport)
        self.store = JobStore(Path(jobs_dir))
        self.kill_wait_s = kill_wait_s

    def submit(self, script_path: str, *, workdir: str, after_ok: str | None = None) -> str:
        job = self._new_job(script_path, workdir, after_ok)
        self.store.save(job)
        self._start_supervisor(job)
        logger.info("local job %s (%s) submitted from %s", job.job_id, job.name, script_path)
        return job.job_id

    def _new_job(self, script_path: str, workdir: str, after_ok: str | None) -> LocalJob:
        try:
            header = parse_batch_header(Path(script_path).read_text())
        except OSError as exc:
            raise SubmitError(f"cannot read batch script {script_path}: {exc.strerror}") from exc
        except InvalidInputError as exc:
            raise SubmitError(f"batch script {script_path} rejected: {exc}") from exc
        if after_ok is not None and self.store.load(after_ok) is None:
            raise SubmitError(f"job dependency problem: job {after_ok!r} is unknown to the "
                              f"local scheduler in {self.store.jobs_dir}")
        chdir = os.path.join(workdir, header.chdir) if header.chdir else workdir
        if not os.path.isdir(chdir):
            raise SubmitError(f"working directory {chdir} does not exist: create it first")
        job_id = self.store.allocate_id()
        name = header.job_name or os.path.basename(script_path)
        output = expand_file_pattern(header.output or "slurm-%j.out", job_id, name, chdir)
        error = expand_file_pattern(header.error, job_id, name, chdir) if header.error else output
        return LocalJob(
            job_id=job_id, name=name, script_path=os.path.abspath(script_path), workdir=chdir,
            submit_dir=workdir, output_path=output, error_path=error, ntasks=header.ntasks,
            time_limit_s=header.time_limit_s, after_ok=after_ok, kill_wait_s=self.kill_wait_s,
            submit_time=utc_now(),
        )

    def _start_supervisor(self, job: LocalJob) -> None:
        command = [sys.executable, "-m", "wrfbatch.schedulers.local_supervisor",
                   str(self.store.jobs_dir), job.job_id]
        try:
            starter = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            self.store.update(job.job_id, lambda j: _mark_lost(j, "SupervisorLaunchFailure"))
            raise SubmitError(f"starting the supervisor of local job {job.job_id} failed: "
                              f"{exc}") from exc
        # The first supervisor process exits once it has forked, but only after its Python
        # interpreter has started and imported wrfbatch. That took 0.3 to 0.5 s per job on the
        # 2-core benchmark machine (benchmarks/api.py), so a start request waited about 0.9 s
        # for its two jobs. A thread reaps that process instead. The job record already
        # allows for a supervisor that registers late (SUPERVISOR_START_GRACE).
        threading.Thread(target=starter.wait, name=f"reap-supervisor-{job.job_id}",
                         daemon=True).start()

    def query(self, job_ids: Iterable[str]) -> QueryResult:
        result = QueryResult()
        for job_id in dict.fromkeys(job_ids):
            job = self._load_checked(job_id)
            if job is None:
                result.missing.add(job_id)
            else:
                result.jobs[job_id] = job.to_record()
        return result

    def find_by_name(self, job_names: Iterable[str]) -> list[JobRecord]:
        wanted = set(job_names)
        jobs = [job for job in self.store.all_jobs() if job.name in wanted]
        return [self._check_supervisor(job).to_record() for job in jobs]

    def cancel(self, job_ids: Iterable[str]) -> None:
        for job_id in dict.fromkeys(job_ids):
            job = self.store.update(job_id, _request_cancel)
            if job is not None:
                logger.info("local job %s: cancel requested (state %s)", job_id, job.state.value)
                self._check_supervisor(job)

    def check(self) -> list[CheckResult]:
        try:
            self.store.jobs_dir.mkdir(parents=True, exist_ok=True)
            probe = self.store.jobs_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            return [CheckResult("local jobs directory", False,
                                f"{self.store.jobs_dir} is not writable: {exc.strerror}")]
        return [CheckResult("local jobs directory", True, str(self.store.jobs_dir))]

    def _load_checked(self, job_id: str) -> LocalJob | None:
        job = self.store.load(job_id)
        return None if job is None else self._check_supervisor(job)

    def _check_supervisor(self, job: LocalJob) -> LocalJob:
        """Settle a job whose supervisor has ended without recording a final state."""
        if job.state.final or _supervisor_may_run(job):
            return job
        if job.state is JobState.PENDING and not job.cancel_requested:
            if job.reason == "DependencyNeverSatisfied":
                return job
        updated = self.store.update(job.job_id, _settle_orphan)
        return updated or job


def _supervisor_may_run(job: LocalJob) -> bool:
    if job.supervisor_pid is None:
        started = job.submit_time or utc_now()
        return utc_now() - started < SUPERVISOR_START_GRACE
    return process_is_alive(job.supervisor_pid, job.supervisor_start_ticks)


def _request_cancel(job: LocalJob) -> None:
    if not job.state.final:
        job.cancel_requested = True


def _settle_orphan(job: LocalJob) -> None:
    """Finish a job whose supervisor is gone: cancelled if requested, else a node failure."""
    if job.state.final or _supervisor_may_run(job):
        return
    if job.pgid is not None and process_is_alive(job.pid, job.pid_start_ticks):
        try:
            os.killpg(job.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if job.cancel_requested:
        job.state, job.reason = JobState.CANCELLED, None
        job.exit_code, job.signal = 0, signal.SIGTERM.value
        job.end_time = utc_now()
    elif not (job.state is JobState.PENDING and job.reason == "DependencyNeverSatisfied"):
        _mark_lost(job, "SupervisorLost")
        logger.warning("local job %s: its supervisor process ended unexpectedly", job.job_id)


def _mark_lost(job: LocalJob, reason: str) -> None:
    job.state, job.reason = JobState.NODE_FAIL, reason
    job.end_time = utc_now()
