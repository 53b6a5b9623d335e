"""Reading WRF's rsl logs: progress of a running stage and the cause of a failed one.

The line formats are those that WRF 3.8.1 to 4.7.1 print (frame/module_integrate.F,
share/module_check_a_mundo.F, share/input_wrf.F, main/real_em.F and the physics
init routines), and those that Slurm, Open MPI, MPICH and gfortran add.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from .models import RunError
from .states import JobState

PROGRESS_LINE = re.compile(
    r"^Timing for main(?: \(dt=\s*[\d.]+\))?: time (\d{4}-\d{2}-\d{2}_\d{2}:\d{2}:\d{2}) "
    r"on domain\s+1:\s+[\d.]+ elapsed seconds",
    re.MULTILINE,
)
SUCCESS_LINES = {
    "real": "SUCCESS COMPLETE REAL_EM INIT",
    "ideal": "SUCCESS COMPLETE IDEAL INIT",
    "wrf": "SUCCESS COMPLETE WRF",
}


@dataclass
class Progress:
    """How far wrf.exe has advanced domain 1's model clock."""

    model_time: datetime
    percent_complete: float
    remaining_time_s: float | None


def parse_progress(
    log_text: str,
    start: datetime,
    end: datetime,
    stage_started: datetime | None = None,
    now: datetime | None = None,
) -> Progress | None:
    """Return progress from the last domain-1 ``Timing for main`` line, or None before the first.

    The remaining time is the wall time per model second so far, applied to
    the model seconds still to go, so it needs the stage's wall-clock start.
    """
    matches = PROGRESS_LINE.findall(log_text)
    if not matches:
        return None
    model_time = datetime.strptime(matches[-1], "%Y-%m-%d_%H:%M:%S")
    total_s = (end - start).total_seconds()
    done_s = min(max((model_time - start).total_seconds(), 0.0), total_s)
    percent = 100.0 * done_s / total_s if total_s > 0 else 100.0
    remaining = None
    if stage_started is not None and done_s > 0:
        now = now or datetime.now(stage_started.tzinfo)
        wall_s = max((now - stage_started).total_seconds(), 0.0)
        remaining = wall_s / done_s * (total_s - done_s)
    return Progress(model_time, round(percent, 2), remaining)


@dataclass(frozen=True)
class _Cause:
    code: str
    pattern: re.Pattern[str]
    hint: str


def _cause(code: str, pattern: str, hint: str) -> _Cause:
    return _Cause(code, re.compile(pattern, re.MULTILINE), hint)


# Checked in this order: the first match names the cause. Causes that explain
# later symptoms (a CFL blow-up before a segfault) come before the symptoms.
_LOG_CAUSES: tuple[_Cause, ...] = (
    _cause("namelist", r"ERROR while reading namelist (\w+)",
           "WRF could not read the &{0} group of namelist.input: a variable there is unknown to "
           "this WRF version, has the wrong type, or has too many values. Fix it and set up again."),
    _cause("namelist", r"ERROR reading namelist (\w+)",
           "WRF could not read the &{0} group of namelist.input (a value of the wrong type, "
           "such as a real number for an integer, or a missing group). Fix it and set up again."),
    _cause("namelist", r"ERROR OPENING namelist\.input",
           "WRF could not open namelist.input in the run directory; upload it and set up again."),
    _cause("namelist", r"Unrecognized physics suite",
           "physics_suite must be 'CONUS', 'tropical' or 'none'."),
    _cause("namelist", r"--- ERROR: Time step too large",
           "time_step in seconds must not exceed 6 times dx in km on domain 1; reduce time_step "
           "or turn on use_adaptive_time_step."),
    _cause("decomposition",
           r"the domain size is too small for this many processors|"
           r"Minimum decomposed computational patch size|Reduce the MPI rank count|"
           r"WRF_DM_INITIALIZE \(RSL_LITE\): nproc_x \* nproc_y in namelist ne",
           "too many MPI tasks for the grid: each task needs at least 10 cells in x and y. "
           "Start again with fewer cores (setup lists the valid counts)."),
    _cause("missing_input",
           r"error opening (met_em\S+) for input; bad date in namelist or file not in directory",
           "real.exe did not find {0}: upload the met_em files for every time from start to end "
           "every interval_seconds, then set up again."),
    _cause("missing_input", r"program wrf: error opening (\S+) for reading",
           "wrf.exe did not find {0}; it is written by real.exe (or must be uploaded for a "
           "restart). Check the real stage's logs."),
    _cause("missing_input", r"med_latbound_in: error opening (\S+) for reading",
           "wrf.exe did not find the boundary file {0}; check the real stage's logs."),
    _cause("missing_input", r"Possibly missing file for = (\S+)",
           "an auxiliary input file for {0} is missing (for example wrflowinp_d01 with "
           "sst_update = 1)."),
    _cause("input_mismatch",
           r"input_wrf\.F: SIZE MISMATCH|Mismatch between namelist and input file dimensions",
           "the namelist's e_we, e_sn or num_metgrid_levels do not match the met_em files; set "
           "them to the files' WEST-EAST_GRID_DIMENSION, SOUTH-NORTH_GRID_DIMENSION and "
           "BOTTOM-TOP_GRID_DIMENSION."),
    _cause("input_mismatch",
           r"Mismatch between namelist and (?:global attribute|wrf input files for dimension) "
           r"(\w+)",
           "the namelist disagrees with the input files on {0}; set it to the files' value."),
    _cause("input_mismatch", r"DX and DY do not match comparing namelist to the input file",
           "dx and dy in the namelist differ from the met_em files' DX and DY."),
    _cause("input_mismatch", r"Land Use Dataset '(\S+)' not found in VEGPARM\.TBL",
           "the land-use data set {0} of the input files is not in VEGPARM.TBL."),
    _cause("input_mismatch",
           r"The input file appears to be from a pre-v4 version of WRF initialization routines",
           "wrf.exe read an input file made by real.exe of WRF 3.x, or an auxiliary input file "
           "(wrflowinp_d01 with sst_update = 1, wrffdda) is missing: WRF before 4.1.1 prints "
           "this message for both. Run the real stage of this version again and check that the "
           "auxiliary files exist."),
    _cause("input_mismatch", r"NOTE:\s+(\d+) namelist vs input data inconsistencies found",
           "real.exe found {0} disagreement(s) between the namelist and the met_em files (see "
           "the '---- ERROR' lines before it); set e_we, e_sn, num_metgrid_levels, "
           "num_metgrid_soil_levels, dx and num_land_cat to the files' values."),
    _cause("namelist", r"Ending date in namelist (\S+) prior to beginning date",
           "the end date {0} is before the start date; fix &time_control."),
    _cause("namelist", r"Make the end time at least one 'interval_seconds' beyond the start time",
           "the run must end at least one interval_seconds after it starts."),
    _cause("missing_runtime_file",
           r"LANDUSE_INIT: open failure for (LANDUSE\.TBL)|"
           r"soil_veg_gen_parm: failure opening (\w+\.TBL)|"
           r"error opening (RRTMG?_(?:LW_|SW_)?DATA)|"
           r"Error opening (URBPARM(?:_LCZ)?\.TBL)|"
           r"'(CAMtr_volume_mixing_ratio)' does not exist|"
           r"Fortran runtime error: Cannot open file '([^']+)'",
           "the runtime table {0} is missing from the run directory; check that the WRF "
           "install's run/ directory has it."),
    _cause("bad_runtime_file", r"At line \d+ of file \S+ \(unit = \d+, file = '([^']+)'\)",
           "the runtime table {0} could not be read (truncated, or built for another byte "
           "order); check the WRF install's run/ directory."),
    _cause("lbc",
           r"(?:---- ERROR: Ran out of|\.\.\. May have run out of) valid boundary conditions "
           r"in file (\S+)",
           "the forecast runs past the boundary conditions in {0}: make run_* and end_* agree, "
           "or extend the met_em window."),
    _cause("lbc", r"Cannot find a valid time to start the LBC during this restart",
           "the restart time is not covered by wrfbdy_d01: run the real stage for a window that "
           "contains the restart time, then restart again."),
    _cause("cfl", r"points exceeded (?:cfl=2|w_critical_cfl|w_flag_cfl|v_cfl = 2)",
           "numerical instability (CFL violations before the crash): reduce time_step (about "
           "6 x dx in km or less), or set w_damping = 1, then restart from the last restart file."),
    _cause("crash",
           r"Program received signal SIGSEGV|forrtl: severe \(174\): SIGSEGV|"
           r"BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES",
           "the model crashed with a segmentation fault; common causes are an unstable time "
           "step, too little stack (ulimit -s), or too little memory per task."),
    _cause("oom", r"Detected \d+ oom[-_]kill event",
           "the job ran out of memory: use more cores (less memory per task) or ask for more "
           "memory."),
)

# Lines that only report that something went wrong. They are checked after every specific
# cause, the generic '--- ERROR' lines and the message of a fatal block.
_LATE_CAUSES: tuple[_Cause, ...] = (
    _cause("namelist",
           r"^-- (?:Are|Is) (.*) still in your \w+ namelist\?|"
           r"^Maybe here\?:\s+(.*)$|ERRORS while reading one or more namelists",
           "WRF could not read namelist.input ({0}): a variable there is unknown to this WRF "
           "version, removed (pd_moist, pd_scalar, pd_chem and pd_tke became moist_adv_opt, "
           "scalar_adv_opt, chem_adv_opt and tke_adv_opt), or has a wrong type or too many "
           "values. Fix it and set up again."),
    _cause("namelist", r"NOTE:\s+(\d+) namelist settings are wrong",
           "WRF found {0} inconsistent namelist setting(s); the '--- ERROR' lines in "
           "rsl.error.0000 name them. Fix them and set up again."),
    _cause("time_limit",
           r"\*\*\* (?:JOB|STEP) (\S+) ON \S+ CANCELLED AT \S+ DUE TO TIME LIMIT \*\*\*",
           "Slurm stopped job {0} at its time limit; start again with more cores or ask the "
           "site for a longer maximum walltime."),
    _cause("cancelled",
           r"\*\*\* (?:JOB|STEP) (\S+) ON \S+ CANCELLED AT \S+"
           r"(?: DUE TO (?!TIME LIMIT)[A-Z ]+)? \*\*\*",
           "Slurm cancelled job {0} (scancel by a user or an administrator, preemption or a "
           "node failure); start the run again."),
    _cause("mpi",
           r"MPI_ABORT was invoked on rank (\d+)|application called MPI_Abort\(MPI_COMM_WORLD, "
           r"\d+\) - process (\d+)",
           "rank {0} ended the MPI job after an error; its cause is in that rank's "
           "rsl.error file (rsl.error.0000 holds rank 0)."),
    _cause("fatal", r"-------------- FATAL CALLED ---------------|FATAL CALLED FROM FILE:",
           "WRF stopped with a fatal error; the message follows the 'FATAL CALLED' line in "
           "rsl.error.0000."),
)

_FATAL_MESSAGE = re.compile(
    r"FATAL CALLED FROM FILE:\s+\S+\s+LINE:\s+\d+\n(.+)", re.MULTILINE
)
# The batch scripts print this before they stop on a problem of their own (a missing
# program, a missing input of the wrf stage).
_BATCH_SCRIPT_ERROR = re.compile(r"^wrfbatch: error: (.+)$", re.MULTILINE)
_CHECK_ERRORS = re.compile(r"^(?:d\d\d \S+ )?\s*--- ERROR: (.*)$", re.MULTILINE)


def _first_group(match: re.Match[str]) -> str:
    return next((g for g in match.groups() if g), match.group(0))


def classify_log(text: str) -> RunError | None:
    """Return the cause found in rsl log text, or None when no known failure line is there."""
    found = _first_cause(_LOG_CAUSES, text)
    if found is not None:
        return found
    check_errors = _CHECK_ERRORS.findall(text)
    if check_errors:
        details = "; ".join(line.strip() for line in check_errors[:5])
        return RunError(code="namelist", message=f"WRF rejected namelist settings: {details}")
    fatal = _FATAL_MESSAGE.search(text)
    if fatal and not fatal.group(1).startswith("---"):
        return RunError(code="fatal", message=f"WRF stopped: {fatal.group(1).strip()}")
    return _first_cause(_LATE_CAUSES, text)


def _first_cause(causes: tuple[_Cause, ...], text: str) -> RunError | None:
    for cause in causes:
        match = cause.pattern.search(text)
        if match:
            return RunError(code=cause.code, message=cause.hint.format(_first_group(match)))
    return None


def classify_failure(
    stage: str,
    job_state: JobState | None,
    exit_code: int | None,
    log_text: str,
    job_stderr: str = "",
    rsl_files_found: bool = True,
    launcher_command: str = "",
) -> RunError:
    """Name the cause of a failed stage from its job state, exit code and logs."""
    if job_state == JobState.TIMEOUT or "DUE TO TIME LIMIT" in job_stderr:
        return RunError(code="time_limit", message=(
            f"the {stage} stage reached its time limit; start again with more cores or ask "
            "the site for a longer maximum walltime."))
    if job_state == JobState.OUT_OF_MEMORY:
        return RunError(code="oom", message=(
            f"the {stage} stage ran out of memory; use more cores (less memory per task)."))
    if job_state == JobState.CANCELLED:
        return RunError(code="cancelled", message=f"the {stage} job was cancelled outside wrfbatch")
    found = classify_log(log_text + "\n" + job_stderr)
    script_error = _BATCH_SCRIPT_ERROR.search(job_stderr)
    if found is None and script_error is not None:
        found = RunError(code="batch_script", message=script_error.group(1).strip())
    if found is not None:
        found.message = f"{stage} stage failed: {found.message}"
        return found
    if not rsl_files_found:
        return RunError(code="launcher", message=(
            f"the {stage} stage wrote no rsl files, so the launcher never started the model"
            f"{f' ({launcher_command})' if launcher_command else ''}; check the cluster's "
            "launcher settings (MPI plugin, srun or mpirun) and the job's error output."))
    tail = "\n".join(line for line in job_stderr.strip().splitlines()[-3:])
    return RunError(code="unknown", message=(
        f"the {stage} stage failed with exit code {exit_code} and no known WRF error line"
        f"{'; job error output: ' + tail if tail else ''}"))


def stall_age(last_change: datetime, now: datetime, timeout: timedelta) -> bool:
    """Return whether a log that last grew at ``last_change`` counts as stalled at ``now``."""
    return now - last_change > timeout
