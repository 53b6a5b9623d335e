"""Pre-flight check of uploaded met_em files against the namelist, from their headers only.

real.exe compares the namelist with each met_em file's global attributes and stops on
the first mismatch (share/input_wrf.F, main/real_em.F). Here every file is opened with
netCDF4, only its header and its one ``Times`` record are read, and every mismatch is
reported with the value the files need.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

from .parse import NamelistSummary
from .problems import Problem, error

logger = logging.getLogger(__name__)

MET_EM_NAME = re.compile(
    r"^met_em\.d(\d{2})\.(\d{4}-\d{2}-\d{2}_\d{2}[:_]\d{2}[:_]\d{2})\.nc$")
DX_RELATIVE_TOLERANCE = 1e-5
DEFAULT_LAND_CATEGORIES = 21
MAX_FILES_NAMED = 3
# The HDF5 library in netCDF4's wheels is built without thread safety: concurrent setups in
# the service's thread pool crashed the process (SIGSEGV in libhdf5), so reads take turns.
_NETCDF_LOCK = threading.Lock()


@dataclass(frozen=True)
class MetEmHeader:
    """The domain, valid time and global attributes of one met_em file, as real.exe reads them."""

    name: str
    domain: int
    name_time: datetime
    file_time: str | None
    attrs: dict[str, Any]


def read_header(path: Path) -> MetEmHeader | None:
    """Read a met_em file's header and Times; None when the name is not a met_em name."""
    match = MET_EM_NAME.match(path.name)
    if match is None:
        return None
    stamp = match.group(2).replace("_", " ", 1).replace("_", ":").replace(" ", "_", 1)
    with _NETCDF_LOCK, netCDF4.Dataset(path) as data:
        attrs = {name: data.getncattr(name) for name in data.ncattrs()}
        times = data.variables.get("Times")
        file_time = None
        if times is not None and times.shape[0] > 0:
            file_time = netCDF4.chartostring(times[0]).tolist().strip() or None
    return MetEmHeader(path.name, int(match.group(1)),
                       datetime.strptime(stamp, "%Y-%m-%d_%H:%M:%S"), file_time, attrs)


def _expected(summary: NamelistSummary, domain: int) -> list[tuple[str, str, Any, str]]:
    """(namelist variable, attribute, namelist value, comparison) for one domain."""
    d = domain - 1
    checks = [
        ("e_we", "WEST-EAST_GRID_DIMENSION", summary.e_we[d], "equal"),
        ("e_sn", "SOUTH-NORTH_GRID_DIMENSION", summary.e_sn[d], "equal"),
        ("num_metgrid_levels", "BOTTOM-TOP_GRID_DIMENSION", summary.num_metgrid_levels, "equal"),
        ("num_metgrid_soil_levels", "NUM_METGRID_SOIL_LEVELS",
         summary.num_metgrid_soil_levels, "equal"),
        ("num_land_cat", "NUM_LAND_CAT",
         summary.extra.get("num_land_cat", DEFAULT_LAND_CATEGORIES), "equal"),
        ("dx", "DX", summary.dx[d], "close"),
        ("dy", "DY", summary.dy[d], "close"),
    ]
    if domain > 1:
        for name in ("i_parent_start", "j_parent_start"):
            starts = summary.extra.get(name) or [None] * summary.max_dom
            checks.append((name, name, starts[d], "equal"))
    return checks


def _differs(found: Any, wanted: Any, how: str) -> bool:
    if wanted is None:
        return False
    if how == "close":
        return abs(float(found) - float(wanted)) > DX_RELATIVE_TOLERANCE * abs(float(wanted))
    return int(found) != int(wanted)


def header_mismatches(header: MetEmHeader, summary: NamelistSummary
                      ) -> list[tuple[str, str, Any, Any]]:
    """Return (variable, attribute, namelist value, file value) for each disagreement."""
    found = []
    for variable, attr, wanted, how in _expected(summary, header.domain):
        if attr not in header.attrs:
            found.append((variable, attr, wanted, "(missing)"))
            continue
        value = header.attrs[attr]
        if isinstance(value, np.integer) and value.dtype != np.int32:
            found.append((variable, attr, wanted, f"{value} stored as {value.dtype}, not int32"))
        elif _differs(value, wanted, how):
            found.append((variable, attr, wanted, value.item() if hasattr(value, "item")
                          else value))
    stamp = header.name_time.strftime("%Y-%m-%d_%H:%M:%S")
    if header.file_time != stamp:
        found.append(("start_*", "Times", stamp, header.file_time or "(empty)"))
    return found


def met_em_problems(summary: NamelistSummary, paths: Iterable[Path]) -> list[Problem]:
    """Compare every uploaded met_em file of the run's domains with the namelist.

    Returns one problem per namelist variable and file value, naming up to three files.
    """
    grouped: dict[tuple[str, str, str, str], list[str]] = {}
    for path in sorted(paths):
        try:
            header = read_header(path)
        except OSError as exc:
            grouped.setdefault(("", "netCDF", "", str(exc)), []).append(path.name)
            continue
        if header is None or header.domain > summary.max_dom:
            continue
        for variable, attr, wanted, value in header_mismatches(header, summary):
            grouped.setdefault((variable, attr, str(wanted), str(value)), []).append(header.name)
    return [_problem(key, names) for key, names in grouped.items()]


def _problem(key: tuple[str, str, str, str], names: list[str]) -> Problem:
    variable, attr, wanted, value = key
    shown = ", ".join(names[:MAX_FILES_NAMED]) + (
        f" and {len(names) - MAX_FILES_NAMED} more" if len(names) > MAX_FILES_NAMED else "")
    group = "physics" if variable == "num_land_cat" else (
        "time_control" if variable == "start_*" else "domains")
    if attr == "netCDF":
        return error("domains", "", None, f"{shown} cannot be read as netCDF ({value})",
                     "upload the met_em files that metgrid.exe wrote")
    if attr == "Times":
        return error(group, variable, None, f"{shown} holds time {value} in Times, but its "
                     f"name says {wanted}", "upload the file that metgrid wrote for that time")
    return error(group, variable, None if wanted == "None" else _number(wanted),
                 f"{shown} {'has' if len(names) == 1 else 'have'} {attr} = {value}",
                 f"set {variable} = {value} to match the files, or regenerate them with WPS")


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return float(text)
