"""The Slurm scheduler: sbatch, squeue, scancel, sacct and sinfo through a transport.

Commands are built as argument lists (the transport quotes them) and their
output is parsed by pure functions, tested on text captured from Slurm 22.05.
Times are requested as epoch seconds (``SLURM_TIME_FORMAT=%s``) so that the
cluster's time zone does not matter.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from ..errors import (
    ConnectionLostError,
    InvalidInputError,
    SchedulerError,
    SchedulerUnavailableError,
    SubmitError,
)
from ..names import check_remote_path
from ..states import JobRecord, JobState
from ..transports.base import CommandResult, Transport
from .base import CheckResult, QueryResult, Scheduler

logger = logging.getLogger(__name__)

#: Pending reasons that no change in the queue can clear (squeue(1) of Slurm 22.05,
#: "JOB REASON CODES"): the job waits until someone cancels or modifies it.
FINAL_PENDING_REASONS = frozenset({
    "DependencyNeverSatisfied",  # a job it depends on ended in a way that fails the dependency
    "BadConstraints",  # its constraints can not be satisfied
    "InvalidAccount",  # its account is invalid
    "InvalidQOS",  # its QOS is invalid
    "PartitionTimeLimit",  # its time limit exceeds the partition's limit
})
# AssocMax*Limit and QOSMax*Limit reasons that name a per-job limit: the job itself
# requests more than the limit allows (per-user and aggregate limits clear later).
_PER_JOB_LIMIT_REASON = re.compile(r"^(Assoc|QOS)Max\w*PerJob(Limit)?$")

_UNAVAILABLE_MESSAGES = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Slurm backup controller in standby mode",
    "Zero Bytes were transmitted or received",
)
_ACCOUNTING_DISABLED = "accounting storage is disabled"
_INVALID_JOB_ID = "Invalid job id specified"
_JOB_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")

# squeue --Format fields; a ':|' suffix separates them with '|' and no padding.
# The name comes last because it is the only field that may contain '|'.
_SQUEUE_FIELDS = ("JobID", "State", "Reason", "exit_code", "SubmitTime", "StartTime",
                  "EndTime", "Partition", "Name")
_SQUEUE_FORMAT = ",".join(f"{name}:|" for name in _SQUEUE_FIELDS[:-1]) + f",{_SQUEUE_FIELDS[-1]}:"
_SACCT_FIELDS = ("JobIDRaw", "State", "Reason", "ExitCode", "Submit", "Start", "End",
                 "Partition", "JobName")
_EPOCH_TIMES = ("env", "SLURM_TIME_FORMAT=%s")
_NO_TIME = {"", "N/A", "None", "Unknown", "0"}


def pending_reason_is_final(reason: str | None) -> bool:
    """Return whether a pending job with this reason can never start without intervention."""
    if not reason:
        return False
    return reason in FINAL_PENDING_REASONS or bool(_PER_JOB_LIMIT_REASON.match(reason))


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """Split Slurm's ``exit:signal`` form (``3:0``, ``0:11``) into exit code and signal."""
    code, sep, sig = text.strip().partition(":")
    if not code.isdigit() or (sep and not sig.isdigit()):
        return None, None
    return int(code), int(sig) if sep else 0


def parse_wait_status(text: str) -> tuple[int | None, int | None]:
    """Split the wait status printed by ``squeue -O exit_code`` (768: exit 3, 11: SIGSEGV)."""
    text = text.strip()
    if not text.isdigit():
        return None, None
    status = int(text)
    return status >> 8, status & 0x7F


def parse_sbatch_output(stdout: str) -> str:
    """Return the job id from ``sbatch --parsable`` output (``id`` or ``id;cluster``)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    job_id = lines[-1].split(";")[0] if lines else ""
    if not _JOB_ID.match(job_id):
        raise SchedulerError(f"sbatch printed no job id; its output was: {stdout.strip()!r}")
    return job_id


def error_reason(stderr: str) -> str:
    """Return the last error line of a Slurm command without its ``sbatch: error:`` prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line] or lines
    if not errors:
        return "(no error message)"
    reason = errors[-1].split("error:", 1)[-1].strip()
    return reason.removeprefix("Batch job submission failed:").strip()


def _parse_epoch(text: str) -> datetime | None:
    text = text.strip()
    if text in _NO_TIME or not text.isdigit():
        return None
    return datetime.fromtimestamp(int(text), timezone.utc)


def parse_squeue_output(stdout: str) -> dict[str, JobRecord]:
    """Parse ``squeue -h -O`` output in the field order of ``_SQUEUE_FIELDS``."""
    jobs = {}
    for line in stdout.splitlines():
        parts = line.split("|", len(_SQUEUE_FIELDS) - 1)
        if len(parts) < len(_SQUEUE_FIELDS):
            continue
        job_id, state, reason, wait_status, submit, start, end, partition, name = parts
        exit_code, signal_number = parse_wait_status(wait_status)
        job_state = JobState.parse(state)
        start_time, end_time = _parse_epoch(start), _parse_epoch(end)
        # Before the end squeue prints the expected start and end times and exit code 0.
        if not job_state.final:
            exit_code = signal_number = end_time = None
        if job_state is JobState.PENDING:
            start_time = None
        jobs[job_id.strip()] = JobRecord(
            job_id=job_id.strip(), name=name.strip(), state=job_state,
            slurm_state=state.strip(), reason=_reason(reason), exit_code=exit_code,
            signal=signal_number, submit_time=_parse_epoch(submit),
            start_time=start_time, end_time=end_time, partition=partition.strip() or None,
        )
    return jobs


def parse_sacct_output(stdout: str) -> dict[str, JobRecord]:
    """Parse ``sacct -X -P -n`` output in the field order of ``_SACCT_FIELDS``."""
    jobs = {}
    for line in stdout.splitlines():
        parts = line.split("|", len(_SACCT_FIELDS) - 1)
        if len(parts) < len(_SACCT_FIELDS):
            continue
        job_id, state, reason, exit_text, submit, start, end, partition, name = parts
        exit_code, signal_number = parse_exit_code(exit_text)
        jobs[job_id] = JobRecord(
            job_id=job_id, name=name, state=JobState.parse(state), slurm_state=state,
            reason=_reason(reason), exit_code=exit_code, signal=signal_number,
            submit_time=_parse_epoch(submit), start_time=_parse_epoch(start),
            end_time=_parse_epoch(end), partition=partition or None,
        )
    return jobs


def _reason(text: str) -> str | None:
    text = text.strip()
    return None if text in ("", "None", "(null)") else text


def _program(command: Sequence[str]) -> str:
    """Return the Slurm command's name, skipping the ``env NAME=value`` prefix."""
    words = [word for word in command if word != "env" and "=" not in word]
    return words[0] if words else ""


def _check_job_ids(job_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(job_ids))
    for job_id in ids:
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            raise InvalidInputError(f"invalid Slurm job id {job_id!r}: a job id is a number")
    return ids


class SlurmScheduler(Scheduler):
    """Submits, queries and cancels Slurm jobs with Slurm's commands.

    ``accounting`` is ``auto`` (use sacct until it reports that accounting
    is disabled), ``sacct`` or ``none``.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        partition: str | None = None,
        accounting: str = "auto",
        command_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(transport)
        self.partition = partition
        self.accounting_enabled = accounting != "none"
        self.command_timeout_s = command_timeout_s

    def _run(self, command: Sequence[str]) -> CommandResult:
        """Run a Slurm command; a dead connection or controller raises SchedulerUnavailableError."""
        try:
            result = self.transport.run(list(command), check=False,
                                        timeout_s=self.command_timeout_s)
        except ConnectionLostError as exc:
            raise SchedulerUnavailableError(
                f"{_program(command)} on {self.transport.host} did not complete: {exc}; "
                "retry later"
            ) from exc
        if result.exit_code != 0 and any(m in result.stderr for m in _UNAVAILABLE_MESSAGES):
            raise SchedulerUnavailableError(
                f"the Slurm controller of {self.transport.host} does not respond: "
                f"{error_reason(result.stderr)}; retry later"
            )
        return result

    def submit(self, script_path: str, *, workdir: str, after_ok: str | None = None) -> str:
        check_remote_path(script_path, "batch script path")
        check_remote_path(workdir, "working directory")
        command = ["sbatch", "--parsable", f"--chdir={workdir}"]
        if after_ok is not None:
            command.append(f"--dependency=afterok:{_check_job_ids([after_ok])[0]}")
        command.append(script_path)
        # NOTE: a timeout here may hide a job that sbatch did submit; find_by_name finds it.
        result = self._run(command)
        if result.exit_code != 0:
            raise SubmitError(f"sbatch rejected {script_path} on {self.transport.host}: "
                              f"{error_reason(result.stderr)}")
        job_id = parse_sbatch_output(result.stdout)
        logger.info("job %s submitted from %s (after_ok=%s)", job_id, script_path, after_ok)
        return job_id

    def _squeue(self, selection: Sequence[str]) -> CommandResult:
        return self._run([*_EPOCH_TIMES, "squeue", "-h", "-t", "all", *selection,
                          "-O", _SQUEUE_FORMAT])

    def query(self, job_ids: Iterable[str]) -> QueryResult:
        ids = _check_job_ids(job_ids)
        if not ids:
            return QueryResult()
        result = self._squeue(["-j", ",".join(ids)])
        if result.exit_code != 0 and _INVALID_JOB_ID in result.stderr:
            # squeue -j fails as a whole when its only id (in some versions, any id) is
            # unknown; listing the user's jobs tolerates purged ids.
            result = self._squeue(["--me"])
        if result.exit_code != 0:
            raise SchedulerError(f"squeue failed on {self.transport.host} (exit code "
                                 f"{result.exit_code}): {error_reason(result.stderr)}")
        found = parse_squeue_output(result.stdout)
        jobs = {job_id: found[job_id] for job_id in ids if job_id in found}
        return QueryResult(jobs=jobs, missing=set(ids) - set(jobs))

    def find_by_name(self, job_names: Iterable[str]) -> list[JobRecord]:
        names = sorted(set(job_names))
        if not names:
            return []
        for name in names:
            if "," in name or not name.isprintable():
                raise InvalidInputError(f"invalid job name {name!r}: no commas or control "
                                        "characters")
        result = self._squeue(["--me", f"--name={','.join(names)}"])
        if result.exit_code != 0:
            raise SchedulerError(f"squeue failed on {self.transport.host}: "
                                 f"{error_reason(result.stderr)}")
        return [job for job in parse_squeue_output(result.stdout).values() if job.name in names]

    def cancel(self, job_ids: Iterable[str]) -> None:
        ids = _check_job_ids(job_ids)
        if not ids:
            return
        result = self._run(["scancel", *ids])
        if result.exit_code != 0:
            raise SchedulerError(f"scancel {' '.join(ids)} failed on {self.transport.host} "
                                 f"(exit code {result.exit_code}): {error_reason(result.stderr)}")
        logger.info("cancel sent for jobs %s", ", ".join(ids))

    def accounting(self, job_ids: Iterable[str]) -> dict[str, JobRecord]:
        """Return sacct's records of the jobs; empty when accounting is disabled.

        NOTE: slurmdbd can briefly hold a placeholder record named "allocation" for a
        job that just ended, and job ids restart after a controller's state is reset,
        so callers compare the record's name with the job name they submitted.
        """
        ids = _check_job_ids(job_ids)
        if not ids or not self.accounting_enabled:
            return {}
        # -S: sacct's default window starts at midnight, which hides older jobs.
        result = self._run([*_EPOCH_TIMES, "sacct", "-X", "-P", "-n", "-S", "1970-01-02",
                            "-j", ",".join(ids), "-o", ",".join(_SACCT_FIELDS)])
        if result.exit_code != 0 and _ACCOUNTING_DISABLED in result.stderr + result.stdout:
            logger.info("accounting is disabled on %s; sacct will not be called again",
                        self.transport.host)
            self.accounting_enabled = False
            return {}
        if result.exit_code != 0:
            raise SchedulerError(f"sacct failed on {self.transport.host} (exit code "
                                 f"{result.exit_code}): {error_reason(result.stderr)}")
        records = parse_sacct_output(result.stdout)
        return {job_id: records[job_id] for job_id in ids if job_id in records}

    def check(self) -> list[CheckResult]:
        results = [self._check_command(name) for name in ("sbatch", "squeue", "scancel")]
        results.extend(self._check_partitions())
        return results

    def _check_command(self, name: str) -> CheckResult:
        try:
            result = self._run([name, "--version"])
        except SchedulerUnavailableError as exc:
            return CheckResult(name, False, str(exc))
        if result.exit_code != 0:
            return CheckResult(name, False, f"'{name} --version' failed (exit code "
                               f"{result.exit_code}): {error_reason(result.stderr)}; "
                               "install the Slurm client or fix PATH")
        return CheckResult(name, True, result.stdout.strip())

    def _check_partitions(self) -> list[CheckResult]:
        try:
            result = self._run(["sinfo", "-h", "-o", "%R"])
        except SchedulerUnavailableError as exc:
            return [CheckResult("partitions", False, str(exc))]
        if result.exit_code != 0:
            return [CheckResult("partitions", False,
                                f"sinfo failed: {error_reason(result.stderr)}")]
        partitions = sorted({line.strip() for line in result.stdout.splitlines() if line.strip()})
        checks = [CheckResult("partitions", bool(partitions), ", ".join(partitions) or "none")]
        if self.partition is not None:
            found = self.partition in partitions
            detail = "" if found else (f"partition {self.partition!r} not found; "
                                       f"available: {', '.join(partitions) or 'none'}")
            checks.append(CheckResult(f"partition {self.partition}", found, detail))
        return checks
