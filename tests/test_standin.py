"""The stand-in WRF install and its programs, run directly as a single rank."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import netCDF4
import pytest

from _standin_support import FAST, namelist, rsl, run, run_dir
from wrfbatch.errors import InvalidInputError
from wrfbatch.standin import install_standin

VERSIONS = ("3.8.1", "3.9", "4.3", "4.5.2")


@pytest.fixture(scope="module")
def installs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wrf")
    return {version: install_standin(root / version, version) for version in VERSIONS}


@pytest.fixture
def v43(installs) -> Path:
    return installs["4.3"]


# ---------------------------------------------------------------- install


def test_install_programs_use_python(tmp_path):
    prefix = install_standin(tmp_path / "wrf", "3.9", python="/usr/bin/python3")
    for name in ("real", "wrf", "ideal"):
        exe = prefix / "main" / f"{name}.exe"
        assert os.access(exe, os.X_OK)
        assert exe.read_text().splitlines()[0] == "#!/usr/bin/python3"
    assert (prefix / "main" / "standin" / "f90nml" / "__init__.py").is_file()


def test_install_run_dir_files(installs):
    run_files = {p.name for p in (installs["4.5.2"] / "run").iterdir()}
    assert {"LANDUSE.TBL", "ozone_plev.formatted", "namelist.input", "wrf.exe"} <= run_files
    link = installs["4.5.2"] / "run" / "CAMtr_volume_mixing_ratio"
    assert link.is_symlink()
    assert os.readlink(link) == "CAMtr_volume_mixing_ratio.SSP245"
    assert os.readlink(installs["4.5.2"] / "run" / "real.exe") == "../main/real.exe"


def test_install_replaces_tree(tmp_path):
    prefix = install_standin(tmp_path / "wrf", "3.9")
    (prefix / "run" / "stray").write_text("x")
    install_standin(prefix, "3.9")
    assert not (prefix / "run" / "stray").exists()
    assert (prefix / "run" / "LANDUSE.TBL").is_file()


def test_install_rejects_foreign_dir(tmp_path):
    (tmp_path / "data.txt").write_text("keep")
    with pytest.raises(InvalidInputError, match="not a stand-in"):
        install_standin(tmp_path, "3.9")
    assert (tmp_path / "data.txt").read_text() == "keep"


def test_install_rejects_bad_python(tmp_path):
    with pytest.raises(InvalidInputError, match="Python path"):
        install_standin(tmp_path / "wrf", "3.9", python="python3; rm -rf /")


def test_install_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "wrfbatch.standin", "install", "--version", "4.0",
         "--prefix", str(tmp_path / "wrf")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "wrf" / "main" / "wrf.exe").is_file()


def test_install_cli_unknown_version(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "wrfbatch.standin", "install", "--version", "9.9",
         "--prefix", str(tmp_path / "wrf")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown WRF version '9.9'" in result.stderr


# ---------------------------------------------------------------- real.exe


def test_real_success_outputs(v43, tmp_path):
    path = run_dir(v43, tmp_path)
    result = run(path, "real")
    assert result.returncode == 0, rsl(path, "error")
    assert " starting wrf task            0  of            1" in result.stdout
    log = rsl(path)
    assert "Domain  1: Current date being processed: 2019-09-04_18:00:00.0000, which is " \
           "loop #   2 out of    2" in log
    assert log.splitlines()[-1] == "d01 2019-09-04_18:00:00 real_em: SUCCESS COMPLETE REAL_EM INIT"
    with netCDF4.Dataset(path / "wrfinput_d01") as data:
        assert len(data.dimensions["west_east"]) == 41
        assert str(netCDF4.chartostring(data["Times"][:])[0]) == "2019-09-04_12:00:00"
    assert (path / "wrfbdy_d01").is_file()


def test_real_missing_met_em(v43, tmp_path):
    path = run_dir(v43, tmp_path)
    (path / "met_em.d01.2019-09-04_18:00:00.nc").unlink()
    result = run(path, "real")
    assert result.returncode == 1
    log = rsl(path)
    assert "which is loop #   2 out of    2" in log
    assert "error opening met_em.d01.2019-09-04_18:00:00.nc for input; bad date in namelist " \
           "or file not in directory" in log
    assert "-------------- FATAL CALLED ---------------" in log
    assert not (path / "wrfinput_d01").exists()


def test_real_nest_start_only(v43, tmp_path):
    path = run_dir(v43, tmp_path, namelist(domains={"max_dom": 2}))
    assert sorted(p.name for p in path.glob("met_em.d02*")) == [
        "met_em.d02.2019-09-04_12:00:00.nc"]
    result = run(path, "real")
    assert result.returncode == 0, rsl(path, "error")
    assert (path / "wrfinput_d02").is_file()


def test_real_nocolons_names(v43, tmp_path):
    path = run_dir(v43, tmp_path, namelist(time_control={"nocolons": True}))
    assert (path / "met_em.d01.2019-09-04_18_00_00.nc").is_file()
    assert run(path, "real").returncode == 0


def _mismatch_run(install: Path, path: Path, **kwargs) -> str:
    run_dir(install, path, met_em=False)
    from wrfbatch.standin import write_met_em_set
    write_met_em_set(namelist(), path, **kwargs)
    result = run(path, "real")
    assert result.returncode == 1
    return rsl(path)


def test_real_levels_mismatch_43(v43, tmp_path):
    log = _mismatch_run(v43, tmp_path, num_metgrid_levels=34)
    assert "input_wrf.F: SIZE MISMATCH:  namelist num_metgrid_levels = 27" in log
    assert "input_wrf.F: SIZE MISMATCH:  input file BOTTOM-TOP_GRID_DIMENSION = 34" in log
    assert "---- ERROR: Mismatch between namelist and input file dimensions" in log
    assert "NOTE:       1 namelist vs input data inconsistencies found." in log


def test_real_levels_mismatch_39(installs, tmp_path):
    log = _mismatch_run(installs["3.9"], tmp_path, num_metgrid_levels=34)
    assert "namelist   ide,jde,num_metgrid_levels=          42          42          27" in log
    assert "---- ERROR: Mismatch between namelist and input file dimensions" in log


def test_real_mismatch_381_stops_first(installs, tmp_path):
    log = _mismatch_run(installs["3.8.1"], tmp_path, num_metgrid_levels=34, num_soil_levels=2)
    assert "input file ide,jde,num_metgrid_levels=" in log
    assert "NUM_METGRID_SOIL_LEVELS" not in log
    assert "inconsistencies found" not in log


def test_real_soil_mismatch(v43, tmp_path):
    log = _mismatch_run(v43, tmp_path, num_soil_levels=2)
    assert "---- ERROR: Mismatch between namelist and global attribute " \
           "NUM_METGRID_SOIL_LEVELS" in log
    assert "SIZE MISMATCH" not in log


# ---------------------------------------------------------------- namelist reading


def test_namelist_unknown_variable_v4(v43, tmp_path):
    path = run_dir(v43, tmp_path, namelist(physics={"num_urban_nbui": 5}))
    assert run(path, "wrf").returncode == 1
    lines = rsl(path).splitlines()
    start = lines.index("  ------ ERROR while reading namelist physics ------")
    assert lines[start + 1].startswith("Maybe here?:     ")
    assert "num_urban_nbui" in lines[start + 2]
    assert "ERRORS while reading one or more namelists from namelist.input." in lines
    assert "Quilting with   1 groups of   0 I/O tasks." in lines


def test_namelist_unknown_variable_v3(installs, tmp_path):
    path = run_dir(installs["3.9"], tmp_path, namelist(physics={"num_urban_nbui": 5}))
    assert run(path, "real").returncode == 1
    log = rsl(path)
    assert "  ------ ERROR while reading namelist physics ------" in log
    assert "Maybe here?" not in log


def test_namelist_wrong_type_domains(v43, tmp_path):
    path = run_dir(v43, tmp_path, namelist(domains={"time_step": 180.0}))
    assert run(path, "real").returncode == 1
    log = rsl(path)
    assert "ERROR reading namelist domains" in log
    assert "Quilting with" not in log
    assert "ERROR while reading namelist" not in log


def test_namelist_errors_per_group(v43, tmp_path):
    nml = namelist(physics={"physics_suite": ["CONUS", 5]}, time_control={"made_up": 1},
                   dynamics={"w_damping": True})
    path = run_dir(v43, tmp_path, nml)
    assert run(path, "wrf").returncode == 1
    log = rsl(path)
    for group in ("physics", "time_control", "dynamics"):
        assert f"------ ERROR while reading namelist {group} ------" in log


def test_namelist_unknown_group_ignored(v43, tmp_path):
    path = run_dir(v43, tmp_path, namelist(chem={"chem_opt": 301}))
    result = run(path, "real")
    assert result.returncode == 0, rsl(path)


def test_namelist_missing_quilt(v43, tmp_path):
    nml = namelist()
    del nml["namelist_quilt"]
    path = run_dir(v43, tmp_path, nml)
    assert run(path, "real").returncode == 1
    assert "ERROR reading namelist namelist_quilt" in rsl(path)


def test_namelist_file_missing(v43, tmp_path):
    path = run_dir(v43, tmp_path)
    (path / "namelist.input").unlink()
    assert run(path, "wrf").returncode == 1
    assert "ERROR OPENING namelist.input" in rsl(path)


# ---------------------------------------------------------------- wrf.exe


def _real_then(path: Path, program: str = "wrf", **kwargs) -> subprocess.CompletedProcess:
    assert run(path, "real").returncode == 0, rsl(path, "error")
    return run(path, program, **kwargs)


def test_wrf_success_outputs(v43, tmp_path):
    path = run_dir(v43, tmp_path)
    result = _real_then(path)
    assert result.returncode == 0, rsl(path, "error")
    log = rsl(path).splitlines()
    progress = [line for line in log if line.startswith("Timing for main: time ")]
    assert len(progress) == 120
    assert progress[0].startswith("Timing for main: time 2019-09-04_12:03:00 on domain   1: ")
    assert progress[-1].startswith("Timing for main: time 2019-09-04_18:00:00 on domain   1: ")
    assert "Timing for Writing wrfout_d01_2019-09-04_15:00:00 for domain        1: " in \
        "\n".join(log)
    assert log[-1] == "d01 2019-09-04_18:00:00 wrf: SUCCESS COMPLETE WRF"
    assert len(list(path.glob("wrfout_d01_*"))) == 7
    assert [p.name for p in path.glob("wrfrst_d01_*")] == ["wrfrst_d01_2019-09-04_18:00:00"]


def test_wrf_run_hours_set_end(v43, tmp_path):
    path = run_dir(v43, tmp_path, namelist(time_control={"run_hours": 3}))
    assert _real_then(path).returncode == 0
    assert rsl(path).splitlines()[-1] == "d01 2019-09-04_15:00:00 wrf: SUCCESS COMPLETE WRF"


def test_wrf_nest_progress(v43, tmp_path):
    path = run_dir(v43, tmp_path, namelist(domains={"max_dom": 2}))
    assert _real_then(path).returncode == 0
    assert "on domain   2: " in rsl(path)
    assert (path / "wrfout_d02_2019-09-04_18:00:00").is_file()


def test_wrf_nocolons_outputs(v43, tmp_path):
    path = run_dir(v43, tmp_path, namelist(time_control={"nocolons": True}))
    assert _real_then(path).returncode == 0
    assert (path / "wrfout_d01_2019-09-04_18_00_00").is_file()
    assert (path / "wrfrst_d01_2019-09-04_18_00_00").is_file()


def test_wrf_frames_share_file(v43, tmp_path):
    path = run_dir(v43, tmp_path, namelist(time_control={"frames_per_outfile": [3, 3]}))
    assert _real_then(path).returncode == 0
    assert sorted(p.name for p in path.glob("wrfout_d01_*")) == [
        "wrfout_d01_2019-09-04_12:00:00", "wrfout_d01_2019-09-04_15:00:00",
        "wrfout_d01_2019-09-04_18:00:00"]
    with netCDF4.Dataset(path / "wrfout_d01_2019-09-04_12:00:00") as data:
        assert len(data.dimensions["Time"]) == 3


def test_wrf_missing_wrfinput(v43, tmp_path):
    path = run_dir(v43, tmp_path)
    result = run(path, "wrf")
    assert result.returncode == 1
    assert " program wrf: error opening wrfinput_d01 for reading ierr=       -1021" in rsl(path)


def test_wrf_missing_wrfbdy(v43, tmp_path):
    path = run_dir(v43, tmp_path)
    assert run(path, "real").returncode == 0
    (path / "wrfbdy_d01").unlink()
    assert run(path, "wrf").returncode == 1
    assert "med_latbound_in: error opening wrfbdy_d01 for reading. IERR =" in rsl(path)


def test_wrf_restart_needs_file(v43, tmp_path):
    path = run_dir(v43, tmp_path, namelist(time_control={"restart": True}))
    assert _real_then(path).returncode == 1
    assert "program wrf: error opening wrfrst_d01_2019-09-04_12:00:00 for reading" in rsl(path)


def test_wrf_restart_from_file(v43, tmp_path):
    nml = namelist(time_control={"restart_interval": 180})
    path = run_dir(v43, tmp_path, nml)
    assert _real_then(path).returncode == 0
    restarted = namelist(time_control={"restart": True, "start_hour": [15, 15]})
    restarted.write(str(path / "namelist.input"), force=True)
    assert run(path, "wrf").returncode == 0, rsl(path)
    log = rsl(path)
    assert "Timing for processing restart file for domain        1:" in log
    assert "Timing for main: time 2019-09-04_15:03:00" in log


@pytest.mark.parametrize(("missing", "physics", "expected"), [
    ("LANDUSE.TBL", {}, "LANDUSE_INIT: open failure for LANDUSE.TBL"),
    ("VEGPARM.TBL", {}, "soil_veg_gen_parm: failure opening VEGPARM.TBL"),
    ("RRTM_DATA", {}, "module_ra_rrtm: error opening RRTM_DATA on unit"),
    ("RRTMG_LW_DATA", {"ra_lw_physics": [4, 4]}, "module_ra_rrtmg_lw: error opening RRTMG_LW_DATA"),
    ("URBPARM.TBL", {"sf_urban_physics": [1, 1]}, "Error opening URBPARM.TBL"),
])
def test_wrf_missing_table_fatal(v43, tmp_path, missing, physics, expected):
    path = run_dir(v43, tmp_path, namelist(physics=physics))
    assert run(path, "real").returncode == 0
    (path / missing).unlink()
    assert run(path, "wrf").returncode == 1
    assert expected in rsl(path)


def test_wrf_missing_ozone_runtime(v43, tmp_path):
    path = run_dir(v43, tmp_path, namelist(physics={"ra_lw_physics": [4, 4],
                                                    "ra_sw_physics": [4, 4]}))
    assert run(path, "real").returncode == 0
    (path / "ozone_plev.formatted").unlink()
    assert run(path, "wrf").returncode == 2
    log = rsl(path, "error")
    assert "Fortran runtime error: Cannot open file 'ozone_plev.formatted': No such file or " \
           "directory" in log
    assert "ozone_plev" not in rsl(path, "out")


def test_wrf_suite_needs_thompson_table(installs, tmp_path):
    path = run_dir(installs["4.5.2"], tmp_path, namelist(physics={
        "physics_suite": "CONUS", "mp_physics": [-1, -1]}))
    assert run(path, "real").returncode == 0
    (path / "CCN_ACTIVATE.BIN").unlink()
    assert run(path, "wrf").returncode == 2
    assert "Cannot open file 'CCN_ACTIVATE.BIN'" in rsl(path, "error")


def test_wrf_default_pace(v43, tmp_path):
    path = run_dir(v43, tmp_path, faults=None)
    assert run(path, "real").returncode == 0
    began = time.monotonic()
    assert run(path, "wrf").returncode == 0
    assert 2.5 < time.monotonic() - began < 8


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize(("version", "wording"), [
    ("3.9", "points exceeded cfl=2 in domain d01 at time"),
    ("4.3", "points exceeded w_critical_cfl in domain d01 at time"),
    ("4.5.2", "points exceeded v_cfl = 2 in domain d01 at time"),
])
def test_fault_cfl_then_segv(installs, tmp_path, version, wording):
    path = run_dir(installs[version], tmp_path, faults={**FAST, "cfl": 2})
    result = _real_then(path)
    assert result.returncode == -signal.SIGSEGV
    warnings = [line for line in rsl(path).splitlines() if wording in line]
    counts = [int(line.split()[2]) for line in warnings]
    assert len(counts) >= 3
    assert counts == sorted(counts)
    assert "Program received signal SIGSEGV: Segmentation fault" in rsl(path, "error")
    assert "SUCCESS" not in rsl(path)


def test_fault_crash_at(v43, tmp_path):
    path = run_dir(v43, tmp_path, faults={**FAST, "crash_at": "2019-09-04_14:00:00"})
    assert _real_then(path).returncode == -signal.SIGSEGV
    last = [line for line in rsl(path).splitlines() if line.startswith("Timing for main")][-1]
    assert "2019-09-04_13:57:00" in last


def test_fault_env_overrides_file(v43, tmp_path):
    path = run_dir(v43, tmp_path, faults={**FAST, "crash_at": 1})
    env = {**os.environ, "WRFBATCH_STANDIN": json.dumps({"crash_at": None})}
    assert _real_then(path, env=env).returncode == 0


def test_fault_program_section(v43, tmp_path):
    path = run_dir(v43, tmp_path, faults={**FAST, "real": {"hang": True}, "wrf": {}})
    with pytest.raises(subprocess.TimeoutExpired):
        run(path, "real", timeout=2)


def test_fault_slow_start(v43, tmp_path):
    path = run_dir(v43, tmp_path, faults={**FAST, "slow_start_s": 1.5})
    began = time.monotonic()
    assert run(path, "real").returncode == 0
    assert time.monotonic() - began >= 1.5


def _start(path: Path, program: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "WRFBATCH_STANDIN"}
    return subprocess.Popen([f"./{program}.exe"], cwd=path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(path: Path, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (path / "rsl.out.0000").exists() and text in rsl(path):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in rsl.out.0000 after {timeout} s")


def test_fault_hang_until_sigterm(v43, tmp_path):
    path = run_dir(v43, tmp_path, faults={**FAST, "hang": "2019-09-04_13:00:00"})
    assert run(path, "real").returncode == 0
    process = _start(path, "wrf")
    _wait_for(path, "Timing for main: time 2019-09-04_12:57:00")
    time.sleep(0.5)
    assert process.poll() is None
    size = len(rsl(path))
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == -signal.SIGTERM
    assert len(rsl(path)) == size


def test_sigterm_stops_logs(v43, tmp_path):
    path = run_dir(v43, tmp_path, faults={"pace_s_per_model_hour": 5})
    assert run(path, "real").returncode == 0
    process = _start(path, "wrf")
    _wait_for(path, "Timing for main")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == -signal.SIGTERM
    last = rsl(path).splitlines()[-1]
    assert last.startswith("Timing for main")


# ---------------------------------------------------------------- ideal.exe


def test_ideal_writes_wrfinput(v43, tmp_path):
    path = run_dir(v43, tmp_path, met_em=False)
    (path / "input_sounding").write_text("1000.0 300.0 14.0\n")
    assert run(path, "ideal").returncode == 0
    assert rsl(path).splitlines()[-1] == "  wrf: SUCCESS COMPLETE IDEAL INIT"
    assert (path / "wrfinput_d01").is_file()


def test_ideal_needs_sounding(v43, tmp_path):
    path = run_dir(v43, tmp_path, met_em=False)
    assert run(path, "ideal").returncode == 2
    assert "Cannot open file 'input_sounding'" in rsl(path, "error")
