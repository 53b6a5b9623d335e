"""One refresh of a cluster: the state, progress and outputs of its running runs.

A refresh costs a constant number of remote commands, whatever the number of
runs: one scheduler query for every job, one shell command that prints every
run's state files and the end of its rank-0 log, and ``sacct`` only for jobs
that left the queue without a state file. Where a job's state comes from,
highest first: the state file the batch script wrote, accounting, the queue.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import ConflictError
from ..models import RunError
from ..schedulers.base import QueryResult
from ..schedulers.slurm import pending_reason_is_final
from ..states import JobRecord, JobState, RunState, Stage, StageStateFile, parse_state_file
from ..store import Store
from ..store._runs import MAX_PAGE_SIZE
from ..store.records import RunJob, RunRecord
from ..wrflogs import classify_failure, parse_progress
from .clusters import ClusterHandle

logger = logging.getLogger(__name__)

# A job that is neither in the queue, nor in accounting, nor in a state file is
# given this long (the scheduler may not list a job it has just accepted).
VANISHED_GRACE = timedelta(seconds=120)
RSL_TAIL_BYTES = 4096
_MARK = "\x1e"  # ASCII record separator: cannot appear in a path that names.py accepts
_OUTPUT_PREFIXES = ("wrfout_", "wrfrst_", "wrfinput_", "wrfbdy_", "wrflowinp_", "auxhist")
_RUNNING = {RunState.STARTING, RunState.ACTIVE}
# Every run has two stages: real (or ideal), then wrf.
STAGES_PER_RUN = 2


def running_runs(store: Store, cluster: str) -> list[RunRecord]:
    """Return every starting or active run of a cluster."""
    runs: list[RunRecord] = []
    while True:
        page = store.list_runs(None, True, limit=MAX_PAGE_SIZE, offset=len(runs),
                               status=sorted(_RUNNING), cluster=cluster)
        runs += page
        if len(page) < MAX_PAGE_SIZE:
            return runs


@dataclass
class RunSnapshot:
    """State files and rank-0 log tail read from one run directory by the snapshot command."""

    states: dict[str, StageStateFile] = field(default_factory=dict)
    rsl_tail: str = ""
    rsl_mtime: float | None = None


def snapshot_script(run_dirs: list[str]) -> str:
    """Return a POSIX shell script that prints every run's state files and rsl.out.0000 tail."""
    lines = [f"printf '{_MARK}now %s\\n' \"$(date +%s)\""]
    for run_dir in run_dirs:
        quoted = shlex.quote(run_dir)
        lines.append(
            f"d={quoted}; printf '{_MARK}run %s\\n' \"$d\"; "
            f"for f in \"$d\"/.wrfbatch/*.state; do [ -f \"$f\" ] && "
            f"{{ printf '{_MARK}state\\n'; cat \"$f\"; }}; done; "
            f"if [ -f \"$d/rsl.out.0000\" ]; then "
            f"printf '{_MARK}rsl %s\\n' \"$(stat -c %Y \"$d/rsl.out.0000\")\"; "
            f"tail -c {RSL_TAIL_BYTES} \"$d/rsl.out.0000\"; echo; fi"
        )
    return "\n".join(lines) + "\n"


def parse_snapshots(output: str) -> tuple[float | None, dict[str, RunSnapshot]]:
    """Parse the snapshot script's output: the remote clock and a snapshot per run directory."""
    remote_now, snapshots = None, {}
    current: RunSnapshot | None = None
    for block in output.split(_MARK)[1:]:
        header, _, body = block.partition("\n")
        kind, _, value = header.partition(" ")
        if kind == "now" and value.strip().isdigit():
            remote_now = float(value)
        elif kind == "run":
            current = snapshots.setdefault(value, RunSnapshot())
        elif kind == "state" and current is not None:
            state = parse_state_file(body)
            if state is not None:
                current.states[state.stage] = state
        elif kind == "rsl" and current is not None:
            current.rsl_mtime = float(value) if value.strip().isdigit() else None
            current.rsl_tail = body
    return remote_now, snapshots


@dataclass
class Decision:
    """Outcome of a refresh for one run: its new state, error and changes to store."""

    status: RunState
    error: RunError | None = None
    failed_stage: Stage | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    job_updates: list[tuple[RunJob, dict[str, Any]]] = field(default_factory=list)


class ClusterRefresher:
    """Brings the stored state of a cluster's running runs up to date."""

    def __init__(self, store: Store, stall_timeout_s: float) -> None:
        self.store = store
        self.stall_timeout = timedelta(seconds=stall_timeout_s)

    def refresh(self, handle: ClusterHandle) -> None:
        runs = running_runs(self.store, handle.name)
        if not runs:
            return
        # One store query for every run's jobs, and one transaction for every job change
        # below: per-run queries and per-job updates made a refresh of 1,000 runs take
        # seconds on SQLite (benchmarks/refresh_scale.py).
        jobs = self.store.jobs_for_runs({run.id: run.attempt for run in runs})
        job_ids = [j.job_id for js in jobs.values() for j in js if j.job_id and not j.state.final]
        query = handle.scheduler.query(job_ids) if job_ids else QueryResult()
        output = handle.transport.run(
            ["sh", "-s"], stdin=snapshot_script([handle.run_dir(r.id) for r in runs]).encode()
        ).stdout
        remote_now, snapshots = parse_snapshots(output)
        accounted = self._accounting(handle, query, jobs, snapshots)
        decisions = []
        for run in runs:
            snapshot = snapshots.get(handle.run_dir(run.id), RunSnapshot())
            decisions.append(decide(run, jobs[run.id], query, accounted, snapshot, remote_now,
                                    self.stall_timeout.total_seconds()))
        self.store.update_jobs([(job.id, changes) for decision in decisions
                                for job, changes in decision.job_updates])
        for run, decision in zip(runs, decisions, strict=True):
            self._apply(handle, run, decision)

    def _accounting(
        self,
        handle: ClusterHandle,
        query: QueryResult,
        jobs: dict[str, list[RunJob]],
        snapshots: dict[str, RunSnapshot],
    ) -> dict[str, JobRecord]:
        """Ask accounting about jobs that left the queue without an ended state file."""
        wanted = []
        for run_id, run_jobs in jobs.items():
            states = snapshots.get(handle.run_dir(run_id), RunSnapshot()).states
            for job in run_jobs:
                state = states.get(job.stage.value)
                ended = state is not None and state.job_id == job.job_id and state.ended
                if job.job_id in query.missing and not ended:
                    wanted.append(job.job_id)
        if not wanted:
            return {}
        # Accounting may hold a placeholder record ("allocation") for a job that has just
        # ended, or another job under a reused id: keep only records with our job name.
        names = {j.job_id: j.job_name for js in jobs.values() for j in js}
        return {job_id: found for job_id, found in handle.scheduler.accounting(wanted).items()
                if found.name == names.get(job_id)}

    def _apply(self, handle: ClusterHandle, run: RunRecord, decision: Decision) -> None:
        """Store a run's new state; its job changes are already stored by :meth:`refresh`."""
        changes = dict(decision.changes)
        if decision.status != run.status:
            changes["status"] = decision.status
        if decision.status.final:
            changes["time_stopped"] = datetime.now(UTC)
            changes["remaining_time_s"] = None
            if run.warning is not None:
                changes["warning"] = None
        if decision.error is not None and decision.failed_stage is not None:
            decision.error = self._classify(handle, run, decision)
            changes.update(error_code=decision.error.code, error_message=decision.error.message)
        if not changes:
            return
        try:
            self.store.update_run(run.id, changes, expected_status=_RUNNING)
        except ConflictError:
            logger.info("run %s: changed while refreshing (stopped or deleted); kept", run.id)
            return
        if decision.status != run.status:
            logger.info("run %s: %s -> %s", run.id, run.status.value, decision.status.value)
        if decision.status.final:
            self._after_end(handle, run.id, decision)

    def _after_end(self, handle: ClusterHandle, run_id: str, decision: Decision) -> None:
        if decision.status == RunState.ERROR:
            # The stages after the failed one can never run (their dependency failed).
            waiting = [j for j in self.store.jobs_for_run(run_id) if j.job_id
                       and not j.state.final]
            if waiting:
                handle.scheduler.cancel([j.job_id for j in waiting if j.job_id])
                now = datetime.now(UTC)
                self.store.update_jobs([(j.id, {"state": JobState.CANCELLED, "time_ended": now})
                                        for j in waiting])
        self.collect_outputs(handle, run_id)

    def _classify(self, handle: ClusterHandle, run: RunRecord, decision: Decision) -> RunError:
        """Read the failed stage's logs and name the cause."""
        stage = decision.failed_stage
        assert stage is not None and decision.error is not None
        job = next((j for j in self.store.jobs_for_run(run.id, run.attempt)
                    if j.stage == stage), None)
        run_dir = handle.run_dir(run.id)
        logs = read_failure_logs(handle, run_dir, stage, job.job_id if job else None)
        if decision.error.code not in ("unknown",):
            found = classify_failure(stage.value, None, None, logs.text, logs.job_stderr)
            return found if found.code != "unknown" else decision.error
        return classify_failure(
            stage.value, job.state if job else None, job.exit_code if job else None,
            logs.text, logs.job_stderr, rsl_files_found=logs.rsl_files_found,
            launcher_command=handle.config.launcher.kind,
        )

    def collect_outputs(self, handle: ClusterHandle, run_id: str) -> None:
        """Record the run's output files with their sizes."""
        files = handle.transport.list_dir(handle.run_dir(run_id))
        outputs = [{"filename": f.name, "size": f.size_bytes} for f in files
                   if f.name.startswith(_OUTPUT_PREFIXES)]
        size = sum(item["size"] for item in outputs)
        inputs = sum(f.size_bytes for f in self.store.get_run(run_id).input_files)
        self.store.update_run(run_id, {"output_files": outputs, "output_size_bytes": size,
                                       "disk_usage_bytes": size + inputs})


@dataclass
class FailureLogs:
    text: str
    job_stderr: str
    rsl_files_found: bool


def read_failure_logs(
    handle: ClusterHandle, run_dir: str, stage: Stage, job_id: str | None
) -> FailureLogs:
    """Read the ends of a failed stage's rank-0 logs and job error file in one command."""
    log_dir = f"{run_dir}/logs/{stage.value}" if stage != Stage.WRF else run_dir
    err = f"{run_dir}/.wrfbatch/{stage.value}-{job_id}.err" if job_id else "/dev/null"
    script = (
        f"cd {shlex.quote(log_dir)} 2>/dev/null || cd {shlex.quote(run_dir)} || exit 0; "
        f"ls rsl.out.* >/dev/null 2>&1 && echo '{_MARK}rsl yes'; "
        f"echo '{_MARK}log'; tail -c 16384 rsl.error.0000 2>/dev/null; "
        f"tail -c 16384 rsl.out.0000 2>/dev/null; "
        f"echo '{_MARK}err'; tail -c 8192 {shlex.quote(err)} 2>/dev/null; exit 0"
    )
    output = handle.transport.run(["sh", "-c", script], check=False).stdout
    parts = {block.partition("\n")[0].split(" ")[0]: block.partition("\n")[2]
             for block in output.split(_MARK)[1:]}
    return FailureLogs(parts.get("log", ""), parts.get("err", ""), "rsl" in parts)


def decide(
    run: RunRecord,
    jobs: list[RunJob],
    query: QueryResult,
    accounted: dict[str, JobRecord],
    snapshot: RunSnapshot,
    remote_now: float | None,
    stall_timeout_s: float = 1800.0,
) -> Decision:
    """Return a run's new state from its jobs, the scheduler's view and its state files.

    A stage has ended when its state file (from this job) has an exit code,
    or, failing that, when the queue or accounting report a final state. A
    state never moves backwards: an active run never becomes starting again.
    """
    decision = Decision(status=run.status)
    if len({job.stage for job in jobs}) < STAGES_PER_RUN:
        # A start in progress (in this or another service process) has not added every
        # stage's job yet: without this check a run with no jobs would count as done.
        return decision
    for job in jobs:
        record = query.jobs.get(job.job_id or "") or accounted.get(job.job_id or "")
        state = snapshot.states.get(job.stage.value)
        if state is not None and state.job_id != job.job_id:
            state = None
        _update_job(decision, job, record, state)
        ended = _stage_end(decision, job, record, state, query)
        if ended is False:
            return decision
        if ended is None:
            _running_or_pending(decision, run, job, record, state, snapshot)
            if decision.status == RunState.ACTIVE:
                _report_stall(decision, run, snapshot, remote_now, stall_timeout_s)
            return decision
    decision.status = RunState.DONE
    decision.changes.update(percent_complete=100.0, remaining_time_s=0.0)
    return decision


def _update_job(
    decision: Decision, job: RunJob, record: JobRecord | None, state: StageStateFile | None
) -> None:
    changes: dict[str, Any] = {}
    if record is not None and (record.state != job.state or record.reason != job.reason):
        changes.update(state=record.state, slurm_state=record.slurm_state, reason=record.reason)
        if record.exit_code is not None:
            changes["exit_code"] = record.exit_code
    if state is not None:
        if state.start_time and job.time_started is None:
            changes["time_started"] = state.start_time
        if state.ended:
            changes.update(exit_code=state.exit_code, time_ended=state.end_time)
            # The state file outranks the queue, which may still list the job as running
            # while its epilog runs; the run may end at this refresh, after which its
            # jobs are no longer queried, so the final state must be set now.
            final = JobState.COMPLETED if state.exit_code == 0 else JobState.FAILED
            if job.state != final:
                changes["state"] = final
    if changes:
        decision.job_updates.append((job, changes))


def _stage_end(
    decision: Decision,
    job: RunJob,
    record: JobRecord | None,
    state: StageStateFile | None,
    query: QueryResult,
) -> bool | None:
    """Return True if the stage succeeded, False if it failed (decision set), None if not ended."""
    if state is not None and state.ended:
        if state.exit_code == 0 and state.success_line:
            return True
        reason = "cancelled" if record is not None and record.state == JobState.CANCELLED else None
        return _fail(decision, job, RunError(code=reason or "unknown", message=(
            f"the {job.stage.value} stage ended with exit code {state.exit_code}"
            f"{'' if state.success_line else ' without the success line'}")))
    if record is not None and record.state.final:
        if record.state == JobState.COMPLETED:
            # The script always writes the state file, so a completed job without one
            # has a state file that is being written: wait for the next refresh.
            return None
        return _fail(decision, job, RunError(code="unknown", message=(
            f"the {job.stage.value} job ended as {record.slurm_state or record.state.value}")))
    if record is None and job.job_id in query.missing:
        submitted = job.time_submitted or datetime.now(UTC)
        if datetime.now(UTC) - submitted > VANISHED_GRACE:
            return _fail(decision, job, RunError(code="vanished", message=(
                f"job {job.job_id} of the {job.stage.value} stage vanished from the scheduler "
                "without a state file; check the cluster's logs, then set up and start again")))
    return None


def _fail(decision: Decision, job: RunJob, error: RunError) -> bool:
    decision.status = RunState.ERROR
    decision.error = error
    decision.failed_stage = job.stage
    return False


def _running_or_pending(
    decision: Decision,
    run: RunRecord,
    job: RunJob,
    record: JobRecord | None,
    state: StageStateFile | None,
    snapshot: RunSnapshot,
) -> None:
    running = state is not None or (record is not None and record.state == JobState.RUNNING)
    if record is not None and record.state == JobState.PENDING and record.reason \
            and pending_reason_is_final(record.reason):
        _fail(decision, job, RunError(code="scheduler", message=(
            f"the {job.stage.value} job {job.job_id} can never start: Slurm reports "
            f"'{record.reason}'")))
        return
    if running:
        decision.status = RunState.ACTIVE
    if running and job.stage == Stage.WRF:
        _progress(decision, run, state, snapshot)


def _progress(
    decision: Decision, run: RunRecord, state: StageStateFile | None, snapshot: RunSnapshot
) -> None:
    summary = run.namelist_summary or {}
    if not snapshot.rsl_tail or "start_time" not in summary:
        return
    progress = parse_progress(
        snapshot.rsl_tail,
        datetime.fromisoformat(summary["start_time"]),
        datetime.fromisoformat(summary["end_time"]),
        stage_started=state.start_time if state else None,
    )
    if progress is not None:
        decision.changes.update(percent_complete=progress.percent_complete,
                                remaining_time_s=progress.remaining_time_s)


def _report_stall(
    decision: Decision,
    run: RunRecord,
    snapshot: RunSnapshot,
    remote_now: float | None,
    stall_timeout_s: float,
) -> None:
    """Set the run's warning while rsl.out.0000 has not grown for stall_timeout_s; clear it after.

    The age comes from the cluster's clock (the file's mtime against ``date`` there), so
    a clock difference between this host and the cluster does not matter.
    """
    if snapshot.rsl_mtime is None or remote_now is None:
        return
    idle_s = remote_now - snapshot.rsl_mtime
    if idle_s <= stall_timeout_s:
        if run.warning is not None:
            decision.changes["warning"] = None
            logger.info("run %s: rsl.out.0000 moves again; stall warning cleared", run.id)
        return
    last = (snapshot.rsl_tail.strip().splitlines() or [""])[-1].strip()
    warning = (f"stalled: no new log lines for {idle_s:.0f} s (stall_timeout_s is "
               f"{stall_timeout_s:.0f} s); last line of rsl.out.0000: {last or '(empty)'}")
    if run.warning is None or not run.warning.startswith("stalled:"):
        logger.warning("run %s: rsl.out.0000 unchanged for %.0f s; last line: %s",
                       run.id, idle_s, last)
    decision.changes["warning"] = warning
