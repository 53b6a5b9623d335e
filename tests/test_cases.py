"""Failures that WRF users hit, each with its own small input, and how wrfbatch handles them.

Checks made before a job is submitted go through RunManager.setup and start on the local
scheduler with stand-in WRF installs. Failure causes come from running the stand-in into
the fault, or from logs of real WRF 4.3.3 runs in the shared WRF facts folder.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lifecycle import FINAL, upload_inputs, wait_for
from wrfbatch.config import Settings
from wrfbatch.errors import ConflictError, InvalidInputError, NamelistError
from wrfbatch.models import Run
from wrfbatch.namelist.decomposition import decomposition_problem
from wrfbatch.runs import RunManager
from wrfbatch.standin.install import install_standin
from wrfbatch.standin.metem import write_met_em_set
from wrfbatch.wrflogs import classify_failure, classify_log

VERSIONS = ("3.9", "4.7.1")

BASE = """\
&time_control
 start_year = 2019, 2019, start_month = 9, 9, start_day = 4, 4, start_hour = 12, 12,
 end_year = 2019, 2019, end_month = 9, 9, end_day = 4, 4, end_hour = 18, 18,
 interval_seconds = 10800, history_interval = 60, 60, restart_interval = 180,
 input_from_file = .true., .true.,
/
&domains
 time_step = 180, max_dom = 1, e_we = 50, 31, e_sn = 45, 31, e_vert = 30, 30,
 num_metgrid_levels = 27, num_metgrid_soil_levels = 4, dx = 30000, dy = 30000,
 parent_id = 0, 1, i_parent_start = 1, 10, j_parent_start = 1, 10,
 parent_grid_ratio = 1, 3,
/
&physics
 mp_physics = 3, 3, ra_lw_physics = 1, 1, ra_sw_physics = 1, 1, sf_surface_physics = 2, 2,
/
&namelist_quilt
 nio_tasks_per_group = 0, nio_groups = 1,
/
"""


def namelist(**changes: str) -> str:
    """BASE with ``name=' text'`` replacements of whole 'name = value' settings."""
    text = BASE
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def settings_for(tmp_path: Path, wrf_root: Path, max_cores: int = 4, **service: object
                 ) -> Settings:
    wrf = {}
    for version in VERSIONS:
        prefix = wrf_root / version
        if not (prefix / "main" / "wrf.exe").exists():
            install_standin(prefix, version)
        wrf[version] = {"path": str(prefix)}
    return Settings.model_validate({
        "service": {"data_dir": str(tmp_path / "data"), "poll_interval_s": 0.5, **service},
        "clusters": {"local": {
            "transport": "local", "scheduler": "local",
            "work_root": str(tmp_path / "cluster" / "runs"), "max_cores": max_cores,
            "max_walltime_min": 30, "launcher": {"kind": "none", "mpi_plugin": None},
            "wrf": wrf,
        }},
    })


@pytest.fixture(scope="module")
def wrf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("case-wrf")


@pytest.fixture
def manager(tmp_path: Path, wrf_root: Path):
    manager = RunManager(settings_for(tmp_path, wrf_root))
    yield manager
    manager.close()


def set_up(manager: RunManager, text: str, tmp_path: Path, version: str = "4.7.1",
           standin: dict | None = None, **met_em: int):
    run = manager.create_run("alice", version)
    upload_inputs(manager, run.id, text, tmp_path / "inputs", standin, **met_em)
    return run.id, manager.setup(run.id)


def rejection(manager: RunManager, text: str, tmp_path: Path, version: str = "4.7.1",
              **met_em: int) -> NamelistError:
    run = manager.create_run("alice", version)
    with pytest.raises(NamelistError) as info:
        upload_inputs(manager, run.id, text, tmp_path / "inputs", **met_em)
        manager.setup(run.id)
    assert manager.get(run.id).status == "created"
    return info.value


def poll_until(manager: RunManager, run_id: str, wanted: Callable[[Run], bool],
               timeout_s: float = 60.0) -> Run:
    """Refresh until ``wanted(run)`` holds; fail when the run ends first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        manager.refresh("local")
        run = manager.get(run_id)
        if wanted(run):
            return run
        assert run.status not in FINAL, run.model_dump_json()
        assert time.monotonic() < deadline, run.model_dump_json()
        time.sleep(0.3)


# --------------------------------------------------------------------------- na


def test_derived_variable_rejected(manager, tmp_path):
    error = rejection(manager, namelist(**{"mp_physics = 3, 3,":
                                           "mp_physics = 3, 3, num_urban_nbui = 5,"}), tmp_path)
    assert any("&physics num_urban_nbui = 5" in p for p in error.problems)


def test_suggests_closest_name(manager, tmp_path):
    error = rejection(manager, namelist(**{"mp_physics = 3, 3,": "mp_phisics = 3,"}), tmp_path)
    assert "did you mean mp_physics" in str(error)


def test_every_problem_reported(manager, tmp_path):
    text = namelist(**{"time_step = 180,": "time_step = 180.,",
                       "mp_physics = 3, 3,": "mp_physics = 3, 3, physics_suite = 'CONUS', 5,",
                       "restart_interval = 180,": "restart_interval = 180, made_up = 1,"})
    problems = rejection(manager, text, tmp_path).problems
    assert any(p.startswith("&domains time_step = 180.0") and "integer" in p for p in problems)
    assert any(p.startswith("&physics physics_suite") and "one value" in p for p in problems)
    assert any(p.startswith("&time_control made_up = 1") for p in problems)


# --------------------------------------------------------------------------- co


BIG_GRID = {"e_we = 50, 31,": "e_we = 142,", "e_sn = 45, 31,": "e_sn = 133,",
            "dx = 30000, dy = 30000,": "dx = 12000, dy = 12000,",
            "time_step = 180,": "time_step = 60,",
            "end_hour = 18, 18,": "end_hour = 15, 15,"}


def test_options_never_invalid(tmp_path, wrf_root):
    manager = RunManager(settings_for(tmp_path, wrf_root, max_cores=128))
    try:
        run_id, result = set_up(manager, namelist(**BIG_GRID), tmp_path)
        summary = manager.read_summary(run_id)
        cores = [option.cores for option in result.compute_options]
        assert 128 not in cores
        assert all(decomposition_problem(summary, n) is None for n in cores)
        with pytest.raises(InvalidInputError, match=r"128 tasks split as 8 x 16.*[Vv]alid "
                                                    r"[Cc]ore counts: .*\b120\b"):
            manager.start(run_id, 128)
        assert manager.get(run_id).status == "ready"
    finally:
        manager.close()


# --------------------------------------------------------------------------- in


def test_met_em_levels_mismatch(manager, tmp_path):
    text = namelist(**{"num_metgrid_levels = 27,": "num_metgrid_levels = 32,"})
    error = rejection(manager, text, tmp_path, num_metgrid_levels=34)
    assert "BOTTOM-TOP_GRID_DIMENSION = 34" in str(error)
    assert "set num_metgrid_levels = 34" in str(error)


def test_other_dates_missing(manager, tmp_path):
    run = manager.create_run("alice", "4.7.1")
    other = tmp_path / "other"
    other.mkdir()
    (other / "namelist.input").write_text(namelist(**{"start_day = 4, 4,": "start_day = 5, 5,",
                                                      "end_day = 4, 4,": "end_day = 5, 5,"}))
    for path in write_met_em_set(other / "namelist.input", other):
        manager.upload(run.id, path.name, io.BytesIO(path.read_bytes()))
    manager.upload(run.id, "namelist.input", io.BytesIO(BASE.encode()))
    result = manager.setup(run.id)
    assert result.run.status == "created"
    assert result.missing_input_files == ["met_em.d01.2019-09-04_12:00:00.nc",
                                          "met_em.d01.2019-09-04_15:00:00.nc",
                                          "met_em.d01.2019-09-04_18:00:00.nc"]
    assert any("met_em.d01.2019-09-05_12:00:00.nc" in w for w in result.warnings)


def test_restart_file_required(manager, tmp_path):
    text = namelist(**{"restart_interval = 180,": "restart_interval = 180, restart = .true.,"})
    run_id, result = set_up(manager, text, tmp_path)
    assert result.missing_input_files == ["wrfrst_d01_2019-09-04_12:00:00"]
    with pytest.raises(ConflictError, match="setup"):
        manager.start(run_id, 1)


# --------------------------------------------------------------------------- qu


def test_quilt_warning_not_rejection(manager, tmp_path):
    text = namelist(**{"nio_groups = 1,": "nio_groups = 2,"})
    _, result = set_up(manager, text, tmp_path)
    assert result.run.status == "ready"
    assert any(w.startswith("&namelist_quilt nio_groups = 2") for w in result.warnings)


def test_io_tasks_do_not_compute(manager, tmp_path):
    text = namelist(**{"nio_tasks_per_group = 0,": "nio_tasks_per_group = 1,",
                       "nio_groups = 1,": "nio_groups = 2,"})
    _, result = set_up(manager, text, tmp_path)
    assert [option.cores for option in result.compute_options] == [3, 4]


def test_stall_reported_then_cleared(tmp_path, wrf_root):
    manager = RunManager(settings_for(tmp_path, wrf_root, stall_timeout_s=1.5))
    try:
        run_id, _ = set_up(manager, BASE, tmp_path, standin={
            "pace_s_per_model_hour": 1.0, "wrf": {"slow_start_s": 5}})
        manager.start(run_id, 1)
        stalled = poll_until(manager, run_id, lambda r: r.warning is not None)
        assert stalled.status == "active"
        assert stalled.warning.startswith("stalled: no new log lines")
        assert "last line of rsl.out.0000" in stalled.warning
        moving = poll_until(manager, run_id, lambda r: r.warning is None)
        assert moving.status == "active"
        assert wait_for(manager, run_id, FINAL).status == "done"
    finally:
        manager.close()


# --------------------------------------------------------------------------- ti


@pytest.mark.parametrize("version", ["4.7.1"])
def test_time_step_rejected(manager, tmp_path, version):
    text = namelist(**{"dx = 30000, dy = 30000,": "dx = 3000, dy = 3000,",
                       "time_step = 180,": "time_step = 60,"})
    error = rejection(manager, text, tmp_path, version)
    assert "&domains time_step = 60: time_step / dx[km] on domain 1 is 20.0" in str(error)
    assert "use time_step <= 18" in str(error)


def test_adaptive_accepted(manager, tmp_path):
    text = namelist(**{"dx = 30000, dy = 30000,": "dx = 3000, dy = 3000, "
                       "use_adaptive_time_step = .true.,", "time_step = 180,": "time_step = 60,"})
    assert set_up(manager, text, tmp_path)[1].run.status == "ready"


def test_warning_before_42(manager, tmp_path):
    text = namelist(**{"dx = 30000, dy = 30000,": "dx = 3000, dy = 3000,",
                       "time_step = 180,": "time_step = 60,"})
    _, result = set_up(manager, text, tmp_path, "3.9")
    assert result.run.status == "ready"
    assert any("20.0 s per km" in w for w in result.warnings)


# --------------------------------------------------------------------------- classify cases


def run_to_end(manager: RunManager, text: str, tmp_path: Path, version: str = "4.7.1",
               standin: dict | None = None):
    run_id, _ = set_up(manager, text, tmp_path, version, standin)
    manager.start(run_id, 1)
    return wait_for(manager, run_id, FINAL)


def test_cfl_crash_classified(manager, tmp_path):
    text = namelist(**{"max_dom = 1,": "max_dom = 2,"})
    run = run_to_end(manager, text, tmp_path, standin={"cfl": True})
    assert run.error.code == "cfl"
    assert "w_damping = 1" in run.error.message
    assert "restart" in run.error.message


def test_wrf_waits_for_real(manager, tmp_path):
    run_id, _ = set_up(manager, BASE, tmp_path)
    handle = manager.clusters.get("local")
    Path(handle.run_dir(run_id), "met_em.d01.2019-09-04_15:00:00.nc").unlink()
    manager.start(run_id, 1)
    run = wait_for(manager, run_id, FINAL)
    assert run.error.message.startswith("real stage failed")
    assert run.error.code == "missing_input"
    assert not Path(handle.run_dir(run_id), "rsl.out.0000").exists()


def test_real_log_classified(shared_dir):
    logs = shared_dir / "wrf" / "real-logs" / "f_missing_wrfinput"
    error = classify_failure("wrf", None, 1, (logs / "rsl.error.0000").read_text())
    assert error.code == "missing_input"
    assert "wrfinput_d01" in error.message


def test_missing_table_named(tmp_path, wrf_root):
    damaged = tmp_path / "damaged"
    shutil.copytree(wrf_root / "4.7.1", damaged, symlinks=True)
    (damaged / "run" / "ozone_plev.formatted").unlink()
    settings = settings_for(tmp_path, wrf_root)
    settings.clusters["local"].wrf["4.7.1"].path = str(damaged)
    manager = RunManager(settings)
    try:
        text = namelist(**{"ra_lw_physics = 1, 1,": "ra_lw_physics = 4, 4,"})
        run = run_to_end(manager, text, tmp_path)
        assert run.error.code == "missing_runtime_file"
        assert "ozone_plev.formatted" in run.error.message
    finally:
        manager.close()


def test_run_dir_links_install(manager, tmp_path):
    run = run_to_end(manager, BASE, tmp_path)
    run_dir = Path(manager.clusters.get("local").run_dir(run.id))
    install_run = Path(manager.settings.clusters["local"].wrf["4.7.1"].path) / "run"
    wanted = {p.name for p in install_run.iterdir()}
    assert wanted <= {p.name for p in run_dir.iterdir()}


def test_launcher_failure_named(tmp_path, wrf_root):
    settings = settings_for(tmp_path, wrf_root)
    settings.clusters["local"].launcher.kind = "mpirun"
    settings.clusters["local"].launcher.extra_args = ["--no-such-option-for-mpirun"]
    manager = RunManager(settings)
    try:
        run = run_to_end(manager, BASE, tmp_path)
        assert run.error.code == "launcher"
        assert "mpirun" in run.error.message
    finally:
        manager.close()


# --------------------------------------------------------------------------- log signatures

# One line per failure signature of log-signatures.tsv, as WRF, MPI, gfortran or Slurm print it.
SIGNATURE_LINES = {
    "fatal_banner": "-------------- FATAL CALLED ---------------",
    "fatal_from_file": "FATAL CALLED FROM FILE:  <stdin>  LINE:     384",
    "nml_read_error": "------ ERROR while reading namelist physics ------",
    "nml_maybe_here": "Maybe here?:  num_urban_nbui = 5,",
    "nml_errors_fatal": "ERRORS while reading one or more namelists from namelist.input.",
    "nml_obsolete_hint": (
        "-- Are pd_moist, pd_scalar, pd_chem, pd_tke still in your dynamics namelist?"),
    "nml_open_error": "ERROR OPENING namelist.input",
    "nml_quilt_missing": "ERROR reading namelist namelist_quilt",
    "check_a_mundo_count": (
        "NOTE:       1 namelist settings are wrong. Please check and reset these options"),
    "check_a_mundo_error": "--- ERROR: sf_surface_physics = 4 requires num_soil_layers = 4",
    "too_many_tasks": (
        "--- ERROR: the domain size is too small for this many processors, or the "
        "decomposition aspect ratio is poor."),
    "nproc_mismatch": "WRF_DM_INITIALIZE (RSL_LITE): nproc_x * nproc_y in namelist ne 4",
    "physics_suite_bad": "Unrecognized physics suite",
    "time_step_too_large": "--- ERROR: Time step too large",
    "size_mismatch": "input_wrf.F: SIZE MISMATCH:  namelist num_metgrid_levels = 32",
    "dims_mismatch": "---- ERROR: Mismatch between namelist and input file dimensions",
    "attr_mismatch": (
        "---- ERROR: Mismatch between namelist and global attribute "
        "NUM_METGRID_SOIL_LEVELS"),
    "inconsistencies_count": "NOTE:       2 namelist vs input data inconsistencies found.",
    "pre_v4_input": (
        "---- ERROR: The input file appears to be from a pre-v4 version of WRF "
        "initialization routines"),
    "met_em_missing": (
        "error opening met_em.d01.2019-09-04_12:00:00.nc for input; bad date in namelist "
        "or file not in directory"),
    "end_before_start": (
        "Ending date in namelist 2019-09-04_06:00:00 prior to beginning date "
        "2019-09-04_12:00:00"),
    "end_too_short": "Make the end time at least one 'interval_seconds' beyond the start time",
    "wrf_input_missing": "program wrf: error opening wrfinput_d01 for reading ierr=  -1021",
    "bdy_open_error": "med_latbound_in: error opening wrfbdy_d01 for reading. IERR =  -1021",
    "bdy_ran_out": "---- ERROR: Ran out of valid boundary conditions in file wrfbdy_d01",
    "bdy_restart_notime": (
        "---- ERROR: Cannot find a valid time to start the LBC during this restart"),
    "cfl_old": "   5 points exceeded cfl=2 in domain d01 at time 2019-09-04_13:00:00 hours",
    "cfl_43": "   5 points exceeded w_critical_cfl in domain d01 at time 2019-09-04_13:00:00 hours",
    "cfl_44": "   5 points exceeded v_cfl = 2 in domain d01 at time 2019-09-04_13:00:00 hours",
    "cfl_generic": "d01 2019-09-04_13:00:00  12 points exceeded w_flag_cfl in domain d01",
    "tbl_landuse": "LANDUSE_INIT: open failure for LANDUSE.TBL",
    "tbl_noah": "soil_veg_gen_parm: failure opening VEGPARM.TBL",
    "tbl_rrtmg": "module_ra_rrtmg_lw: error opening RRTMG_LW_DATA on unit 10",
    "tbl_ghg": "CLWRF: 'CAMtr_volume_mixing_ratio' does not exist",
    "tbl_urban": "Error opening URBPARM.TBL",
    "landuse_not_in_vegparm": (
        "Land Use Dataset 'MODIFIED_IGBP_MODIS_NOAH' not found in VEGPARM.TBL."),
    "mpi_abort_mpich": "application called MPI_Abort(MPI_COMM_WORLD, 1) - process 0",
    "mpi_abort_ompi": "MPI_ABORT was invoked on rank 0 in communicator MPI_COMM_WORLD",
    "segv_gfortran": (
        "Program received signal SIGSEGV: Segmentation fault - invalid memory reference."),
    "segv_intel": "forrtl: severe (174): SIGSEGV, segmentation fault occurred",
    "mpi_bad_termination": "=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES",
    "slurm_timeout": (
        "slurmstepd: error: *** JOB 42 ON node01 CANCELLED AT 2026-12-04T10:00:00 DUE TO "
        "TIME LIMIT ***"),
    "slurm_oom": "slurmstepd: error: Detected 1 oom-kill event in StepId=42.0.",
    "slurm_cancelled": (
        "slurmstepd: error: *** JOB 42 ON node01 CANCELLED AT 2026-12-04T10:00:00 ***"),
    "aux_missing": "Possibly missing file for = auxinput4",
    "tbl_rrtm": "module_ra_rrtm: error opening RRTM_DATA on unit 10",
    "gfortran_cannot_open": (
        "Fortran runtime error: Cannot open file 'ozone_plev.formatted': No such file or "
        "directory"),
    "gfortran_eof_table": "At line 1234 of file module_ra_rrtm.f90 (unit = 10, file = 'RRTM_DATA')",
}

# The cause code for each signature category; scheduler lines name the scheduler's reason.
CODES = {"fatal": "fatal", "namelist": "namelist", "decomposition": "decomposition",
         "input_mismatch": "input_mismatch", "missing_input": "missing_input", "lbc": "lbc",
         "cfl": "cfl", "missing_runtime_file": "missing_runtime_file",
         "bad_runtime_file": "bad_runtime_file", "mpi": "mpi", "crash": "crash"}
SCHEDULER_CODES = {"slurm_timeout": "time_limit", "slurm_oom": "oom",
                   "slurm_cancelled": "cancelled"}
NOT_FAILURES = {"progress", "output", "success"}


def failure_signatures() -> list[dict[str, str]]:
    from conftest import SHARED_DIR

    path = SHARED_DIR / "wrf" / "log-signatures.tsv"
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [row for row in rows if row["category"] not in NOT_FAILURES]


@pytest.mark.parametrize("row", failure_signatures(), ids=lambda row: row["id"])
def test_signature_line_classified(shared_dir, row):
    line = SIGNATURE_LINES[row["id"]]
    assert re.search(row["python_regex"], line), "the sample line must match the signature"
    found = classify_log(f"some earlier output\n{line}\n")
    assert found is not None
    assert found.code == SCHEDULER_CODES.get(row["id"], CODES.get(row["category"]))


@pytest.mark.parametrize(("folder", "code"), [
    ("a_unknown_nml_var", "namelist"), ("b_real_time_step", "namelist"),
    ("c_too_many_tasks_np25", "decomposition"), ("f_missing_wrfinput", "missing_input"),
])
def test_real_logs_classified(shared_dir, folder, code):
    logs = shared_dir / "wrf" / "real-logs" / folder
    text = (logs / "rsl.error.0000").read_text() + (logs / "rsl.out.0000").read_text()
    assert classify_failure("wrf", None, 1, text).code == code


def test_scancel_log_classified(shared_dir):
    logs = shared_dir / "wrf" / "real-logs" / "slurm_scancel"
    found = classify_failure("wrf", None, None, (logs / "rsl.out.0000").read_text(),
                             (logs / "slurm-5.err").read_text())
    assert found.code == "cancelled"
