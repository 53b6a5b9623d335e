"""LocalScheduler: real background jobs on this machine, with Slurm's states and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from wrfbatch.config import ClusterConfig, LauncherConfig
from wrfbatch.errors import InvalidInputError, SubmitError
from wrfbatch.schedulers import LocalScheduler, SlurmScheduler, make_scheduler
from wrfbatch.schedulers.local import expand_file_pattern, parse_batch_header, parse_slurm_time
from wrfbatch.states import JobRecord, JobState
from wrfbatch.transports.local import LocalTransport


@pytest.fixture
def scheduler(tmp_path: Path) -> LocalScheduler:
    return LocalScheduler(LocalTransport(), tmp_path / "jobs", kill_wait_s=1.0)


def write_script(directory: Path, body: str, *, name: str = "job",
                 options: tuple[str, ...] = ()) -> str:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}",
             f"#SBATCH --output={directory}/%x-%j.out",
             *[f"#SBATCH {option}" for option in options], body, ""]
    path = directory / f"{name}.sh"
    path.write_text("\n".join(lines))
    return str(path)


def wait_for(
    scheduler: LocalScheduler, job_id: str, done: Callable[[JobRecord], bool],
    timeout_s: float = 10.0,
) -> JobRecord:
    deadline = time.monotonic() + timeout_s
    while True:
        job = scheduler.query([job_id]).jobs[job_id]
        if done(job):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"local job {job_id} did not reach the expected state: {job}")
        time.sleep(0.05)


def wait_final(scheduler: LocalScheduler, job_id: str) -> JobRecord:
    return wait_for(scheduler, job_id, lambda job: job.state.final)


# --- header parsing --------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("30", 1800.0), ("0:05", 5.0), ("1:02:03", 3723.0), ("2-0", 172800.0),
    ("1-01:30", 91800.0), ("1-0:0:10", 86410.0), ("UNLIMITED", None),
])
def test_slurm_time_formats(text: str, seconds: float | None) -> None:
    assert parse_slurm_time(text) == seconds


def test_slurm_time_invalid() -> None:
    with pytest.raises(InvalidInputError, match="'ten'"):
        parse_slurm_time("ten")


def test_header_long_and_short_options() -> None:
    header = parse_batch_header(
        "#!/bin/bash\n#SBATCH --job-name=a\n#SBATCH -n 3\n#SBATCH -t 0:07 # comment\n"
        "#SBATCH --output /x/%j.out --error=/x/%j.err\n#SBATCH -D/work\n"
        "echo body\n#SBATCH --ntasks=9\n"
    )
    assert header.job_name == "a"
    assert header.ntasks == 3
    assert header.time_limit_s == 7.0
    assert header.output == "/x/%j.out"
    assert header.error == "/x/%j.err"
    assert header.chdir == "/work"


def test_file_pattern_expansion() -> None:
    assert expand_file_pattern("%x-%j.out", "12", "name", "/w") == "/w/name-12.out"
    assert expand_file_pattern("/abs/100%%.txt", "1", "n", "/w") == "/abs/100%.txt"


# --- jobs --------------------------------------------------------------------------------

def test_job_completes_with_slurm_env(scheduler: LocalScheduler, tmp_path: Path) -> None:
    script = write_script(tmp_path, 'echo "$SLURM_JOB_ID $SLURM_JOB_NAME $SLURM_NTASKS '
                          '$SLURM_SUBMIT_DIR $PWD"', name="envjob", options=("--ntasks=3",))
    job_id = scheduler.submit(script, workdir=str(tmp_path))
    job = wait_final(scheduler, job_id)
    assert job.state is JobState.COMPLETED
    assert (job.exit_code, job.signal) == (0, 0)
    output = (tmp_path / f"envjob-{job_id}.out").read_text().split()
    assert output == [job_id, "envjob", "3", str(tmp_path), str(tmp_path)]


def test_job_ids_increase(scheduler: LocalScheduler, tmp_path: Path) -> None:
    script = write_script(tmp_path, "true")
    ids = [scheduler.submit(script, workdir=str(tmp_path)) for _ in range(3)]
    assert [int(job_id) for job_id in ids] == sorted(int(job_id) for job_id in ids)
    assert len(set(ids)) == 3


def test_exit_code_three(scheduler: LocalScheduler, tmp_path: Path) -> None:
    job_id = scheduler.submit(write_script(tmp_path, "exit 3"), workdir=str(tmp_path))
    job = wait_final(scheduler, job_id)
    assert job.state is JobState.FAILED
    assert (job.exit_code, job.signal) == (3, 0)


def test_segfault_signal(scheduler: LocalScheduler, tmp_path: Path) -> None:
    job_id = scheduler.submit(write_script(tmp_path, "kill -SEGV $$"), workdir=str(tmp_path))
    job = wait_final(scheduler, job_id)
    assert job.state is JobState.FAILED
    assert (job.exit_code, job.signal) == (0, 11)


def test_afterok_dependency_runs(scheduler: LocalScheduler, tmp_path: Path) -> None:
    parent = scheduler.submit(write_script(tmp_path, "sleep 0.5", name="p"), workdir=str(tmp_path))
    child = scheduler.submit(write_script(tmp_path, "true", name="c"), workdir=str(tmp_path),
                             after_ok=parent)
    assert scheduler.query([child]).jobs[child].state is JobState.PENDING
    assert wait_final(scheduler, child).state is JobState.COMPLETED
    child_record = scheduler.query([child]).jobs[child]
    parent_record = scheduler.query([parent]).jobs[parent]
    assert child_record.start_time >= parent_record.end_time


def test_afterok_never_satisfied(scheduler: LocalScheduler, tmp_path: Path) -> None:
    parent = scheduler.submit(write_script(tmp_path, "exit 1", name="p"), workdir=str(tmp_path))
    child = scheduler.submit(write_script(tmp_path, "true", name="c"), workdir=str(tmp_path),
                             after_ok=parent)
    job = wait_for(scheduler, child, lambda j: j.reason == "DependencyNeverSatisfied")
    assert job.state is JobState.PENDING
    time.sleep(0.3)
    assert scheduler.query([child]).jobs[child].state is JobState.PENDING
    scheduler.cancel([child])
    assert wait_final(scheduler, child).state is JobState.CANCELLED


def test_unknown_dependency_rejected(scheduler: LocalScheduler, tmp_path: Path) -> None:
    with pytest.raises(SubmitError, match="'4242'"):
        scheduler.submit(write_script(tmp_path, "true"), workdir=str(tmp_path), after_ok="4242")


def test_missing_script_rejected(scheduler: LocalScheduler, tmp_path: Path) -> None:
    with pytest.raises(SubmitError, match="absent.sh"):
        scheduler.submit(str(tmp_path / "absent.sh"), workdir=str(tmp_path))


def test_query_with_unknown_ids(scheduler: LocalScheduler, tmp_path: Path) -> None:
    job_id = scheduler.submit(write_script(tmp_path, "true"), workdir=str(tmp_path))
    result = scheduler.query([job_id, "999", "not-an-id"])
    assert set(result.jobs) == {job_id}
    assert result.missing == {"999", "not-an-id"}


def test_cancel_running_job(scheduler: LocalScheduler, tmp_path: Path) -> None:
    script = write_script(tmp_path, "sleep 30 & wait")
    job_id = scheduler.submit(script, workdir=str(tmp_path))
    wait_for(scheduler, job_id, lambda job: job.state is JobState.RUNNING)
    scheduler.cancel([job_id, "999"])
    job = wait_final(scheduler, job_id)
    assert job.state is JobState.CANCELLED
    assert (job.exit_code, job.signal) == (0, 15)


def test_cancel_ignores_sigterm_then_kills(scheduler: LocalScheduler, tmp_path: Path) -> None:
    script = write_script(tmp_path, "trap '' TERM\nfor i in $(seq 100); do sleep 0.1; done")
    job_id = scheduler.submit(script, workdir=str(tmp_path))
    wait_for(scheduler, job_id, lambda job: job.state is JobState.RUNNING)
    started = time.monotonic()
    scheduler.cancel([job_id])
    assert wait_final(scheduler, job_id).state is JobState.CANCELLED
    assert time.monotonic() - started < 5.0


def test_time_limit_timeout(scheduler: LocalScheduler, tmp_path: Path) -> None:
    script = write_script(tmp_path, "sleep 30 & wait", options=("--time=0:01",))
    job_id = scheduler.submit(script, workdir=str(tmp_path))
    job = wait_final(scheduler, job_id)
    assert job.state is JobState.TIMEOUT
    assert job.reason == "TimeLimit"


def test_find_by_name(scheduler: LocalScheduler, tmp_path: Path) -> None:
    wanted = scheduler.submit(write_script(tmp_path, "true", name="wanted"),
                              workdir=str(tmp_path))
    scheduler.submit(write_script(tmp_path, "true", name="other"), workdir=str(tmp_path))
    found = scheduler.find_by_name(["wanted", "absent"])
    assert [job.job_id for job in found] == [wanted]


def test_new_scheduler_sees_running_job(scheduler: LocalScheduler, tmp_path: Path) -> None:
    job_id = scheduler.submit(write_script(tmp_path, "sleep 1"), workdir=str(tmp_path))
    wait_for(scheduler, job_id, lambda job: job.state is JobState.RUNNING)
    restarted = LocalScheduler(LocalTransport(), tmp_path / "jobs")
    assert restarted.query([job_id]).jobs[job_id].state is JobState.RUNNING
    assert wait_final(restarted, job_id).state is JobState.COMPLETED


def test_job_survives_submitter_exit(tmp_path: Path) -> None:
    script = write_script(tmp_path, "sleep 1; echo done")
    program = (
        "import sys\n"
        "from pathlib import Path\n"
        "from wrfbatch.schedulers.local import LocalScheduler\n"
        "from wrfbatch.transports.local import LocalTransport\n"
        "scheduler = LocalScheduler(LocalTransport(), Path(sys.argv[1]))\n"
        "print(scheduler.submit(sys.argv[2], workdir=sys.argv[3]))\n"
    )
    submitted = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path / "jobs"), script, str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=30,
    )
    job_id = submitted.stdout.strip()
    scheduler = LocalScheduler(LocalTransport(), tmp_path / "jobs")
    assert wait_final(scheduler, job_id).state is JobState.COMPLETED
    assert (tmp_path / f"job-{job_id}.out").read_text() == "done\n"


def test_lost_supervisor_is_node_fail(scheduler: LocalScheduler, tmp_path: Path) -> None:
    job_id = scheduler.submit(write_script(tmp_path, "sleep 30 & wait"), workdir=str(tmp_path))
    wait_for(scheduler, job_id, lambda job: job.state is JobState.RUNNING)
    record = scheduler.store.load(job_id)
    assert record is not None and record.supervisor_pid is not None
    os.kill(record.supervisor_pid, 9)
    job = wait_for(scheduler, job_id, lambda j: j.state.final)
    assert job.state is JobState.NODE_FAIL
    assert job.reason == "SupervisorLost"


def test_make_scheduler_kinds(tmp_path: Path) -> None:
    local = ClusterConfig(transport="local", scheduler="local", work_root=str(tmp_path),
                          launcher=LauncherConfig(kind="none", mpi_plugin=None))
    slurm = ClusterConfig(transport="local", scheduler="slurm", work_root=str(tmp_path))
    local_scheduler = make_scheduler(local, LocalTransport())
    assert isinstance(local_scheduler, LocalScheduler)
    assert local_scheduler.store.jobs_dir == tmp_path / ".wrfbatch-jobs"
    assert isinstance(make_scheduler(slurm, LocalTransport()), SlurmScheduler)


def test_check_jobs_directory(scheduler: LocalScheduler) -> None:
    assert all(result.ok for result in scheduler.check())
