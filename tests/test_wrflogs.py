"""Progress and failure causes read from rsl logs, including logs of real WRF runs."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from wrfbatch.states import JobState
from wrfbatch.wrflogs import classify_failure, classify_log, parse_progress

START = datetime(2000, 1, 24, 12)
END = datetime(2000, 1, 24, 18)


def timing(moment: str, domain: int = 1) -> str:
    return f"Timing for main: time {moment} on domain   {domain}:    0.19059 elapsed seconds"


def test_progress_from_last_domain1_line():
    text = "\n".join([timing("2000-01-24_13:00:00"), timing("2000-01-24_15:00:00"),
                      timing("2000-01-24_15:30:00", domain=2)])
    progress = parse_progress(text, START, END)
    assert progress is not None
    assert progress.model_time == datetime(2000, 1, 24, 15)
    assert progress.percent_complete == 50.0


def test_progress_remaining_time():
    started = datetime(2026, 1, 1, 0, 0, 0)
    progress = parse_progress(timing("2000-01-24_14:00:00"), START, END, stage_started=started,
                              now=started + timedelta(seconds=100))
    assert progress is not None
    assert progress.remaining_time_s == pytest.approx(200.0)


def test_progress_adaptive_time_step_line():
    line = ("Timing for main (dt= 60.00): time 2000-01-24_17:00:00 on domain   1:"
            "    1.00000 elapsed seconds")
    progress = parse_progress(line, START, END)
    assert progress is not None
    assert progress.percent_complete == pytest.approx(83.33)


def test_no_progress_before_first_step():
    assert parse_progress("starting wrf task 0 of 1\n", START, END) is None


REAL_LOG_CAUSES = [
    ("a_unknown_nml_var", "namelist", "physics"),
    ("b_real_time_step", "namelist", "domains"),
    ("c_too_many_tasks_np25", "decomposition", "fewer cores"),
    ("f_missing_wrfinput", "missing_input", "wrfinput_d01"),
]


@pytest.mark.parametrize(("folder", "code", "named"), REAL_LOG_CAUSES)
def test_real_wrf_log_classified(shared_dir: Path, folder: str, code: str, named: str):
    logs = shared_dir / "wrf" / "real-logs" / folder
    text = (logs / "rsl.error.0000").read_text() + (logs / "rsl.out.0000").read_text()
    cause = classify_log(text)
    assert cause is not None
    assert cause.code == code
    assert named in cause.message


def test_real_success_log_has_no_cause(shared_dir: Path):
    text = (shared_dir / "wrf/real-logs/success/rsl.out.0000").read_text()
    assert classify_log(text) is None


def test_real_scancel_classified_cancelled(shared_dir: Path):
    logs = shared_dir / "wrf/real-logs/slurm_scancel"
    cause = classify_failure("wrf", JobState.CANCELLED, None,
                             (logs / "rsl.out.0000").read_text(),
                             (logs / "slurm-5.err").read_text())
    assert cause.code == "cancelled"


def test_cfl_before_segfault():
    text = ("    5 points exceeded cfl=2 in domain d01 at time 2000-01-24_13:00:00 hours\n"
            "Program received signal SIGSEGV: Segmentation fault - invalid memory reference.\n")
    cause = classify_log(text)
    assert cause is not None
    assert cause.code == "cfl"
    assert "time_step" in cause.message


def test_missing_table_named():
    text = "Fortran runtime error: Cannot open file 'ozone_plev.formatted': No such file\n"
    cause = classify_log(text)
    assert cause is not None
    assert cause.code == "missing_runtime_file"
    assert "ozone_plev.formatted" in cause.message


def test_missing_met_em_named():
    text = ("error opening met_em.d01.2019-09-04_18:00:00.nc for input; bad date in namelist "
            "or file not in directory\n")
    cause = classify_log(text)
    assert cause is not None
    assert "met_em.d01.2019-09-04_18:00:00.nc" in cause.message


def test_time_limit_from_job_state():
    cause = classify_failure("wrf", JobState.TIMEOUT, None, "")
    assert cause.code == "time_limit"


def test_time_limit_from_slurm_message():
    err = "slurmstepd: error: *** JOB 7 ON node01 CANCELLED AT 2026-12-04T16:08:14 DUE TO TIME LIMIT ***"
    assert classify_failure("wrf", JobState.FAILED, 1, "", err).code == "time_limit"


def test_no_rsl_files_is_launcher():
    cause = classify_failure("real", JobState.FAILED, 1, "", "", rsl_files_found=False,
                             launcher_command="srun --mpi=pmi2")
    assert cause.code == "launcher"
    assert "srun --mpi=pmi2" in cause.message


def test_unknown_failure_shows_stderr_tail():
    cause = classify_failure("wrf", JobState.FAILED, 7, "no known line", "boom happened")
    assert cause.code == "unknown"
    assert "boom happened" in cause.message
    assert "exit code 7" in cause.message


def test_batch_script_error_named():
    err = "wrfbatch: error: /opt/wrf/main/real.exe is missing or not executable: check the WRF install\n"
    cause = classify_failure("real", JobState.FAILED, 1, "", err, rsl_files_found=False,
                             launcher_command="none")
    assert cause.code == "batch_script"
    assert "real.exe is missing" in cause.message
