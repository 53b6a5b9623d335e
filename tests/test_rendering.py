"""Batch script rendering: golden files, hostile values, and rendered scripts run for real.

Set WRFBATCH_UPDATE_GOLDEN=1 to rewrite the golden files under tests/golden/
after an intended template change; review the diff before committing.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from wrfbatch.config import ClusterConfig, LauncherConfig
from wrfbatch.errors import ConfigError, InvalidInputError
from wrfbatch.rendering import (
    BatchContext,
    TemplateRenderer,
    job_name,
    render_batch_script,
    script_path,
    state_file_path,
)
from wrfbatch.schedulers.local import LocalScheduler
from wrfbatch.states import JobState, Stage, parse_state_file
from wrfbatch.transports.local import LocalTransport

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("WRFBATCH_UPDATE_GOLDEN") == "1"
RUN_ID = "abcd1234"

HOSTILE_VALUES = {
    "SINGLE": "it's",
    "DOUBLE": 'say "hi"',
    "SUBSHELL": "$(touch /tmp/wrfbatch-pwned)",
    "BACKTICK": "`touch /tmp/wrfbatch-pwned`",
    "SPACES": "  two  spaces  ",
    "MIXED": "a'b\"c$HOME\\d;e|f&g",
    "EMPTY": "",
}


def make_context(stage: Stage, **changes: object) -> BatchContext:
    values: dict[str, object] = dict(
        run_id=RUN_ID,
        attempt=1,
        stage=stage,
        run_dir=f"/scratch/wrf/runs/{RUN_ID}",
        wrf_install_path="/opt/wrf/4.5.2",
        ntasks=4,
        walltime_min=30,
        partition="debug",
        launcher=LauncherConfig(kind="srun", mpi_plugin="pmix"),
        modules=["openmpi/4.1.4"],
        environment={"OMPI_MCA_mpi_yield_when_idle": "1"},
        setup_lines=["source /etc/profile.d/modules.sh"],
    )
    values.update(changes)
    return BatchContext(**values)  # type: ignore[arg-type]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN_DIR / name
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with WRFBATCH_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.mark.parametrize("stage", list(Stage))
def test_stage_script_matches_golden(stage: Stage) -> None:
    check_golden(f"{stage.value}.sh", render_batch_script(make_context(stage)))


def test_mpirun_script_matches_golden() -> None:
    launcher = LauncherConfig(kind="mpirun", extra_args=["--bind-to", "core", "--map-by", "a b"])
    context = make_context(Stage.WRF, launcher=launcher, account="proj01", qos="normal",
                           modules=[], environment={}, setup_lines=[])
    check_golden("wrf-mpirun.sh", render_batch_script(context))


def test_plain_launcher_script_matches_golden() -> None:
    context = make_context(Stage.REAL, launcher=LauncherConfig(kind="none", mpi_plugin=None),
                           partition=None, modules=[], environment={}, setup_lines=[])
    check_golden("real-none.sh", render_batch_script(context))


@pytest.mark.parametrize("stage", list(Stage))
def test_scripts_pass_bash_syntax_check(stage: Stage) -> None:
    script = render_batch_script(make_context(stage))
    result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


def test_header_lists_sbatch_options() -> None:
    script = render_batch_script(make_context(Stage.REAL, account="proj01", qos="high"))
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert header == [
        f"#SBATCH --job-name=wrfbatch-{RUN_ID}-a1-real",
        "#SBATCH --partition=debug",
        "#SBATCH --account=proj01",
        "#SBATCH --qos=high",
        "#SBATCH --ntasks=4",
        "#SBATCH --time=30",
        f"#SBATCH --output=/scratch/wrf/runs/{RUN_ID}/.wrfbatch/real-%j.out",
        f"#SBATCH --error=/scratch/wrf/runs/{RUN_ID}/.wrfbatch/real-%j.err",
        f"#SBATCH --chdir=/scratch/wrf/runs/{RUN_ID}",
    ]


def test_job_name_format() -> None:
    assert job_name(RUN_ID, 2, Stage.WRF) == f"wrfbatch-{RUN_ID}-a2-wrf"


def test_paths_in_run_directory() -> None:
    assert state_file_path("/r/x", Stage.REAL) == "/r/x/.wrfbatch/real.state"
    assert script_path("/r/x", Stage.WRF) == "/r/x/.wrfbatch/wrf.sh"


@pytest.mark.parametrize("field", ["partition", "account", "qos"])
@pytest.mark.parametrize("value", ["debug; rm -rf ~", "$(id)", "a b", "`id`", "x\n#SBATCH -p y"])
def test_hostile_slurm_name_rejected(field: str, value: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        render_batch_script(make_context(Stage.REAL, **{field: value}))
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize("run_dir", ["/runs/a b", "/runs/a%j", "relative/dir", "/runs/../etc"])
def test_unsafe_run_dir_rejected(run_dir: str) -> None:
    with pytest.raises(InvalidInputError, match="run directory"):
        render_batch_script(make_context(Stage.REAL, run_dir=run_dir))


@pytest.mark.parametrize("changes", [
    {"environment": {"BAD NAME": "x"}},
    {"environment": {"OK": "two\nlines"}},
    {"modules": ["openmpi; id"]},
    {"run_id": "../etc"},
    {"ntasks": 0},
    {"setup_lines": ["echo a\necho b"]},
    {"required_inputs": ("../wrfinput_d01",)},
])
def test_invalid_values_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        render_batch_script(make_context(Stage.WRF, **changes))


def test_hostile_env_values_reach_bash_verbatim(tmp_path: Path) -> None:
    script = render_batch_script(make_context(Stage.REAL, environment=HOSTILE_VALUES))
    exports = [line for line in script.splitlines() if line.startswith("export ")]
    program = "\n".join(["set -eu", *exports, "env -0"])
    result = subprocess.run(["bash", "-c", program], capture_output=True, check=True,
                            cwd=tmp_path, env={"PATH": os.environ["PATH"], "HOME": "/nohome"})
    seen = dict(item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)
    for name, value in HOSTILE_VALUES.items():
        assert seen[name] == value, name
    assert not Path("/tmp/wrfbatch-pwned").exists()


def test_site_template_overrides_one_file(tmp_path: Path) -> None:
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "wrf.sh.j2").write_text("#!/bin/bash\necho site {{ run_id }}\n")
    renderer = TemplateRenderer(tmp_path)
    site_script = renderer.render_batch_script(make_context(Stage.WRF))
    assert site_script == "#!/bin/bash\necho site abcd1234\n"
    assert "#SBATCH --job-name" in renderer.render_batch_script(make_context(Stage.REAL))


def test_site_template_undefined_value(tmp_path: Path) -> None:
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "real.sh.j2").write_text("{{ no_such_value }}\n")
    with pytest.raises(ConfigError, match="no_such_value"):
        TemplateRenderer(tmp_path).render_batch_script(make_context(Stage.REAL))


def test_missing_site_directory_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TemplateRenderer(tmp_path / "absent")


def test_context_from_cluster_config() -> None:
    cluster = ClusterConfig(transport="local", scheduler="slurm", work_root="/w",
                            partition="long", modules=["wrf/4"], environment={"A": "b"})
    context = BatchContext.for_cluster(cluster, run_id=RUN_ID, attempt=1, stage=Stage.REAL,
                                       run_dir="/w/abcd1234", wrf_install_path="/opt/wrf",
                                       ntasks=2, walltime_min=5)
    assert context.partition == "long"
    assert context.modules == ["wrf/4"]
    assert context.environment == {"A": "b"}


# --- rendered scripts run by the local scheduler -------------------------------------------

FAKE_PROGRAM = """#!/bin/bash
# Stand-in for a WRF program: its behaviour is chosen by FAKE_MODE.
echo "rank 0 log of $0" > rsl.error.0000
case "${FAKE_MODE:-success}" in
    success) echo " d01 2000-01-24_12:00:00 {line}" >> rsl.out.0000 ;;
    fail) echo "FATAL CALLED" >> rsl.out.0000; exit 3 ;;
    sleep) sleep 30 ;;
esac
"""


@pytest.fixture
def fake_install(tmp_path: Path) -> Path:
    """A tiny WRF install under a path with a space and a quote, with one relative symlink."""
    install = tmp_path / "wrf install's"
    (install / "run").mkdir(parents=True)
    (install / "main").mkdir()
    (install / "run" / "LANDUSE.TBL").write_text("table\n")
    (install / "run" / "VEGPARM.TBL").symlink_to("LANDUSE.TBL")
    (install / "run" / "namelist.input").write_text("&time_control\n/\n")
    (install / "run" / "README.namelist").write_text("install copy\n")
    lines = {"real": "real_em: SUCCESS COMPLETE REAL_EM INIT", "wrf": "wrf: SUCCESS COMPLETE WRF"}
    for stage, line in lines.items():
        program = install / "main" / f"{stage}.exe"
        program.write_text(FAKE_PROGRAM.replace("{line}", line))
        program.chmod(0o755)
    return install


@pytest.fixture
def local_scheduler(tmp_path: Path) -> LocalScheduler:
    return LocalScheduler(LocalTransport(), tmp_path / "jobs", kill_wait_s=2.0)


def run_dir_for(tmp_path: Path) -> Path:
    run_dir = tmp_path / "runs" / RUN_ID
    (run_dir / ".wrfbatch").mkdir(parents=True)
    return run_dir


def submit_stage(
    scheduler: LocalScheduler, run_dir: Path, install: Path, stage: Stage
) -> str:
    context = make_context(stage, run_dir=str(run_dir), wrf_install_path=str(install),
                           ntasks=1, launcher=LauncherConfig(kind="none", mpi_plugin=None),
                           modules=[], setup_lines=[])
    path = script_path(str(run_dir), stage)
    Path(path).write_text(render_batch_script(context))
    return scheduler.submit(path, workdir=str(run_dir))


def wait_for_state(scheduler: LocalScheduler, job_id: str, timeout_s: float = 10.0) -> JobState:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = scheduler.query([job_id]).jobs[job_id].state
        if state.final:
            return state
        time.sleep(0.1)
    return scheduler.query([job_id]).jobs[job_id].state


def read_state(run_dir: Path, stage: Stage):  # noqa: ANN201
    return parse_state_file(Path(state_file_path(str(run_dir), stage)).read_text())


def test_real_success_state_file(tmp_path: Path, fake_install: Path, local_scheduler) -> None:
    run_dir = run_dir_for(tmp_path)
    (run_dir / "README.namelist").write_text("uploaded\n")
    job_id = submit_stage(local_scheduler, run_dir, fake_install, Stage.REAL)
    assert wait_for_state(local_scheduler, job_id) is JobState.COMPLETED
    state = read_state(run_dir, Stage.REAL)
    assert state.job_id == job_id
    assert state.exit_code == 0
    assert state.success_line is True
    assert state.start_time is not None
    assert state.end_time is not None
    assert (run_dir / "logs" / "real" / "rsl.out.0000").is_file()
    assert not (run_dir / "rsl.out.0000").exists()
    assert os.readlink(run_dir / "VEGPARM.TBL") == str(fake_install / "run" / "LANDUSE.TBL")
    assert os.readlink(run_dir / "real.exe") == str(fake_install / "main" / "real.exe")
    assert not (run_dir / "namelist.input").exists()
    assert (run_dir / "README.namelist").read_text() == "uploaded\n"


def test_real_failure_state_file(
    tmp_path: Path, fake_install: Path, local_scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "fail")
    run_dir = run_dir_for(tmp_path)
    job_id = submit_stage(local_scheduler, run_dir, fake_install, Stage.REAL)
    assert wait_for_state(local_scheduler, job_id) is JobState.FAILED
    state = read_state(run_dir, Stage.REAL)
    assert state.exit_code == 3
    assert state.success_line is False
    assert local_scheduler.query([job_id]).jobs[job_id].exit_code == 3


def test_real_cancel_state_file(
    tmp_path: Path, fake_install: Path, local_scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "sleep")
    run_dir = run_dir_for(tmp_path)
    job_id = submit_stage(local_scheduler, run_dir, fake_install, Stage.REAL)
    deadline = time.monotonic() + 10
    while read_state_or_none(run_dir) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    local_scheduler.cancel([job_id])
    assert wait_for_state(local_scheduler, job_id) is JobState.CANCELLED
    state = read_state(run_dir, Stage.REAL)
    assert state.exit_code == 143
    assert state.success_line is False
    assert "signal=15" in Path(state_file_path(str(run_dir), Stage.REAL)).read_text()


def test_unresolvable_install_entry_fails_stage(
    tmp_path: Path, fake_install: Path, local_scheduler
) -> None:
    # A symlink loop in the install: readlink -f fails, and the stage must stop there
    # rather than link an empty or partial target and run on.
    (fake_install / "run" / "LOOP.TBL").symlink_to("LOOP.TBL")
    run_dir = run_dir_for(tmp_path)
    job_id = submit_stage(local_scheduler, run_dir, fake_install, Stage.REAL)
    assert wait_for_state(local_scheduler, job_id) is JobState.FAILED
    assert read_state(run_dir, Stage.REAL).exit_code == 1
    error_log = (run_dir / ".wrfbatch" / f"real-{job_id}.err").read_text()
    assert "cannot resolve" in error_log
    assert "LOOP.TBL" in error_log
    assert not (run_dir / "rsl.out.0000").exists()


def read_state_or_none(run_dir: Path):  # noqa: ANN201
    path = Path(state_file_path(str(run_dir), Stage.REAL))
    return parse_state_file(path.read_text()) if path.exists() else None


def test_wrf_missing_inputs_refused(tmp_path: Path, fake_install: Path, local_scheduler) -> None:
    run_dir = run_dir_for(tmp_path)
    (run_dir / "wrfinput_d01").write_text("")
    job_id = submit_stage(local_scheduler, run_dir, fake_install, Stage.WRF)
    assert wait_for_state(local_scheduler, job_id) is JobState.FAILED
    state = read_state(run_dir, Stage.WRF)
    assert state.exit_code == 1
    error_log = (run_dir / ".wrfbatch" / f"wrf-{job_id}.err").read_text()
    assert "wrfbdy_d01 is missing" in error_log
    assert not (run_dir / "rsl.out.0000").exists()


def test_wrf_after_real_succeeds(tmp_path: Path, fake_install: Path, local_scheduler) -> None:
    run_dir = run_dir_for(tmp_path)
    for name in ("wrfinput_d01", "wrfbdy_d01"):
        (run_dir / name).write_text("")
    job_id = submit_stage(local_scheduler, run_dir, fake_install, Stage.WRF)
    assert wait_for_state(local_scheduler, job_id) is JobState.COMPLETED
    state = read_state(run_dir, Stage.WRF)
    assert state.success_line is True
    assert (run_dir / "rsl.out.0000").is_file()


# --- rendered scripts run by the testbed's Slurm ---------------------------------------------

@pytest.fixture
def slurm_scheduler(testbed):  # noqa: ANN001, ANN201
    from wrfbatch.schedulers.slurm import SlurmScheduler

    return SlurmScheduler(LocalTransport(), partition=testbed.partitions[0])


def submit_to_slurm(scheduler, run_dir: Path, install: Path, stage: Stage) -> str:  # noqa: ANN001
    context = make_context(stage, run_dir=str(run_dir), wrf_install_path=str(install),
                           ntasks=1, walltime_min=5, modules=[], setup_lines=[],
                           launcher=LauncherConfig(kind="srun", mpi_plugin="pmix"))
    path = script_path(str(run_dir), stage)
    Path(path).write_text(render_batch_script(context))
    return scheduler.submit(path, workdir=str(run_dir))


def wait_for_slurm(scheduler, job_id: str, timeout_s: float = 30.0) -> JobState:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = scheduler.query([job_id]).jobs[job_id].state
        if state.final:
            return state
        time.sleep(0.5)
    return scheduler.query([job_id]).jobs[job_id].state


@pytest.mark.cluster
def test_slurm_real_success_state(tmp_path: Path, fake_install: Path, slurm_scheduler) -> None:
    tmp_path.chmod(0o755)
    run_dir = run_dir_for(tmp_path)
    job_id = submit_to_slurm(slurm_scheduler, run_dir, fake_install, Stage.REAL)
    assert wait_for_slurm(slurm_scheduler, job_id) is JobState.COMPLETED
    state = read_state(run_dir, Stage.REAL)
    assert state.job_id == job_id
    assert state.exit_code == 0
    assert state.success_line is True
    assert (run_dir / "logs" / "real" / "rsl.out.0000").is_file()


@pytest.mark.cluster
def test_slurm_scancel_state(
    tmp_path: Path, fake_install: Path, slurm_scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path.chmod(0o755)
    monkeypatch.setenv("FAKE_MODE", "sleep")
    run_dir = run_dir_for(tmp_path)
    job_id = submit_to_slurm(slurm_scheduler, run_dir, fake_install, Stage.REAL)
    deadline = time.monotonic() + 20
    while not (run_dir / "rsl.error.0000").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    slurm_scheduler.cancel([job_id])
    assert wait_for_slurm(slurm_scheduler, job_id) is JobState.CANCELLED
    deadline = time.monotonic() + 10
    while read_state(run_dir, Stage.REAL).exit_code is None and time.monotonic() < deadline:
        time.sleep(0.2)
    state = read_state(run_dir, Stage.REAL)
    assert state.exit_code == 143
    assert state.success_line is False
