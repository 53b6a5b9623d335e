"""SlurmScheduler: parsers on output captured from Slurm 22.05, then the testbed's real Slurm.

The files under tests/data/slurm/ were captured on the testbed (Slurm 22.05.8)
with the commands that SlurmScheduler runs.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from wrfbatch.errors import InvalidInputError, SchedulerUnavailableError, SubmitError
from wrfbatch.schedulers.slurm import (
    SlurmScheduler,
    error_reason,
    parse_exit_code,
    parse_sacct_output,
    parse_sbatch_output,
    parse_squeue_output,
    parse_wait_status,
    pending_reason_is_final,
)
from wrfbatch.states import JobRecord, JobState
from wrfbatch.transports.local import LocalTransport

DATA_DIR = Path(__file__).parent / "data" / "slurm"


def read_data(name: str) -> str:
    return (DATA_DIR / name).read_text()


# --- parsers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("3:0", (3, 0)), ("0:11", (0, 11)), ("0:15", (0, 15)), ("2", (2, 0)), ("", (None, None)),
    ("x:1", (None, None)),
])
def test_exit_code_parsing(text: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_exit_code(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("768", (3, 0)), ("11", (0, 11)), ("0", (0, 0)), ("N/A", (None, None)),
])
def test_wait_status_parsing(text: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_wait_status(text) == expected


@pytest.mark.parametrize("text, expected", [("42\n", "42"), ("17;testbed\n", "17"),
                                            ("7_3\n", "7_3")])
def test_sbatch_output_parsing(text: str, expected: str) -> None:
    assert parse_sbatch_output(text) == expected


def test_sbatch_captured_cluster_output() -> None:
    assert parse_sbatch_output(read_data("sbatch-parsable-cluster.txt")) == "17"


@pytest.mark.parametrize("name, reason", [
    ("sbatch-invalid-partition.txt", "Invalid partition name specified"),
    ("sbatch-too-many-cpus.txt", "More processors requested than permitted"),
    ("sbatch-time-limit.txt",
     "Requested time limit is invalid (missing or exceeds some limit)"),
    ("sbatch-controller-down.txt", "Unable to contact slurm controller (connect failure)"),
])
def test_sbatch_error_reason(name: str, reason: str) -> None:
    assert error_reason(read_data(name)) == reason


def test_squeue_captured_states() -> None:
    jobs = parse_squeue_output(read_data("squeue-22.05.txt"))
    expected = {
        "3": (JobState.FAILED, "NonZeroExitCode", 3, 0),
        "4": (JobState.FAILED, "JobLaunchFailure", 0, 11),
        "5": (JobState.CANCELLED, "DependencyNeverSatisfied", 0, 0),
        "11": (JobState.TIMEOUT, "TimeLimit", 0, 15),
        "13": (JobState.PENDING, "JobHeldUser", None, None),
        "14": (JobState.CANCELLED, None, 0, 15),
        "15": (JobState.COMPLETED, None, 0, 0),
        "18": (JobState.RUNNING, None, None, None),
        "19": (JobState.PENDING, "Dependency", None, None),
    }
    for job_id, (state, reason, exit_code, signal) in expected.items():
        job = jobs[job_id]
        assert job.state is state, job_id
        assert job.reason == reason, job_id
        assert job.exit_code == exit_code, job_id
        assert job.signal == signal, job_id


def test_squeue_name_with_separator() -> None:
    jobs = parse_squeue_output(read_data("squeue-22.05.txt"))
    assert jobs["13"].name == "h4-held|pipe"


def test_squeue_times_utc() -> None:
    jobs = parse_squeue_output(read_data("squeue-22.05.txt"))
    assert jobs["3"].end_time == datetime.fromtimestamp(1796401781, timezone.utc)
    assert jobs["13"].start_time is None
    assert jobs["18"].end_time is None
    assert jobs["18"].partition == "debug"


def test_sacct_captured_states() -> None:
    jobs = parse_sacct_output(read_data("sacct-22.05.txt"))
    assert jobs["3"].state is JobState.FAILED
    assert jobs["3"].exit_code == 3
    assert jobs["4"].signal == 11
    assert jobs["14"].state is JobState.CANCELLED
    assert jobs["14"].slurm_state == "CANCELLED by 0"
    assert jobs["11"].state is JobState.TIMEOUT
    assert jobs["13"].start_time is None
    assert jobs["13"].name == "h4-held|pipe"


@pytest.mark.parametrize("reason, final", [
    ("DependencyNeverSatisfied", True), ("BadConstraints", True), ("PartitionTimeLimit", True),
    ("InvalidAccount", True), ("QOSMaxWallDurationPerJobLimit", True),
    ("AssocMaxCpuPerJobLimit", True), ("QOSMaxJobsPerUserLimit", False),
    ("Dependency", False), ("Resources", False), ("Priority", False), ("JobHeldUser", False),
    ("", False), (None, False),
])
def test_pending_reason_finality(reason: str | None, final: bool) -> None:
    assert pending_reason_is_final(reason) is final


def test_invalid_job_id_rejected() -> None:
    scheduler = SlurmScheduler(LocalTransport())
    with pytest.raises(InvalidInputError, match="1;id"):
        scheduler.cancel(["1;id"])


# --- the testbed's Slurm -------------------------------------------------------------------

@pytest.fixture
def slurm(testbed) -> SlurmScheduler:  # noqa: ANN001
    if shutil.which("sbatch") is None:
        pytest.skip("Slurm client commands not installed: run scripts/testbed-start.sh")
    return SlurmScheduler(LocalTransport(), partition=testbed.partitions[0])


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)
    return tmp_path


def write_script(job_dir: Path, body: str, *, name: str | None = None,
                 options: tuple[str, ...] = ()) -> tuple[str, str]:
    """Write a batch script; return its path and its job name."""
    name = name or f"wrfbatch-test-{uuid.uuid4().hex[:10]}"
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --output={job_dir}/%j.out",
             *[f"#SBATCH {option}" for option in options], body, ""]
    path = job_dir / f"{name}.sh"
    path.write_text("\n".join(lines))
    return str(path), name


def wait_for(
    slurm: SlurmScheduler, job_id: str, done: Callable[[JobRecord], bool],
    timeout_s: float = 30.0,
) -> JobRecord:
    deadline = time.monotonic() + timeout_s
    while True:
        job = slurm.query([job_id]).jobs.get(job_id)
        if job is not None and done(job):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} did not reach the expected state: {job}")
        time.sleep(0.5)


def wait_final(slurm: SlurmScheduler, job_id: str) -> JobRecord:
    return wait_for(slurm, job_id, lambda job: job.state.final)


@pytest.mark.cluster
def test_submit_completes(slurm: SlurmScheduler, job_dir: Path) -> None:
    script, name = write_script(job_dir, "echo hello")
    job_id = slurm.submit(script, workdir=str(job_dir))
    job = wait_final(slurm, job_id)
    assert job.state is JobState.COMPLETED
    assert job.name == name
    assert (job.exit_code, job.signal) == (0, 0)
    assert job.end_time is not None


@pytest.mark.cluster
def test_exit_code_three(slurm: SlurmScheduler, job_dir: Path) -> None:
    script, _ = write_script(job_dir, "exit 3")
    job = wait_final(slurm, slurm.submit(script, workdir=str(job_dir)))
    assert job.state is JobState.FAILED
    assert (job.exit_code, job.signal) == (3, 0)


@pytest.mark.cluster
def test_segfault_signal(slurm: SlurmScheduler, job_dir: Path) -> None:
    script, _ = write_script(job_dir, "kill -SEGV $$")
    job = wait_final(slurm, slurm.submit(script, workdir=str(job_dir)))
    assert job.state is JobState.FAILED
    assert (job.exit_code, job.signal) == (0, 11)


@pytest.mark.cluster
def test_afterok_dependency_runs(slurm: SlurmScheduler, job_dir: Path) -> None:
    parent_script, _ = write_script(job_dir, "sleep 1")
    child_script, _ = write_script(job_dir, "true")
    parent = slurm.submit(parent_script, workdir=str(job_dir))
    child = slurm.submit(child_script, workdir=str(job_dir), after_ok=parent)
    assert wait_final(slurm, child).state is JobState.COMPLETED
    assert wait_final(slurm, parent).state is JobState.COMPLETED


@pytest.mark.cluster
def test_afterok_dependency_never_satisfied(slurm: SlurmScheduler, job_dir: Path) -> None:
    parent_script, _ = write_script(job_dir, "exit 1")
    child_script, _ = write_script(job_dir, "true")
    parent = slurm.submit(parent_script, workdir=str(job_dir))
    child = slurm.submit(child_script, workdir=str(job_dir), after_ok=parent)
    job = wait_for(slurm, child, lambda j: j.reason == "DependencyNeverSatisfied")
    assert job.state is JobState.PENDING
    assert pending_reason_is_final(job.reason)
    slurm.cancel([child])
    assert wait_final(slurm, child).state is JobState.CANCELLED


@pytest.mark.cluster
def test_query_with_unknown_ids(slurm: SlurmScheduler, job_dir: Path) -> None:
    script, _ = write_script(job_dir, "true")
    job_id = slurm.submit(script, workdir=str(job_dir))
    mixed = slurm.query([job_id, "99999999", "99999998"])
    assert job_id in mixed.jobs
    assert mixed.missing == {"99999999", "99999998"}
    single = slurm.query(["99999999"])
    assert single.jobs == {}
    assert single.missing == {"99999999"}


@pytest.mark.cluster
def test_cancel_running_job(slurm: SlurmScheduler, job_dir: Path) -> None:
    script, _ = write_script(job_dir, "sleep 60")
    job_id = slurm.submit(script, workdir=str(job_dir))
    wait_for(slurm, job_id, lambda job: job.state is JobState.RUNNING)
    slurm.cancel([job_id, "99999999"])
    job = wait_final(slurm, job_id)
    assert job.state is JobState.CANCELLED


@pytest.mark.cluster
def test_find_by_name(slurm: SlurmScheduler, job_dir: Path) -> None:
    script, name = write_script(job_dir, "true")
    job_id = slurm.submit(script, workdir=str(job_dir))
    found = slurm.find_by_name([name, "wrfbatch-no-such-job"])
    assert [job.job_id for job in found] == [job_id]


@pytest.mark.cluster
def test_accounting_final_record(
    slurm: SlurmScheduler, job_dir: Path, testbed  # noqa: ANN001
) -> None:
    if not testbed.slurmdbd:
        pytest.skip("the testbed runs without slurmdbd, so sacct has no records")
    script, name = write_script(job_dir, "exit 3")
    job_id = slurm.submit(script, workdir=str(job_dir))
    wait_final(slurm, job_id)
    deadline = time.monotonic() + 20
    records = slurm.accounting([job_id])
    # slurmdbd may first store a placeholder named "allocation" until the job's start
    # message arrives, so wait for the record that carries the job's name.
    while job_id not in records or records[job_id].name != name:
        assert time.monotonic() < deadline, f"sacct has no final record of job {job_id}"
        time.sleep(0.5)
        records = slurm.accounting([job_id])
    assert records[job_id].state is JobState.FAILED
    assert records[job_id].exit_code == 3


@pytest.mark.cluster
@pytest.mark.parametrize("option, reason", [
    ("--partition=nosuchpartition", "invalid partition"),
    ("--ntasks=999", "More processors requested than permitted"),
    ("--time=9999", "Requested time limit is invalid"),
])
def test_sbatch_rejection_reason(slurm: SlurmScheduler, job_dir: Path, option: str,
                                 reason: str) -> None:
    script, _ = write_script(job_dir, "true", options=(option,))
    with pytest.raises(SubmitError) as caught:
        slurm.submit(script, workdir=str(job_dir))
    assert reason.lower() in str(caught.value).lower()


@pytest.mark.cluster
def test_check_reports_partitions(slurm: SlurmScheduler) -> None:
    results = {result.name: result for result in slurm.check()}
    assert all(result.ok for result in results.values()), results
    assert "debug" in results["partitions"].detail


@pytest.mark.cluster
def test_check_unknown_partition(testbed) -> None:  # noqa: ANN001
    results = SlurmScheduler(LocalTransport(), partition="nosuchpartition").check()
    failed = [result for result in results if not result.ok]
    assert [result.name for result in failed] == ["partition nosuchpartition"]


@pytest.fixture
def dead_controller(
    testbed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """Point the Slurm commands at a copy of the testbed config whose controller port is closed."""
    config = Path(testbed.slurm_conf).read_text().splitlines()
    lines = ["SlurmctldPort=9" if line.startswith("SlurmctldPort=") else line for line in config]
    (tmp_path / "slurm.conf").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))


@pytest.mark.cluster
def test_command_timeout_unavailable(dead_controller: None) -> None:
    scheduler = SlurmScheduler(LocalTransport(), command_timeout_s=1.0)
    with pytest.raises(SchedulerUnavailableError) as caught:
        scheduler.query(["1"])
    assert caught.value.retryable


@pytest.mark.cluster
@pytest.mark.slow
def test_controller_down_unavailable(dead_controller: None, job_dir: Path) -> None:
    script, _ = write_script(job_dir, "true")
    with pytest.raises(SchedulerUnavailableError, match="Unable to contact slurm controller"):
        SlurmScheduler(LocalTransport()).submit(script, workdir=str(job_dir))
