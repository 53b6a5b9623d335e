"""The refresh of a cluster: the snapshot command and the state decision, without a scheduler."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from wrfbatch.schedulers.base import QueryResult
from wrfbatch.states import JobRecord, JobState, RunState, Stage, StageStateFile
from wrfbatch.store.records import RunJob, RunRecord
from wrfbatch.runs.refresh import RunSnapshot, decide, parse_snapshots, snapshot_script
from wrfbatch.transports.local import LocalTransport

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_snapshot_reads_state_and_rsl(tmp_path: Path):
    run_dir = tmp_path / "run dir; $(touch pwned)"
    (run_dir / ".wrfbatch").mkdir(parents=True)
    (run_dir / ".wrfbatch" / "real.state").write_text("stage=real\njob_id=7\nexit_code=0\n"
                                                       "success_line=yes\n")
    (run_dir / "rsl.out.0000").write_text("Timing for main: time x\n")
    output = LocalTransport().run(["sh", "-s"],
                                  stdin=snapshot_script([str(run_dir)]).encode()).stdout
    remote_now, snapshots = parse_snapshots(output)
    snapshot = snapshots[str(run_dir)]
    assert remote_now is not None
    assert snapshot.states["real"].exit_code == 0
    assert "Timing for main" in snapshot.rsl_tail
    assert snapshot.rsl_mtime is not None
    assert not (tmp_path / "pwned").exists()
    assert not Path("pwned").exists()


def test_snapshot_of_missing_dir_is_empty(tmp_path: Path):
    output = LocalTransport().run(["sh", "-s"],
                                  stdin=snapshot_script([str(tmp_path / "gone")]).encode()).stdout
    _, snapshots = parse_snapshots(output)
    assert snapshots[str(tmp_path / "gone")].states == {}


def make_run(status: RunState = RunState.STARTING) -> RunRecord:
    return RunRecord(
        id="abcdef123456", owner="alice", run_name="r", model="wrf", version="3.9",
        cluster="c", status=status, error_code=None, error_message=None, attempt=1, cores=4,
        namelist_summary={"start_time": "2019-09-04T12:00:00", "end_time": "2019-09-04T18:00:00"},
        percent_complete=None, remaining_time_s=None, output_files=[], output_size_bytes=0,
        disk_usage_bytes=0, required_input_files=[], time_created=NOW, time_started=NOW,
        time_stopped=None, time_updated=NOW, deleted=False, row_version=1,
    )


def make_job(stage: Stage, job_id: str, state: JobState = JobState.PENDING,
             submitted: datetime | None = None) -> RunJob:
    return RunJob(id=1 if stage != Stage.WRF else 2, run_id="abcdef123456", attempt=1,
                  stage=stage, job_name=f"wrfbatch-abcdef123456-a1-{stage.value}",
                  job_id=job_id, state=state, slurm_state="", reason=None, exit_code=None,
                  time_submitted=submitted or datetime.now(UTC), time_started=None,
                  time_ended=None)


def fresh_jobs() -> list[RunJob]:
    """Return a real and a wrf job submitted just now (the vanish grace counts from then)."""
    return [make_job(Stage.REAL, "10"), make_job(Stage.WRF, "11")]


def record(job_id: str, state: JobState, reason: str | None = None) -> JobRecord:
    return JobRecord(job_id=job_id, name="n", state=state, slurm_state=state.value, reason=reason)


def ended(stage: str, job_id: str, exit_code: int, success: bool) -> StageStateFile:
    return StageStateFile(stage=stage, job_id=job_id, start_time=NOW, end_time=NOW,
                          exit_code=exit_code, success_line=success)


def test_pending_stays_starting():
    query = QueryResult(jobs={"10": record("10", JobState.PENDING),
                              "11": record("11", JobState.PENDING, "Dependency")})
    assert decide(make_run(), fresh_jobs(), query, {}, RunSnapshot(), None).status == RunState.STARTING


def test_running_real_is_active():
    query = QueryResult(jobs={"10": record("10", JobState.RUNNING),
                              "11": record("11", JobState.PENDING, "Dependency")})
    assert decide(make_run(), fresh_jobs(), query, {}, RunSnapshot(), None).status == RunState.ACTIVE


def test_wrf_success_is_done():
    snapshot = RunSnapshot(states={"real": ended("real", "10", 0, True),
                                   "wrf": ended("wrf", "11", 0, True)})
    decision = decide(make_run(RunState.ACTIVE), fresh_jobs(), QueryResult(missing={"10", "11"}), {},
                      snapshot, None)
    assert decision.status == RunState.DONE


def test_exit_zero_without_success_line_is_error():
    snapshot = RunSnapshot(states={"real": ended("real", "10", 0, True),
                                   "wrf": ended("wrf", "11", 0, False)})
    decision = decide(make_run(RunState.ACTIVE), fresh_jobs(), QueryResult(), {}, snapshot, None)
    assert decision.status == RunState.ERROR
    assert decision.failed_stage == Stage.WRF


def test_failed_real_stops_before_wrf():
    snapshot = RunSnapshot(states={"real": ended("real", "10", 1, False)})
    query = QueryResult(jobs={"11": record("11", JobState.PENDING, "DependencyNeverSatisfied")})
    decision = decide(make_run(RunState.ACTIVE), fresh_jobs(), query, {}, snapshot, None)
    assert decision.status == RunState.ERROR
    assert decision.failed_stage == Stage.REAL


def test_state_file_of_older_attempt_ignored():
    snapshot = RunSnapshot(states={"real": ended("real", "3", 1, False)})
    query = QueryResult(jobs={"10": record("10", JobState.RUNNING)})
    assert decide(make_run(), fresh_jobs(), query, {}, snapshot, None).status == RunState.ACTIVE


def test_never_satisfied_dependency_is_error():
    snapshot = RunSnapshot(states={"real": ended("real", "10", 0, True)})
    query = QueryResult(jobs={"11": record("11", JobState.PENDING, "DependencyNeverSatisfied")})
    decision = decide(make_run(RunState.ACTIVE), fresh_jobs(), query, {}, snapshot, None)
    assert decision.status == RunState.ERROR
    assert decision.error is not None
    assert "DependencyNeverSatisfied" in decision.error.message


def test_vanished_job_is_error_after_grace():
    old = datetime.now(UTC) - timedelta(minutes=10)
    jobs = [replace(fresh_jobs()[0], time_submitted=old), fresh_jobs()[1]]
    decision = decide(make_run(), jobs, QueryResult(missing={"10"}), {}, RunSnapshot(), None)
    assert decision.status == RunState.ERROR
    assert decision.error is not None
    assert decision.error.code == "vanished"


def test_vanished_job_waits_during_grace():
    decision = decide(make_run(), fresh_jobs(), QueryResult(missing={"10"}), {}, RunSnapshot(), None)
    assert decision.status == RunState.STARTING


def test_accounting_fills_purged_job():
    old = datetime.now(UTC) - timedelta(minutes=10)
    jobs = [replace(fresh_jobs()[0], time_submitted=old), fresh_jobs()[1]]
    accounted = {"10": record("10", JobState.TIMEOUT)}
    decision = decide(make_run(RunState.ACTIVE), jobs, QueryResult(missing={"10"}), accounted,
                      RunSnapshot(), None)
    assert decision.status == RunState.ERROR
    assert decision.failed_stage == Stage.REAL


def test_progress_while_wrf_runs():
    snapshot = RunSnapshot(
        states={"real": ended("real", "10", 0, True),
                "wrf": StageStateFile(stage="wrf", job_id="11", start_time=NOW)},
        rsl_tail="Timing for main: time 2019-09-04_15:00:00 on domain   1:    0.1 elapsed seconds\n",
    )
    query = QueryResult(jobs={"11": record("11", JobState.RUNNING)})
    decision = decide(make_run(RunState.ACTIVE), fresh_jobs(), query, {}, snapshot, None)
    assert decision.status == RunState.ACTIVE
    assert decision.changes["percent_complete"] == 50.0
