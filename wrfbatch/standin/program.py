"""The stand-in WRF programs: real.exe, wrf.exe and ideal.exe as seen from outside.

This module is copied into every stand-in install and runs there without
wrfbatch: it needs only the standard library, numpy, netCDF4, f90nml (copied
into the install) and, under an MPI launcher, mpi4py. Do not import wrfbatch here.

Each program reads ``namelist.input`` in the working directory, checks it the
way WRF does, writes ``rsl.out.NNNN`` and ``rsl.error.NNNN`` per MPI rank with
the lines WRF prints, writes small netCDF outputs and exits 0 on success. On a
failure it prints WRF's fatal-error block and ends the whole MPI job
(MPI_Abort with error code 1, or exit status 1 without MPI).

Faults for tests come from ``standin.json`` in the working directory, updated by
the JSON in ``$WRFBATCH_STANDIN``. Top-level keys apply to every program and a
``"real"``, ``"wrf"`` or ``"ideal"`` object overrides them for that program:

- ``pace_s_per_model_hour`` (float, default 0.5): wall seconds per model hour.
- ``slow_start_s`` (float): extra wall seconds before the first step.
- ``hang``: ``true`` hangs after start-up without further output; a model time
  (``YYYY-MM-DD_HH:MM:SS``, or hours after the start as a number) hangs wrf.exe there.
- ``crash_at`` (model time): wrf.exe dies by SIGSEGV there.
- ``cfl`` (``true`` or a model time): wrf.exe prints growing CFL warnings from
  that time (``true``: from the first step), then dies by SIGSEGV.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import f90nml
import netCDF4
import numpy as np

NAMELIST = "namelist.input"
FAULTS_FILE = "standin.json"
FAULTS_ENV = "WRFBATCH_STANDIN"
DEFAULT_PACE_S_PER_MODEL_HOUR = 0.5
MAX_PRINTED_STEPS = 3000
MIN_PATCH_CELLS = 10
CFL_WARNING_STEPS = 6
NETCDF_WARN = -1021
# Source lines that WRF 4.3.3 (gfortran build) reports for its fatal calls. Other builds
# report other numbers.
LINE_NAMELIST = 11164
LINE_QUILT = 6406
LINE_CHECK_A_MUNDO = 2573
LINE_OPEN_INPUT = 70
LINE_REAL = 1030
LINE_INPUT_WRF = 1202
LINE_PHYSICS = 3260
LINE_LATBOUND = 2117
# Physics options that physics_suite fills in where an option is -1 (WRF 3.9+).
PHYSICS_SUITES = {
    "conus": {"mp_physics": 8, "cu_physics": 6, "ra_lw_physics": 4, "ra_sw_physics": 4,
              "bl_pbl_physics": 2, "sf_sfclay_physics": 2, "sf_surface_physics": 2},
    "tropical": {"mp_physics": 6, "cu_physics": 16, "ra_lw_physics": 4, "ra_sw_physics": 4,
                 "bl_pbl_physics": 1, "sf_sfclay_physics": 91, "sf_surface_physics": 2},
}


class Stop(Exception):
    """A stop of the program with the lines to print and how it ends."""

    def __init__(self, lines: list[str], how: str = "fatal") -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
        self.how = how  # fatal (WRF fatal block), runtime (gfortran error text) or segv


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


# --------------------------------------------------------------------------- MPI


class Comm:
    """The MPI communicator, or a single rank when no MPI launcher started this process."""

    def __init__(self) -> None:
        self._mpi: Any = None
        self.rank, self.size = 0, 1
        if not _launched_by_mpi():
            return
        try:
            from mpi4py import MPI
        except ImportError:
            sys.stderr.write("standin: started by an MPI launcher but mpi4py is not importable; "
                             "running as a single rank\n")
            return
        self._mpi = MPI
        self.rank, self.size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()

    def bcast(self, value: Any) -> Any:
        return value if self._mpi is None else self._mpi.COMM_WORLD.bcast(value, root=0)

    def max(self, value: float) -> float:
        if self._mpi is None:
            return value
        return self._mpi.COMM_WORLD.allreduce(value, op=self._mpi.MAX)

    def abort(self, code: int) -> NoReturn:
        sys.stdout.flush()
        if self._mpi is not None:
            self._mpi.COMM_WORLD.Abort(code)
        os._exit(code)


def _launched_by_mpi() -> bool:
    env = os.environ
    launcher_keys = ("PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE")
    if any(key in env for key in launcher_keys):
        return True
    return "SLURM_STEP_ID" in env and "SLURM_PROCID" in env


# --------------------------------------------------------------------------- rsl files


class Rsl:
    """The rsl.out.NNNN / rsl.error.NNNN pair of one rank; stderr goes to rsl.error too."""

    def __init__(self, rank: int) -> None:
        out_path, err_path = Path(f"rsl.out.{rank:04d}"), Path(f"rsl.error.{rank:04d}")
        out_path.write_text("")
        err_path.write_text("")
        self._out = out_path.open("a", buffering=1)
        self._err = err_path.open("a", buffering=1)
        sys.stderr.flush()
        os.dup2(self._err.fileno(), 2)

    def out(self, *lines: str) -> None:
        """Write lines as wrf_message does: to rsl.out and rsl.error."""
        for line in lines:
            self._out.write(line + "\n")
            self._err.write(line + "\n")

    def err(self, *lines: str) -> None:
        """Write lines that only stderr receives (rsl.error)."""
        for line in lines:
            self._err.write(line + "\n")


def fatal_block(line_number: int, *message: str) -> list[str]:
    return [
        "-------------- FATAL CALLED ---------------",
        f"FATAL CALLED FROM FILE:  <stdin>  LINE:{line_number:8d}",
        *message,
        "-------------------------------------------",
    ]


def runtime_error(source: str, line_number: int, file_name: str) -> Stop:
    """Build the gfortran runtime error of an OPEN without IOSTAT on a missing file (exit 2)."""
    return Stop([
        f"At line {line_number} of file {source} (unit = 10)",
        f"Fortran runtime error: Cannot open file '{file_name}': No such file or directory",
        "",
        "Error termination. Backtrace:",
        "#0  0x7f2d1c8a3b6f in ???",
        "#1  0x7f2d1c8a4a12 in ???",
    ], how="runtime")


SEGV_TEXT = [
    "",
    "Program received signal SIGSEGV: Segmentation fault - invalid memory reference.",
    "",
    "Backtrace for this error:",
    "#0  0x7f9e3a63bd5f in ???",
    "#1  0x7f9e3a63a3a5 in ???",
    "#2  0x55d1c2f0b4e1 in ???",
]


# --------------------------------------------------------------------------- faults


def load_faults(program: str) -> dict[str, Any]:
    """Merge standin.json and $WRFBATCH_STANDIN, then the program's own section."""
    merged: dict[str, Any] = {}
    sources = []
    if Path(FAULTS_FILE).is_file():
        sources.append(Path(FAULTS_FILE).read_text())
    if os.environ.get(FAULTS_ENV):
        sources.append(os.environ[FAULTS_ENV])
    for text in sources:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"stand-in faults must be a JSON object, got {text[:60]!r}")
        merged.update(data)
    section = merged.get(program)
    if isinstance(section, dict):
        merged.update(section)
    return merged


# --------------------------------------------------------------------------- namelist


@dataclass
class Install:
    """WRF version and namelist schema, as the install tree stores them for the programs."""

    version: str
    schema: dict[str, dict[str, list[Any]]]  # group -> name -> [type code, entries, default]
    array_sizes: dict[str, int]  # entries -> max number of values, e.g. max_domains -> 21

    @property
    def v4(self) -> bool:
        return version_key(self.version) >= (4,)


def load_install(directory: Path) -> Install:
    data = json.loads((directory / "install.json").read_text())
    return Install(version=data["version"], schema=data["schema"],
                   array_sizes=data["array_sizes"])


def _value_count(group: Any, name: str, value: Any) -> int:
    start = group.start_index.get(name, [1])[0] or 1
    length = len(value) if isinstance(value, list) else 1
    return start - 1 + length


def _type_ok(kind: str, value: Any) -> bool:
    if value is None or kind == "c":
        return True
    if kind == "l":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "i":
        return isinstance(value, int)
    return isinstance(value, (int, float))


def first_problem(group: Any, spec: dict[str, list[Any]], sizes: dict[str, int]) -> str | None:
    """Return the first variable of a group that WRF cannot read, or None."""
    for name, value in group.items():
        entry = spec.get(name)
        if entry is None:
            return name
        kind, entries = entry[0], entry[1]
        if _value_count(group, name, value) > sizes.get(entries, 21):
            return name
        values = value if isinstance(value, list) else [value]
        if not all(_type_ok(kind, item) for item in values):
            return name
    return None


def _group_lines(text_lines: list[str], group: str) -> tuple[int, int]:
    """Return the line range of ``&group`` in the file (start index, end index)."""
    start = next(i for i, line in enumerate(text_lines)
                 if line.strip().lower().split("/")[0].split()[:1] == [f"&{group}"])
    for end in range(start, len(text_lines)):
        if text_lines[end].strip().startswith("/") or text_lines[end].rstrip().endswith("/"):
            return start, end
    return start, len(text_lines) - 1


def maybe_here_lines(text_lines: list[str], group: str, name: str) -> list[str]:
    """Build the two 'Maybe here?:' lines of WRF 4.x: the line before the bad one, then it."""
    start, end = _group_lines(text_lines, group)
    for index in range(start, end + 1):
        head = text_lines[index].split("=")[0].strip().lower()
        if head.split("(")[0].strip() == name:
            return [f"Maybe here?:     {text_lines[index - 1]}",
                    f"Maybe here?:     {text_lines[index]}"]
    return []


def parse_namelist() -> Any:
    """Parse namelist.input with f90nml, or return a Stop when it is absent or malformed."""
    path = Path(NAMELIST)
    if not path.is_file():
        return Stop(fatal_block(LINE_NAMELIST, "ERROR OPENING namelist.input"))
    try:
        return f90nml.read(str(path))
    except Exception:  # f90nml raises ValueError, IndexError and others on malformed text
        return Stop(fatal_block(
            LINE_NAMELIST, "ERRORS while reading one or more namelists from namelist.input."))


def read_quilt_groups(install: Install) -> Any:
    """Read &namelist_quilt (required) and &domains as WRF's I/O quilting setup does.

    Returns (nio_groups, nio_tasks_per_group), or a Stop with the short 'ERROR reading
    namelist <group>' message. WRF runs this reader before the main one.
    """
    nml = parse_namelist()
    if isinstance(nml, Stop):
        return nml
    for name in ("namelist_quilt", "domains"):
        group = nml.get(name)
        absent = group is None and name == "namelist_quilt"
        if absent or group is not None and first_problem(group, install.schema[name],
                                                          install.array_sizes):
            return Stop(fatal_block(LINE_QUILT, f"ERROR reading namelist {name}"))
    quilt = nml["namelist_quilt"]
    return int(quilt.get("nio_groups", 1)), int(_first(quilt.get("nio_tasks_per_group", 0)))


def read_namelist(install: Install) -> Any:
    """Read every known group in file order as WRF's main reader does.

    Returns the values with registry defaults filled in, or a Stop.
    """
    nml = parse_namelist()
    if isinstance(nml, Stop):
        return nml
    text_lines = Path(NAMELIST).read_text().splitlines()
    errors = []
    for name, group in nml.items():
        spec = install.schema.get(name)
        if spec is None:
            continue  # WRF ignores groups it does not know
        bad = first_problem(group, spec, install.array_sizes)
        if bad is not None:
            errors.append(f"  ------ ERROR while reading namelist {name} ------")
            if install.v4:
                errors.extend(maybe_here_lines(text_lines, name, bad))
    if errors:
        return Stop(errors + fatal_block(
            LINE_NAMELIST, "ERRORS while reading one or more namelists from namelist.input."))
    return _with_defaults(nml, install)


def _with_defaults(nml: Any, install: Install) -> dict[str, dict[str, Any]]:
    """Return plain dicts of every known group with registry defaults filled in."""
    values: dict[str, dict[str, Any]] = {}
    for group, spec in install.schema.items():
        given = nml.get(group, {})
        merged = {}
        for name, (_kind, entries, default) in spec.items():
            value = given.get(name, default)
            if entries != "1":
                value = _as_list(value, default)
            merged[name] = value
        values[group] = merged
    return values


def _as_list(value: Any, default: Any) -> list[Any]:
    items = list(value) if isinstance(value, list) else [value]
    filled = [default if item is None else item for item in items]
    # Domains without a value keep the registry default.
    return filled + [default] * max(0, 21 - len(filled))


# --------------------------------------------------------------------------- model setup


def wrf_date(moment: datetime) -> str:
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}_"
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}")


def parse_wrf_date(text: str) -> datetime:
    day, _, clock = text.partition("_")
    year, month, mday = (int(part) for part in day.split("-"))
    hour, minute, second = (int(part) for part in clock.split(":"))
    return datetime(year, month, mday, hour, minute, second)


@dataclass
class Model:
    """The namelist settings the programs use, with derived times and names."""

    nml: dict[str, dict[str, Any]]
    version: str

    def tc(self, name: str, domain: int = 1) -> Any:
        value = self.nml["time_control"][name]
        return value[domain - 1] if isinstance(value, list) else value

    def dom(self, name: str, domain: int = 1) -> Any:
        value = self.nml["domains"][name]
        return value[domain - 1] if isinstance(value, list) else value

    @property
    def max_dom(self) -> int:
        return int(self.nml["domains"]["max_dom"])

    def start(self, domain: int = 1) -> datetime:
        return self._moment("start", domain)

    def end(self) -> datetime:
        return self._moment("end", 1)

    def _moment(self, prefix: str, domain: int) -> datetime:
        base = datetime(int(self.tc(f"{prefix}_year", domain)),
                        int(self.tc(f"{prefix}_month", domain)),
                        int(self.tc(f"{prefix}_day", domain)))
        return base + timedelta(hours=int(self.tc(f"{prefix}_hour", domain)),
                                minutes=int(self.tc(f"{prefix}_minute", domain)),
                                seconds=int(self.tc(f"{prefix}_second", domain)))

    def wrf_end(self) -> datetime:
        """End of wrf.exe's run: run_days..run_seconds win over end_* when set."""
        run = timedelta(days=int(self.tc("run_days")), hours=int(self.tc("run_hours")),
                        minutes=int(self.tc("run_minutes")), seconds=int(self.tc("run_seconds")))
        return self.start() + run if run > timedelta(0) else self.end()

    def file_name(self, name: str) -> str:
        return name.replace(":", "_") if self.tc("nocolons") else name

    def met_em(self, domain: int, moment: datetime) -> str:
        return self.file_name(f"met_em.d{domain:02d}.{wrf_date(moment)}.nc")

    def time_step(self) -> float:
        num, den = int(self.dom("time_step_fract_num")), int(self.dom("time_step_fract_den"))
        return float(self.dom("time_step")) + (num / den if den else 0.0)

    def dx(self, domain: int) -> float:
        ratio = 1
        parent = domain
        while parent > 1:
            ratio *= int(self.dom("parent_grid_ratio", parent))
            parent = int(self.dom("parent_id", parent))
        return float(self.dom("dx", 1)) / ratio

    def specified(self) -> bool:
        """Return whether d01 reads lateral boundaries from wrfbdy_d01 (real-data runs)."""
        return bool(_first(self.nml["bdy_control"]["specified"]))

    def input_from_file(self, domain: int) -> bool:
        return domain == 1 or bool(self.tc("input_from_file", domain))


# --------------------------------------------------------------------------- decomposition


def factor_tasks(tasks: int) -> tuple[int, int]:
    """Split a task count into nproc_x * nproc_y, nproc_x <= nproc_y, as square as possible."""
    for nproc_x in range(int(math.isqrt(tasks)), 0, -1):
        if tasks % nproc_x == 0:
            return nproc_x, tasks // nproc_x
    return 1, tasks


def compute_tasks(model: Model, size: int) -> int:
    """Tasks left for computation when quilting reserves I/O servers."""
    quilt = model.nml.get("namelist_quilt", {})
    io_tasks = int(quilt.get("nio_groups", 1)) * int(_first(quilt.get("nio_tasks_per_group", 0)))
    return size - io_tasks if 0 < io_tasks < size else size


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value


def decomposition_errors(model: Model, nproc_x: int, nproc_y: int) -> list[str]:
    """Build the 4.x check_a_mundo lines for domains with patches under 10 cells, or []."""
    lines: list[str] = []
    for domain in range(1, model.max_dom + 1):
        e_we, e_sn = int(model.dom("e_we", domain)), int(model.dom("e_sn", domain))
        if e_we // nproc_x >= MIN_PATCH_CELLS and e_sn // nproc_y >= MIN_PATCH_CELLS:
            continue
        lines += [
            f"   For domain {domain:12d} , the domain size is too small for this many "
            "processors, or the decomposition aspect ratio is poor.",
            "   Minimum decomposed computational patch size, either x-dir or y-dir, "
            "is 10 grid cells.",
            f"  e_we = {e_we:5d}, nproc_x = {nproc_x:4d}, with cell width in x-direction = "
            f"{e_we // nproc_x:4d}",
            f"  e_sn = {e_sn:5d}, nproc_y = {nproc_y:4d}, with cell width in y-direction = "
            f"{e_sn // nproc_y:4d}",
            "  --- ERROR: Reduce the MPI rank count, or redistribute the tasks.",
        ]
    return lines


def patch_range(points: int, parts: int, index: int) -> tuple[int, int]:
    """Start and end index of one patch: mass points split evenly, the last one staggered."""
    cells = points - 1
    base, extra = divmod(cells, parts)
    start = 1 + index * base + min(index, extra)
    end = start + base - 1 + (1 if index < extra else 0)
    return start, points if index == parts - 1 else end


def memory_range(start: int, end: int, first: int, last: int) -> tuple[int, int]:
    """Memory bounds: 5 halo cells at the domain edge, 7 inside it."""
    return start - (5 if start == first else 7), end + (5 if end == last else 7)


def domain_block(model: Model, domain: int, rank: int, nproc_x: int, nproc_y: int) -> list[str]:
    e_we, e_sn = int(model.dom("e_we", domain)), int(model.dom("e_sn", domain))
    ips, ipe = patch_range(e_we, nproc_x, rank % nproc_x)
    jps, jpe = patch_range(e_sn, nproc_y, (rank // nproc_x) % nproc_y)
    ims, ime = memory_range(ips, ipe, 1, e_we)
    jms, jme = memory_range(jps, jpe, 1, e_sn)
    name = "Parent domain" if domain == 1 else f"Nest domain {domain}"
    return [
        " *************************************",
        f" {name}",
        f" ids,ide,jds,jde {1:12d}{e_we:12d}{1:12d}{e_sn:12d}",
        f" ims,ime,jms,jme {ims:12d}{ime:12d}{jms:12d}{jme:12d}",
        f" ips,ipe,jps,jpe {ips:12d}{ipe:12d}{jps:12d}{jpe:12d}",
        " *************************************",
        "DYNAMICS OPTION: Eulerian Mass Coordinate",
        f"   alloc_space_field: domain {domain:12d} , "
        f"{(ime - ims + 1) * (jme - jms + 1) * int(model.dom('e_vert', domain)) * 380:21d}"
        "  bytes allocated",
    ]


# --------------------------------------------------------------------------- physics tables


def physics_option(model: Model, name: str, domain: int) -> int:
    value = int(model.nml["physics"][name][domain - 1])
    suite = str(model.nml["physics"].get("physics_suite", "none")).strip().lower()
    if value == -1 and suite in PHYSICS_SUITES:
        return PHYSICS_SUITES[suite].get(name, value)
    return value


def missing_table(model: Model) -> Stop | None:
    """Return the Stop for the first physics table missing from the working directory."""
    def gone(name: str) -> bool:
        return not Path(name).exists()

    physics = model.nml["physics"]
    domains = range(1, model.max_dom + 1)
    if gone("LANDUSE.TBL"):
        return Stop(fatal_block(LINE_PHYSICS, "module_physics_init.F: LANDUSE_INIT: "
                                "open failure for LANDUSE.TBL"))
    options = {name: {physics_option(model, name, d) for d in domains}
               for name in ("ra_lw_physics", "ra_sw_physics", "sf_surface_physics",
                            "mp_physics")}
    checks = _radiation_checks(options, physics) + _surface_checks(options, physics)
    for name, stop in checks:
        if gone(name):
            return stop(name)
    return None


def _fatal_unit(message: str) -> Any:
    return lambda name: Stop(fatal_block(LINE_PHYSICS, message.format(name=name)))


def _radiation_checks(options: dict[str, set[int]], physics: dict[str, Any]) -> list[Any]:
    checks: list[Any] = []
    if 1 in options["ra_lw_physics"]:
        checks.append(("RRTM_DATA", _fatal_unit("module_ra_rrtm: error opening {name} on unit"
                                                "          10")))
    rrtmg = 4 in options["ra_lw_physics"] or 4 in options["ra_sw_physics"]
    if 4 in options["ra_lw_physics"]:
        checks.append(("RRTMG_LW_DATA", _fatal_unit(
            "module_ra_rrtmg_lw: error opening {name} on unit          10")))
    if 4 in options["ra_sw_physics"]:
        checks.append(("RRTMG_SW_DATA", _fatal_unit(
            "module_ra_rrtmg_sw: error opening {name} on unit          10")))
    if rrtmg or 3 in options["ra_lw_physics"]:
        if int(_first(physics.get("o3input", 2))) == 2 or 3 in options["ra_lw_physics"]:
            for name in ("ozone.formatted", "ozone_lat.formatted", "ozone_plev.formatted"):
                checks.append((name, lambda n: runtime_error("module_ra_cam_support.f90",
                                                             1879, n)))
        if int(_first(physics.get("aer_opt", 0))) == 1:
            for name in ("aerosol.formatted", "aerosol_lat.formatted", "aerosol_lon.formatted",
                         "aerosol_plev.formatted"):
                checks.append((name, lambda n: runtime_error("module_ra_rrtmg_sw.f90", 9817, n)))
        if int(_first(physics.get("ghg_input", 0))) == 1:
            checks.append(("CAMtr_volume_mixing_ratio", lambda n: Stop(fatal_block(
                LINE_PHYSICS, f"CLWRF: '{n}' does not exist"))))
    return checks


def _surface_checks(options: dict[str, set[int]], physics: dict[str, Any]) -> list[Any]:
    checks: list[Any] = []
    if options["sf_surface_physics"] & {2, 4}:
        names = ("VEGPARM.TBL", "SOILPARM.TBL", "GENPARM.TBL")
        checks += [(name, _fatal_unit("module_sf_noahlsm.F: soil_veg_gen_parm: failure "
                                      "opening {name}")) for name in names]
    if 4 in options["sf_surface_physics"]:
        checks.append(("MPTABLE.TBL", lambda n: runtime_error("module_sf_noahmplsm.f90",
                                                              1040, n)))
    if int(max(_as_list(physics.get("sf_urban_physics", 0), 0))) > 0:
        checks.append(("URBPARM.TBL", _fatal_unit("Error opening {name}")))
    if options["mp_physics"] & {8, 28}:
        checks.append(("CCN_ACTIVATE.BIN", lambda n: runtime_error("module_mp_thompson.f90",
                                                                   3943, n)))
    return checks


# --------------------------------------------------------------------------- netCDF outputs


def write_wrf_file(path: Path, title: str, model: Model, domain: int,
                   times: list[datetime], extra_dims: dict[str, int] | None = None) -> None:
    """Write a small WRF-style netCDF file: dimensions, Times and a few 2-D fields."""
    e_we, e_sn = int(model.dom("e_we", domain)), int(model.dom("e_sn", domain))
    dims = {"DateStrLen": 19, "west_east": e_we - 1, "south_north": e_sn - 1,
            "bottom_top": int(model.dom("e_vert", domain)) - 1,
            "west_east_stag": e_we, "south_north_stag": e_sn,
            "bottom_top_stag": int(model.dom("e_vert", domain)), **(extra_dims or {})}
    with netCDF4.Dataset(path, "w", format="NETCDF4") as data:
        data.createDimension("Time", None)
        for name, size in dims.items():
            data.createDimension(name, size)
        times_var = data.createVariable("Times", "S1", ("Time", "DateStrLen"))
        for index, moment in enumerate(times):
            times_var[index, :] = netCDF4.stringtochar(np.array([wrf_date(moment)], "S19"))
        for name in ("XLAT", "XLONG", "T2", "PSFC"):
            var = data.createVariable(name, "f4", ("Time", "south_north", "west_east"),
                                      zlib=True, complevel=1)
            var.MemoryOrder = "XY "
            var[0:len(times), :, :] = np.zeros((len(times), e_sn - 1, e_we - 1), "f4")
        _set_globals(data, title, model, domain, times[0] if times else model.start(domain))


def _set_globals(data: Any, title: str, model: Model, domain: int, start: datetime) -> None:
    data.setncattr("TITLE", f" OUTPUT FROM {title}")
    data.setncattr("START_DATE", wrf_date(model.start(domain)))
    data.setncattr("SIMULATION_START_DATE", wrf_date(start))
    for name, key in (("WEST-EAST_GRID_DIMENSION", "e_we"), ("SOUTH-NORTH_GRID_DIMENSION", "e_sn"),
                      ("BOTTOM-TOP_GRID_DIMENSION", "e_vert")):
        data.setncattr(name, np.int32(model.dom(key, domain)))
    data.setncattr("DX", np.float32(model.dx(domain)))
    data.setncattr("DY", np.float32(model.dx(domain)))
    data.setncattr("GRID_ID", np.int32(domain))
    data.setncattr("PARENT_ID", np.int32(model.dom("parent_id", domain)))


# --------------------------------------------------------------------------- the programs


class Program:
    """Base of the stand-in programs: ranks, rsl files, namelist, faults and stops."""

    name = "wrf"
    title = "MODEL"

    def __init__(self, install: Install) -> None:
        self.install = install
        self.comm = Comm()
        self.faults = load_faults(self.name)
        sys.stdout.write(f" starting wrf task {self.comm.rank:12d}  of {self.comm.size:12d}\n")
        sys.stdout.flush()
        self.rsl = Rsl(self.comm.rank)
        self.model: Model | None = None
        self.nproc = (1, self.comm.size)

    @property
    def rank0(self) -> bool:
        return self.comm.rank == 0

    def run(self) -> int:
        try:
            self.start_up()
            self.body()
        except Stop as stop:
            self.stop(stop)
        return 0

    def stop(self, stop: Stop) -> NoReturn:
        if stop.how == "runtime":
            # A gfortran runtime error ends this rank with status 2 and no MPI_Abort.
            self.rsl.err(*stop.lines)
            os._exit(2)
        if stop.how == "segv":
            self.segfault()
        self.rsl.out(*stop.lines)
        self.comm.abort(1)

    def segfault(self) -> NoReturn:
        """Print gfortran's SIGSEGV text and die by SIGSEGV without leaving a core file."""
        self.rsl.err(*SEGV_TEXT)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)
        os._exit(139)

    def rank0_check(self, check: Any) -> Any:
        """Run a check on rank 0 and share its result; a stop there ends the job."""
        result = check() if self.rank0 else None
        if self.rank0 and isinstance(result, Stop):
            self.stop(result)
        return self.comm.bcast(result)

    def start_up(self) -> None:
        self.rsl.out(f"taskid: {self.comm.rank} hostname: {socket.gethostname()}")
        self.rsl.err(" module_io_quilt_old.F        2931 F")
        nio_groups, nio_tasks = self.rank0_check(lambda: read_quilt_groups(self.install))
        self.rsl.out(f"Quilting with {nio_groups:3d} groups of {nio_tasks:3d} I/O tasks.")
        values = self.rank0_check(lambda: read_namelist(self.install))
        self.model = Model(values, self.install.version)
        if self.faults.get("hang") is True:
            self.hang()
        self.decompose()

    def decompose(self) -> None:
        model = self.model
        assert model is not None
        self.nproc = factor_tasks(compute_tasks(model, self.comm.size))
        self.rsl.out(f" Ntasks in X {self.nproc[0]:12d} , ntasks in Y {self.nproc[1]:12d}")
        self.rsl.out(f"  Domain #{1:2d}: dx = {model.dx(1):9.3f} m")
        if self.install.v4:
            errors = decomposition_errors(model, *self.nproc)
            if errors:
                raise Stop(errors + fatal_block(
                    LINE_CHECK_A_MUNDO, f"NOTE: {len(errors) // 5:7d} namelist settings are "
                    "wrong. Please check and reset these options"))

    def banner(self, kind: str) -> None:
        self.rsl.out(f"{kind} V{self.install.version} {self.title}")
        if self.install.v4:
            self.rsl.out("No git found or not a git repository, git commit version not available.")

    def hang(self) -> NoReturn:
        """Stop printing and wait until a signal ends the process."""
        while True:
            signal.pause()

    def slow_start(self) -> None:
        delay = float(self.faults.get("slow_start_s", 0) or 0)
        if delay > 0:
            time.sleep(delay)

    def pace(self) -> float:
        return float(self.faults.get("pace_s_per_model_hour", DEFAULT_PACE_S_PER_MODEL_HOUR))

    def fault_time(self, key: str, start: datetime) -> datetime | None:
        value = self.faults.get(key)
        if value is None or value is False:
            return None
        if value is True:
            return start
        if isinstance(value, (int, float)):
            return start + timedelta(hours=float(value))
        return parse_wrf_date(str(value))

    def body(self) -> None:
        raise NotImplementedError


class Real(Program):
    """real.exe: checks met_em files, writes wrfinput_d0N and wrfbdy_d01."""

    name = "real"
    title = "PREPROCESSOR"

    def body(self) -> None:
        model = self.model
        assert model is not None
        self.banner("REAL_EM")
        self.rsl.out(*domain_block(model, 1, self.comm.rank, *self.nproc))
        self.slow_start()
        start, end = model.start(), model.end()
        interval = timedelta(seconds=int(model.tc("interval_seconds")))
        if end < start:
            raise Stop(fatal_block(LINE_REAL, f"Ending date in namelist {wrf_date(end)} prior "
                                   f"to beginning date {wrf_date(start)}"))
        times = [start + k * interval for k in range(int((end - start) / interval) + 1)]
        for index, moment in enumerate(times, start=1):
            self.process(1, moment, index, len(times))
        for domain in range(2, model.max_dom + 1):
            if model.input_from_file(domain):
                self.process(domain, model.start(domain), 1, 1)
        if self.rank0:
            self.write_outputs(times)
        self.comm.max(0.0)
        self.rsl.out(f"d01 {wrf_date(end)} real_em: SUCCESS COMPLETE REAL_EM INIT")

    def process(self, domain: int, moment: datetime, index: int, count: int) -> None:
        began = time.monotonic()
        self.rsl.out(f"Domain{domain:3d}: Current date being processed: {wrf_date(moment)}.0000,"
                     f" which is loop #{index:4d} out of {count:4d}")
        result = self.rank0_read_header(domain, moment, first=index == 1)
        if result:
            raise Stop(result)
        time.sleep(min(0.05, self.pace() * 0.02))
        seconds = int(self.comm.max(time.monotonic() - began))
        for step in ("input", "processing", "output"):
            self.rsl.out(f"Timing for {step} {0:10d} s.")
        self.rsl.out(f"Timing for loop # {index:4d} = {seconds:10d} s.")

    def rank0_read_header(self, domain: int, moment: datetime, first: bool) -> list[str]:
        model = self.model
        assert model is not None
        lines: list[str] = []
        if self.rank0:
            lines = met_em_problems(model, domain, moment, first)
        return self.comm.bcast(lines)

    def write_outputs(self, times: list[datetime]) -> None:
        model = self.model
        assert model is not None
        title = f"REAL_EM V{self.install.version} PREPROCESSOR"
        for domain in range(1, model.max_dom + 1):
            if model.input_from_file(domain):
                write_wrf_file(Path(f"wrfinput_d{domain:02d}"), title, model, domain,
                               [model.start(domain)])
        width = int(_first(model.nml["bdy_control"]["spec_bdy_width"]))
        write_wrf_file(Path("wrfbdy_d01"), title, model, 1, times[:-1] or times[:1],
                       {"bdy_width": width})


def met_em_problems(model: Model, domain: int, moment: datetime, first: bool) -> list[str]:
    """Build the lines real.exe prints for a missing or mismatched met_em file, or []."""
    name = model.met_em(domain, moment)
    if not Path(name).is_file():
        return fatal_block(LINE_REAL, f"error opening {name} for input; bad date in namelist "
                           "or file not in directory")
    with netCDF4.Dataset(name) as data:
        attrs = {key: data.getncattr(key) for key in data.ncattrs()}
        times = [str(text) for text in netCDF4.chartostring(data.variables["Times"][:])] \
            if "Times" in data.variables else []
    problems = header_mismatches(model, domain, attrs, first)
    if wrf_date(moment) not in times:
        problems.append(["---- ERROR: Could not find matching time in input file "
                         f"{name}"])
    if not problems:
        return []
    if version_key(model.version) < (3, 9):
        return fatal_block(LINE_INPUT_WRF, *problems[0])
    lines = [line for problem in problems for line in problem]
    return lines + fatal_block(LINE_INPUT_WRF, f"NOTE: {len(problems):7d} namelist vs input "
                               "data inconsistencies found.")


def header_mismatches(model: Model, domain: int, attrs: dict[str, Any],
                      first: bool) -> list[list[str]]:
    """Compare e_we, e_sn, num_metgrid_levels and soil levels with the file's attributes."""
    expected = [("e_we", int(model.dom("e_we", domain)), "WEST-EAST_GRID_DIMENSION"),
                ("e_sn", int(model.dom("e_sn", domain)), "SOUTH-NORTH_GRID_DIMENSION"),
                ("num_metgrid_levels", int(model.dom("num_metgrid_levels")),
                 "BOTTOM-TOP_GRID_DIMENSION")]
    found = [(key, value, attr, int(attrs.get(attr, -1))) for key, value, attr in expected]
    problems: list[list[str]] = []
    if any(value != actual for _, value, _, actual in found):
        problems.append(size_mismatch_lines(model.version, found))
    soil = int(model.dom("num_metgrid_soil_levels"))
    actual_soil = int(attrs.get("NUM_METGRID_SOIL_LEVELS", -1))
    if first and (soil != actual_soil or soil == 1):
        problems.append(["---- ERROR: Mismatch between namelist and global attribute "
                         "NUM_METGRID_SOIL_LEVELS"])
    return problems


def size_mismatch_lines(version: str, found: list[tuple[str, int, str, int]]) -> list[str]:
    if version_key(version) >= (4, 1):
        lines = []
        for key, value, attr, actual in found:
            if value != actual:
                lines += [f"input_wrf.F: SIZE MISMATCH:  namelist {key} = {value}",
                          f"input_wrf.F: SIZE MISMATCH:  input file {attr} = {actual}"]
    else:
        lines = ["input_wrf.F: SIZE MISMATCH:  namelist   ide,jde,num_metgrid_levels="
                 + "".join(f"{value:12d}" for _, value, _, _ in found),
                 "input_wrf.F: SIZE MISMATCH:  input file ide,jde,num_metgrid_levels="
                 + "".join(f"{actual:12d}" for _, _, _, actual in found)]
    if version_key(version) >= (3, 9):
        lines.append("---- ERROR: Mismatch between namelist and input file dimensions")
    return lines


class Ideal(Program):
    """ideal.exe: reads input_sounding and writes wrfinput_d01."""

    name = "ideal"
    title = "PREPROCESSOR"

    def body(self) -> None:
        model = self.model
        assert model is not None
        self.banner("IDEAL")
        self.rsl.out(*domain_block(model, 1, self.comm.rank, *self.nproc))
        self.slow_start()
        self.rank0_check(self.missing_sounding)
        if self.rank0:
            title = f"IDEAL V{self.install.version} PREPROCESSOR"
            write_wrf_file(Path("wrfinput_d01"), title, model, 1, [model.start()])
        self.comm.max(0.0)
        self.rsl.out("  wrf: SUCCESS COMPLETE IDEAL INIT")

    @staticmethod
    def missing_sounding() -> Stop | None:
        if Path("input_sounding").is_file():
            return None
        return runtime_error("module_initialize_ideal.f90", 1960, "input_sounding")


class Wrf(Program):
    """wrf.exe: reads wrfinput/wrfbdy (or restart files) and advances the model clock."""

    name = "wrf"
    title = "MODEL"

    def body(self) -> None:
        model = self.model
        assert model is not None
        self.banner("WRF")
        self.rsl.out(*domain_block(model, 1, self.comm.rank, *self.nproc))
        restart = bool(model.tc("restart"))
        self.read_initial(1, restart)
        self.rank0_check(lambda: missing_table(model))
        if model.specified() and not Path("wrfbdy_d01").is_file():
            raise Stop(fatal_block(LINE_LATBOUND, "med_latbound_in: error opening wrfbdy_d01 "
                                   f"for reading. IERR = {NETCDF_WARN:8d}"))
        if not self.install.v4 and decomposition_errors(model, *self.nproc):
            # WRF 3.x has no patch-size check: patches this small crash in the halo exchange.
            raise Stop([], how="segv")
        for domain in range(2, model.max_dom + 1):
            self.rsl.out(f"  Domain #{domain:2d}: dx = {model.dx(domain):9.3f} m")
            self.rsl.out(*domain_block(model, domain, self.comm.rank, *self.nproc))
            self.read_initial(domain, restart)
        self.slow_start()
        Integration(self, model, restart).run()
        self.rsl.out(f"d01 {wrf_date(model.wrf_end())} wrf: SUCCESS COMPLETE WRF")

    def read_initial(self, domain: int, restart: bool) -> None:
        model = self.model
        assert model is not None
        start = model.start(domain)
        if restart:
            name = model.file_name(f"wrfrst_d{domain:02d}_{wrf_date(start)}")
            if not Path(name).is_file():
                raise Stop(fatal_block(LINE_OPEN_INPUT,
                                       f" program wrf: error opening {name} for reading"))
            self.rsl.out(f"Timing for processing restart file for domain {domain:8d}: "
                         f"{0.1:10.5f} elapsed seconds")
            return
        if not model.input_from_file(domain):
            return
        name = f"wrfinput_d{domain:02d}"
        if not Path(name).is_file():
            raise Stop(fatal_block(LINE_OPEN_INPUT, f" program wrf: error opening {name} for "
                                   f"reading ierr= {NETCDF_WARN:11d}"))
        self.rsl.out("  med_initialdata_input: calling input_input",
                     "   Input data is acceptable to use:" + (f" {name}" if self.rank0 else ""),
                     f" CURRENT DATE          = {wrf_date(start)}",
                     f" SIMULATION START DATE = {wrf_date(start)}")
        if self.rank0:
            self.rsl.out(f"Timing for processing wrfinput file (stream 0) for domain "
                         f"{domain:8d}: {0.1:10.5f} elapsed seconds")


class Integration:
    """The time loop of wrf.exe: progress lines, outputs, pace and faults."""

    def __init__(self, program: Wrf, model: Model, restart: bool) -> None:
        self.program, self.model, self.restart = program, model, restart
        self.rsl, self.comm = program.rsl, program.comm
        self.start, self.end = model.start(), model.wrf_end()
        self.dt = timedelta(seconds=model.time_step())
        total = max(1, math.ceil((self.end - self.start) / self.dt))
        self.stride = max(1, math.ceil(total / MAX_PRINTED_STEPS))
        self.crash_at = program.fault_time("crash_at", self.start)
        self.cfl_at = program.fault_time("cfl", self.start)
        hang = program.faults.get("hang")
        self.hang_at = None if hang is True else program.fault_time("hang", self.start)
        self.cfl_steps = 0

    def run(self) -> None:
        if not self.restart:
            self.write_history(self.start)
        clock, wall = self.start, time.monotonic()
        while clock < self.end:
            previous = clock
            clock = min(self.end, clock + self.stride * self.dt)
            wall = self.wait(previous, clock, wall)
            self.check_faults(clock)
            self.print_step(previous, clock, wall)
            self.outputs(previous, clock)

    def wait(self, previous: datetime, clock: datetime, wall: float) -> float:
        """Sleep until this step's share of wall time has passed; return the new deadline."""
        hours = (clock - previous).total_seconds() / 3600.0
        deadline = wall + hours * self.program.pace()
        time.sleep(max(0.0, deadline - time.monotonic()))
        self.comm.max(0.0)
        return deadline

    def print_step(self, previous: datetime, clock: datetime, wall: float) -> None:
        if not self.program.rank0:
            return
        step_wall = (clock - previous).total_seconds() / 3600.0 * self.program.pace()
        for domain in range(2, self.model.max_dom + 1):
            self.rsl.out(f"Timing for main: time {wrf_date(clock)} on domain {domain:3d}: "
                         f"{step_wall / 3:10.5f} elapsed seconds")
        self.rsl.out(f"Timing for main: time {wrf_date(clock)} on domain {1:3d}: "
                     f"{step_wall:10.5f} elapsed seconds")

    def check_faults(self, clock: datetime) -> None:
        if self.hang_at is not None and clock >= self.hang_at:
            self.program.hang()
        if self.crash_at is not None and clock >= self.crash_at:
            self.program.segfault()
        if self.cfl_at is not None and clock >= self.cfl_at:
            self.cfl_warning(clock)

    def cfl_warning(self, clock: datetime) -> None:
        self.cfl_steps += 1
        if self.cfl_steps > CFL_WARNING_STEPS:
            self.program.segfault()
        if not self.program.rank0:
            return
        count, date = 3 ** self.cfl_steps, wrf_date(clock)
        version = version_key(self.model.version)
        if version < (4, 3):
            self.rsl.out(f"d01 {date} {count:10d} points exceeded cfl=2 in domain d01 at time "
                         f"{date} hours",
                         f"d01 {date} MAX AT i,j,k: {12:10d}{20:10d}{35:10d} vert_cfl,w,d(eta)="
                         f"{1.5 + self.cfl_steps:12.5f}{4.0 * self.cfl_steps:12.5f}{0.0123:12.5f}")
            return
        wording = "w_critical_cfl" if version < (4, 4) else "v_cfl = 2"
        self.rsl.out(f"d01 {date} {count:10d} points exceeded {wording} in domain d01 at time "
                     f"{date} hours",
                     f"d01 {date} Max   W: {12:5d}{20:5d}{35:5d} W: "
                     f"{4.0 * self.cfl_steps:8.2f}  w-cfl: {1.5 + self.cfl_steps:8.2f}  "
                     f"dETA: {0.0123:8.4f}")

    def outputs(self, previous: datetime, clock: datetime) -> None:
        """Write history and restart files whose times fall in (previous, clock]."""
        for moment in self.due("history_interval", previous, clock):
            self.write_history(moment)
        for moment in self.due("restart_interval", previous, clock):
            self.write_restart(moment)
        interval = int(self.model.tc("interval_seconds"))
        if self.model.specified() and self.program.rank0:
            for _ in self.due_seconds(interval, previous, clock):
                self.rsl.out(f"Timing for processing lateral boundary for domain {1:8d}: "
                             f"{0.01:10.5f} elapsed seconds")

    def due(self, key: str, previous: datetime, clock: datetime) -> list[datetime]:
        minutes = int(self.model.tc(key))
        return self.due_seconds(minutes * 60, previous, clock)

    def due_seconds(self, seconds: int, previous: datetime, clock: datetime) -> list[datetime]:
        if seconds <= 0:
            return []
        first = math.floor((previous - self.start).total_seconds() / seconds) + 1
        last = math.floor((clock - self.start).total_seconds() / seconds)
        return [self.start + timedelta(seconds=k * seconds) for k in range(first, last + 1)]

    def write_history(self, moment: datetime) -> None:
        for domain in range(1, self.model.max_dom + 1):
            name = self.model.file_name(f"wrfout_d{domain:02d}_{wrf_date(moment)}")
            self.rsl.err(" mediation_integrate.G        1944 DATASET=HISTORY",
                         f" mediation_integrate.G        1945  grid%id {domain:12d}  grid%oid "
                         f"{domain:12d}")
            if self.program.rank0:
                began = time.monotonic()
                self.write_frame(domain, moment)
                shown = name if version_key(self.model.version) >= (3, 9) else f"{name:<30.30}"
                self.rsl.out(f"Timing for Writing {shown} for domain {domain:8d}: "
                             f"{time.monotonic() - began:10.5f} elapsed seconds")

    def write_frame(self, domain: int, moment: datetime) -> None:
        """Write one history frame; frames_per_outfile frames share a file."""
        per_file = max(1, int(self.model.tc("frames_per_outfile", domain)))
        minutes = max(1, int(self.model.tc("history_interval", domain)))
        index = int((moment - self.start).total_seconds() // (minutes * 60))
        first = self.start + timedelta(minutes=minutes * (index - index % per_file))
        path = Path(self.model.file_name(f"wrfout_d{domain:02d}_{wrf_date(first)}"))
        if index % per_file == 0 or not path.exists():
            title = f"WRF V{self.model.version} MODEL"
            write_wrf_file(path, title, self.model, domain, [moment])
            return
        with netCDF4.Dataset(path, "a") as data:
            frame = len(data.dimensions["Time"])
            data.variables["Times"][frame, :] = netCDF4.stringtochar(
                np.array([wrf_date(moment)], "S19"))

    def write_restart(self, moment: datetime) -> None:
        for domain in range(1, self.model.max_dom + 1):
            if self.program.rank0:
                name = self.model.file_name(f"wrfrst_d{domain:02d}_{wrf_date(moment)}")
                began = time.monotonic()
                write_wrf_file(Path(name), f"WRF V{self.model.version} MODEL", self.model,
                               domain, [moment])
                self.rsl.out(f"Timing for Writing restart for domain {domain:8d}: "
                             f"{time.monotonic() - began:10.5f} elapsed seconds")


PROGRAMS: dict[str, type[Program]] = {"real": Real, "wrf": Wrf, "ideal": Ideal}


def main(program: str, install_dir: str | os.PathLike[str]) -> int:
    """Run one stand-in program in the working directory; the return value is the exit code."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    install = load_install(Path(install_dir))
    return PROGRAMS[program](install).run()
