"""Create a stand-in WRF install: main/*.exe programs and a run/ directory like WRF's.

Layout of ``<prefix>``::

    main/real.exe, main/wrf.exe, main/ideal.exe   scripts run by the given Python
    main/standin/standin_program.py                the programs (wrfbatch.standin.program)
    main/standin/install.json                      WRF version and its namelist schema
    main/standin/f90nml/                           f90nml, copied from this environment
    run/                                           the version's run/ files, namelist.input
                                                   and links to ../main/*.exe

The cluster side then needs only that Python with numpy and netCDF4, plus
mpi4py when the programs run under srun or mpirun.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import f90nml

from .. import names, wrftables
from ..errors import InvalidInputError
from . import program

logger = logging.getLogger(__name__)

PROGRAMS = ("real", "wrf", "ideal")
MARKER = Path("main") / "standin" / "install.json"
_PYTHON_PATH = re.compile(r"^/[A-Za-z0-9_./+-]+$")

# A namelist that every supported version accepts: one 6-hour 42 x 42 domain.
DEFAULT_NAMELIST = """\
 &time_control
 run_days                 = 0,
 run_hours                = 6,
 start_year               = 2019, 2019,
 start_month              = 09,   09,
 start_day                = 04,   04,
 start_hour               = 12,   12,
 end_year                 = 2019, 2019,
 end_month                = 09,   09,
 end_day                  = 04,   04,
 end_hour                 = 18,   18,
 interval_seconds         = 21600
 input_from_file          = .true.,.true.,
 history_interval         = 60,  60,
 frames_per_outfile       = 1, 1,
 restart                  = .false.,
 restart_interval         = 360,
 io_form_history          = 2
 io_form_restart          = 2
 io_form_input            = 2
 io_form_boundary         = 2
 /

 &domains
 time_step                = 180,
 max_dom                  = 1,
 e_we                     = 42,    43,
 e_sn                     = 42,    43,
 e_vert                   = 33,    33,
 p_top_requested          = 5000,
 num_metgrid_levels       = 27,
 num_metgrid_soil_levels  = 4,
 dx                       = 30000,
 dy                       = 30000,
 grid_id                  = 1,     2,
 parent_id                = 0,     1,
 i_parent_start           = 1,     15,
 j_parent_start           = 1,     15,
 parent_grid_ratio        = 1,     3,
 parent_time_step_ratio   = 1,     3,
 feedback                 = 1,
 /

 &physics
 mp_physics               = 3,     3,
 ra_lw_physics            = 1,     1,
 ra_sw_physics            = 1,     1,
 radt                     = 30,    30,
 sf_sfclay_physics        = 1,     1,
 sf_surface_physics       = 2,     2,
 bl_pbl_physics           = 1,     1,
 cu_physics               = 1,     0,
 num_land_cat             = 21,
 /

 &bdy_control
 spec_bdy_width           = 5,
 specified                = .true.
 /

 &namelist_quilt
 nio_tasks_per_group      = 0,
 nio_groups               = 1,
 /
"""


def install_standin(
    prefix: str | os.PathLike[str], version: str, python: str = sys.executable
) -> Path:
    """Create (or replace) a stand-in WRF install of ``version`` under ``prefix``.

    Raises InvalidInputError for an invalid Python path or a ``prefix`` that contains
    something other than a stand-in install, and NotFoundError for an unknown version.
    """
    names.check_version(version)
    resolved = wrftables.resolve_version(version)
    _check_python(python)
    target = Path(prefix).expanduser().absolute()
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _build_tree(staging, resolved, python)
        _swap_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("created stand-in WRF %s install at %s (python %s)", resolved, target, python)
    return target


def _check_python(python: str) -> None:
    if not _PYTHON_PATH.match(python):
        raise InvalidInputError(
            f"invalid Python path {python!r} for the stand-in programs: give an absolute path "
            "of letters, digits and '_./+-', for example /usr/bin/python3"
        )


def _check_replaceable(target: Path) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InvalidInputError(f"install prefix {target} exists and is not a directory: "
                                "choose a new or empty directory")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
        raise InvalidInputError(f"install prefix {target} is not empty and is not a stand-in "
                                "WRF install: choose a new or empty directory")


def _swap_into_place(staging: Path, target: Path) -> None:
    """Move the finished tree to ``target``, removing a previous install only at the end."""
    built = staging / "tree"
    if target.exists():
        old = staging / "old"
        target.rename(old)
    built.rename(target)


def _build_tree(staging: Path, version: str, python: str) -> None:
    tree = staging / "tree"
    support = tree / "main" / "standin"
    support.mkdir(parents=True)
    shutil.copy2(program.__file__, support / "standin_program.py")
    shutil.copytree(Path(f90nml.__file__).parent, support / "f90nml",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _write_install_json(support / "install.json", version)
    for name in PROGRAMS:
        _write_program(tree / "main" / f"{name}.exe", name, version, python)
    _write_run_dir(tree / "run", version)


def _write_install_json(path: Path, version: str) -> None:
    schema = wrftables.namelist_schema(version)
    codes = {"integer": "i", "real": "r", "logical": "l", "character": "c"}
    compact = {
        group: {name: [codes[e["type"]], e["entries"], e["default"]] for name, e in vars_.items()}
        for group, vars_ in schema.items()
    }
    sizes = {e["entries"]: e["size"] for vars_ in schema.values() for e in vars_.values()}
    path.write_text(json.dumps({"version": version, "schema": compact, "array_sizes": sizes}))


def _write_program(path: Path, name: str, version: str, python: str) -> None:
    path.write_text(
        f"#!{python}\n"
        f'"""Stand-in {name}.exe of WRF {version}, created by wrfbatch-standin."""\n'
        "import os\n"
        "import sys\n"
        "\n"
        'SUPPORT = os.path.join(os.path.dirname(os.path.realpath(__file__)), "standin")\n'
        "sys.path.insert(0, SUPPORT)\n"
        "import standin_program  # noqa: E402\n"
        "\n"
        f'sys.exit(standin_program.main("{name}", SUPPORT))\n'
    )
    path.chmod(0o755)


def _write_run_dir(run: Path, version: str) -> None:
    run.mkdir()
    files = wrftables.run_files(version)
    plain = [name for name, kind in files if kind != "symlink"]
    for name, kind in files:
        if kind == "symlink":
            (run / name).symlink_to(_link_target(name, plain))
        else:
            (run / name).write_text(f"stand-in copy of WRF {version} run/{name}\n")
    (run / "namelist.input").write_text(DEFAULT_NAMELIST)
    for name in PROGRAMS:
        (run / f"{name}.exe").symlink_to(Path("..") / "main" / f"{name}.exe")


def _link_target(name: str, plain: list[str]) -> str:
    """Pick the file a run/ symlink points to: a variant of the same name.

    WRF's CAMtr_volume_mixing_ratio links to one scenario file; SSP245 is preferred
    when the version ships it.
    """
    variants = sorted(n for n in plain if n.startswith(f"{name}."))
    preferred = [n for n in variants if n.endswith(".SSP245")]
    if preferred or variants:
        return (preferred or variants)[0]
    raise InvalidInputError(f"run/ symlink {name} has no target in the version's file list")
