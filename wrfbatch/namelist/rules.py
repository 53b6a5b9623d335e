"""Consistency rules between namelist settings: domains, dates, nests, time step, quilting, paths.

These are the checks that WRF makes after reading the namelist (share/module_check_a_mundo.F,
main/real_em.F, dyn_em/start_em.F) or that make a run fail later. Each rule returns every
problem it finds; none stops at the first.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import f90nml

from .. import wrftables
from .problems import Problem, error, warning
from .schema import value_list

MAX_DOMAINS = 21
DEFAULT_TIME_STEP_RATIO = 6.0
# From 4.2 WRF stops when time_step / dx[km] on d01 exceeds reasonable_time_step_ratio, and
# it derives a nest's dx from its parent's, so nest dx values need not be given.
TIME_STEP_CHECK_VERSION = (4, 2)
DX_RELATIVE_TOLERANCE = 1e-3
PHYSICS_SUITES = {"conus", "tropical", "none"}
_DATE_PARTS = ("year", "month", "day", "hour", "minute", "second")
# Per-domain settings that must be given for every domain when they are given at all.
_EVERY_DOMAIN = ("e_we", "e_sn", "parent_id", "i_parent_start", "j_parent_start",
                 "parent_grid_ratio")
_PATH_VARIABLE = re.compile(r"(?:_inname|_outname|_filename|path|_files)$")


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def setting(nml: f90nml.Namelist, group: str, name: str, default: Any = None) -> Any:
    """Return a setting's first value (or the default when absent or empty)."""
    value = nml.get(group, {}).get(name, default)
    if isinstance(value, list):
        value = value[0] if value else default
    return default if value is None else value


def per_domain(nml: f90nml.Namelist, group: str, name: str, max_dom: int, default: Any) -> list:
    """Return max_dom values of a per-domain setting, repeating the last one given."""
    values = [default if v is None else v for v in value_list(nml.get(group, {}).get(name,
                                                                                      default))]
    values += [values[-1]] * (max_dom - len(values))
    return values[:max_dom]


def max_dom_of(nml: f90nml.Namelist) -> tuple[int, list[Problem]]:
    """Return max_dom (1 when invalid) and the problem with it, if any."""
    value = setting(nml, "domains", "max_dom", 1)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_DOMAINS:
        return value, []
    return 1, [error("domains", "max_dom", value, f"max_dom must be 1 to {MAX_DOMAINS}",
                     "set the number of domains, for example max_dom = 1")]


def count_problems(nml: f90nml.Namelist, max_dom: int, version: str) -> list[Problem]:
    """Find settings with fewer values than domains where each domain needs its own value."""
    needed = [("domains", n) for n in _EVERY_DOMAIN]
    needed += [("time_control", f"{p}_{part}") for p in ("start", "end")
               for part in ("year", "month", "day", "hour")]
    if version_key(version) < TIME_STEP_CHECK_VERSION:
        needed += [("domains", "dx"), ("domains", "dy")]
    problems = []
    for group, name in needed:
        value = nml.get(group, {}).get(name)
        if value is not None and len(value_list(value)) < max_dom:
            problems.append(error(group, name, value,
                                  f"{len(value_list(value))} value(s) for max_dom = {max_dom}",
                                  f"give one value per domain ({max_dom} values)"))
    return problems


# ------------------------------------------------------------------------------------ dates


def domain_dates(nml: f90nml.Namelist, prefix: str, max_dom: int
                 ) -> tuple[list[datetime | None], list[Problem]]:
    """Return each domain's start or end date (None when invalid) and the problems found."""
    columns = [per_domain(nml, "time_control", f"{prefix}_{part}", max_dom,
                          1 if part in ("month", "day") else 0) for part in _DATE_PARTS]
    dates: list[datetime | None] = []
    problems = []
    for domain, parts in enumerate(zip(*columns, strict=True), start=1):
        try:
            dates.append(datetime(*(int(p) for p in parts[:3]))
                         + timedelta(hours=int(parts[3]), minutes=int(parts[4]),
                                     seconds=int(parts[5])))
        except (TypeError, ValueError) as exc:
            dates.append(None)
            problems.append(error("time_control", f"{prefix}_*", list(parts),
                                  f"the {prefix} date of domain {domain} is not a date ({exc})",
                                  f"fix {prefix}_year .. {prefix}_second of domain {domain}"))
    return dates, problems


def run_length(nml: f90nml.Namelist) -> timedelta:
    """Return run_days .. run_seconds as one length (zero when none is set)."""
    parts = {unit: setting(nml, "time_control", f"run_{unit}", 0) for unit in
             ("days", "hours", "minutes", "seconds")}
    try:
        return timedelta(**{unit: int(value) for unit, value in parts.items()})
    except (TypeError, ValueError):
        return timedelta(0)


def date_problems(nml: f90nml.Namelist, max_dom: int, real_data: bool) -> list[Problem]:
    """Check start before end, a window of at least one interval, run_* and nests inside it.

    The window rules apply to real-data runs with lateral boundaries. A global run
    (periodic_x) has none, so it may process a single time.
    """
    real_data = real_data and setting(nml, "bdy_control", "periodic_x", False) is not True
    starts, problems = domain_dates(nml, "start", max_dom)
    ends, end_problems = domain_dates(nml, "end", max_dom)
    problems += end_problems
    start, end = starts[0], ends[0]
    if start is None or end is None:
        return problems
    interval = setting(nml, "time_control", "interval_seconds", 21600)
    problems += _window_problems(start, end, interval, real_data)
    length = run_length(nml)
    if real_data and end > start and length > end - start:
        problems.append(error(
            "time_control", "run_*", str(length),
            f"the forecast length run_* ({length}) is longer than end minus start "
            f"({end - start}), so wrf.exe runs out of boundary conditions",
            "make run_days .. run_seconds match the end date, or move the end date later"))
    for domain in range(2, max_dom + 1):
        nest_start = starts[domain - 1]
        if nest_start is not None and not start <= nest_start < start + (length or end - start):
            problems.append(error(
                "time_control", "start_*", nest_start.isoformat(sep="_"),
                f"domain {domain} starts outside the run of domain 1 ({start} to "
                f"{start + (length or end - start)})",
                f"start domain {domain} at or after domain 1's start and before its end"))
    return problems


def _window_problems(start: datetime, end: datetime, interval: Any, real_data: bool
                     ) -> list[Problem]:
    if end < start:
        return [error("time_control", "end_*", end.isoformat(sep="_"),
                      f"the end date is before the start date {start.isoformat(sep='_')}",
                      "move the end date after the start date")]
    if not real_data:
        return []
    if not isinstance(interval, int) or isinstance(interval, bool) or interval <= 0:
        return [error("time_control", "interval_seconds", interval,
                      "interval_seconds must be a positive whole number of seconds",
                      "set it to the met_em files' time spacing, for example 21600")]
    if end - start < timedelta(seconds=interval):
        return [error("time_control", "end_*", end.isoformat(sep="_"),
                      f"real.exe needs the end at least one interval_seconds ({interval} s) "
                      "after the start", "move the end date later")]
    return []


# ------------------------------------------------------------------------------------ nests


def _ints(nml: f90nml.Namelist, name: str, max_dom: int, default: int) -> list[int]:
    values = per_domain(nml, "domains", name, max_dom, default)
    return [int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default
            for v in values]


def nest_problems(nml: f90nml.Namelist, max_dom: int, version: str) -> list[Problem]:
    """Check parent ids, nest sizes, start positions inside the parent, and dx against the ratio."""
    e_we, e_sn = _ints(nml, "e_we", max_dom, 32), _ints(nml, "e_sn", max_dom, 32)
    parents = _ints(nml, "parent_id", max_dom, 1)
    ratios = _ints(nml, "parent_grid_ratio", max_dom, 1)
    starts = (_ints(nml, "i_parent_start", max_dom, 1), _ints(nml, "j_parent_start", max_dom, 1))
    problems = []
    for d in range(2, max_dom + 1):
        parent, ratio = parents[d - 1], ratios[d - 1]
        if not 1 <= parent < d:
            problems.append(error("domains", "parent_id", parents, f"domain {d} has parent_id "
                                  f"{parent}, but a nest's parent must be a domain before it",
                                  f"set parent_id of domain {d} between 1 and {d - 1}"))
            continue
        if ratio < 1:
            problems.append(error("domains", "parent_grid_ratio", ratios,
                                  f"domain {d} has parent_grid_ratio {ratio}",
                                  "use a whole number of at least 1, usually 3 or 5"))
            continue
        problems += _nest_fit(d, parent, ratio, (e_we, e_sn), starts)
    return problems + _nest_dx_problems(nml, max_dom, version, parents, ratios)


def _nest_fit(d: int, parent: int, ratio: int, sizes: tuple[list[int], list[int]],
              starts: tuple[list[int], list[int]]) -> list[Problem]:
    problems = []
    for axis, size_name, start_name, size, start in (
        ("x", "e_we", "i_parent_start", sizes[0], starts[0]),
        ("y", "e_sn", "j_parent_start", sizes[1], starts[1]),
    ):
        if (size[d - 1] - 1) % ratio:
            problems.append(error(
                "domains", size_name, size, f"domain {d}: {size_name} - 1 = {size[d - 1] - 1} "
                f"is not a multiple of parent_grid_ratio {ratio}",
                f"use {size_name} = n * {ratio} + 1, for example "
                f"{(size[d - 1] - 1) // ratio * ratio + 1}"))
        last = start[d - 1] + (size[d - 1] - 1) // ratio
        if start[d - 1] < 1 or last > size[parent - 1] - 1:
            problems.append(error(
                "domains", start_name, start, f"domain {d} spans parent cells {start[d - 1]} to "
                f"{last} in {axis}, outside its parent (1 to {size[parent - 1] - 1})",
                f"move {start_name} or shrink {size_name} of domain {d} so it fits inside "
                f"domain {parent}"))
    return problems


def _nest_dx_problems(nml: f90nml.Namelist, max_dom: int, version: str, parents: list[int],
                      ratios: list[int]) -> list[Problem]:
    problems = []
    for name in ("dx", "dy"):
        given = value_list(nml.get("domains", {}).get(name, []))
        for d in range(2, min(max_dom, len(given)) + 1):
            parent = parents[d - 1]
            if not 1 <= parent < d or ratios[d - 1] < 1 or not _number(given[d - 1]) \
                    or not _number(given[parent - 1]):
                continue
            expected = float(given[parent - 1]) / ratios[d - 1]
            if abs(float(given[d - 1]) - expected) <= DX_RELATIVE_TOLERANCE * expected:
                continue
            make = warning if version_key(version) >= TIME_STEP_CHECK_VERSION else error
            problems.append(make(
                "domains", name, given, f"domain {d} has {name} {given[d - 1]}, but its parent's "
                f"{name} divided by parent_grid_ratio {ratios[d - 1]} is {expected:g}",
                f"set {name} of domain {d} to {expected:g}"
                + (" (WRF 4.2+ computes it anyway)" if make is warning else "")))
    return problems


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


# ------------------------------------------------------------------------- time step, physics


def time_step_problems(nml: f90nml.Namelist, version: str, real_data: bool) -> list[Problem]:
    """Check time_step against dx on domain 1, where WRF 4.2+ stops above the allowed ratio."""
    adaptive = setting(nml, "domains", "use_adaptive_time_step", False) is True
    # NOTE: IEVA runs are only warned about, because WRF's own IEVA test namelist (4.5.2 and
    # 4.7.1) uses 7.5 s per km without raising the ratio. Whether start_em.F exempts IEVA
    # was not checked in the WRF source.
    ieva = _number(setting(nml, "dynamics", "zadvect_implicit", 0))

    time_step, dx = setting(nml, "domains", "time_step", 0), setting(nml, "domains", "dx", 0)
    if not (_number(time_step) and _number(dx)):
        if adaptive or not isinstance(time_step, (int, float)):
            return []
        return [error("domains", "time_step", time_step, "time_step must be positive",
                      "set it to about 6 x dx in km on domain 1, or less")]
    fract = (setting(nml, "domains", "time_step_fract_num", 0),
             setting(nml, "domains", "time_step_fract_den", 1))
    if all(_number(v) for v in fract):
        time_step += fract[0] / fract[1]

    limit = setting(nml, "domains", "reasonable_time_step_ratio", DEFAULT_TIME_STEP_RATIO)
    ratio = time_step / (dx / 1000.0)
    if adaptive or not real_data or not _number(limit) or ratio <= limit:
        return []
    rule = (f"time_step / dx[km] on domain 1 is {ratio:.1f} s per km, above {limit:g} "
            "(reasonable_time_step_ratio)")
    fix = (f"use time_step <= {int(limit * dx / 1000)} for dx = {dx:g} m, or turn on "
           "use_adaptive_time_step")
    if version_key(version) >= TIME_STEP_CHECK_VERSION and not ieva:
        return [error("domains", "time_step", time_step, rule + ": WRF stops with 'Time step "
                      "too large'", fix)]
    if ieva:
        return [warning("domains", "time_step", time_step, rule + ": IEVA (zadvect_implicit) "
                        "is meant for larger steps",
                        "if WRF stops with 'Time step too large', raise "
                        "reasonable_time_step_ratio above the value shown")]
    return [warning("domains", "time_step", time_step, rule + f": WRF {version} runs but is "
                    "likely to become unstable (CFL errors)", fix)]


def physics_suite_problems(nml: f90nml.Namelist) -> list[Problem]:
    suite = nml.get("physics", {}).get("physics_suite")
    if not isinstance(suite, str) or suite.strip().lower() in PHYSICS_SUITES:
        return []
    return [error("physics", "physics_suite", suite, "WRF knows only the suites 'CONUS', "
                  "'tropical' and 'none'", "use one of them, or remove physics_suite")]


# ------------------------------------------------------------------------- quilting and paths


def quilt_problems(nml: f90nml.Namelist) -> list[Problem]:
    """Warn about nio_groups without I/O tasks: it does nothing and was reported to hang 4.2.2."""
    groups = setting(nml, "namelist_quilt", "nio_groups", 1)
    tasks = setting(nml, "namelist_quilt", "nio_tasks_per_group", 0)
    if _number(groups) and groups > 1 and tasks == 0:
        return [warning("namelist_quilt", "nio_groups", groups,
                        "nio_groups has no effect while nio_tasks_per_group = 0, and this "
                        "setting was reported to hang WRF 4.2.2 without output",
                        "set nio_groups = 1, or give nio_tasks_per_group > 0 to use quilting")]
    return []


def path_problems(nml: f90nml.Namelist, schema: wrftables.Schema) -> list[Problem]:
    """Reject file names that leave the run directory or contain control characters."""
    problems = []
    for group_name, group in nml.items():
        if not isinstance(group, dict):
            continue
        for name, value in group.items():
            entry = schema.get(group_name, {}).get(name)
            if entry is None or entry["type"] != "character" or not _PATH_VARIABLE.search(name):
                continue
            bad = [v for v in value_list(value)
                   if isinstance(v, str) and ("/" in v or ".." in v or not v.isprintable())]
            if bad:
                problems.append(error(group_name, name, value,
                                      f"{bad[0]!r} names a path outside the run directory "
                                      "or contains a control character",
                                      "use a plain file name; wrfbatch runs WRF in the run "
                                      "directory and collects files from there"))
    return problems
