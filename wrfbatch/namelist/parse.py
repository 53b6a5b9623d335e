"""Read namelist.input with f90nml and summarise what the lifecycle needs from it."""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import f90nml

from ..errors import NamelistError
from .ideal import is_ideal

_DATE_PARTS = ("year", "month", "day", "hour", "minute", "second")


def read_namelist(text: str) -> f90nml.Namelist:
    """Parse namelist text; raise NamelistError with the parser's reason when it is not valid."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            namelist = f90nml.read(io.StringIO(text))
    # f90nml reports syntax errors with several exception types (and prints its scanner
    # state), so every exception from the parser means "not a valid namelist".
    except Exception as exc:
        raise NamelistError(
            f"namelist.input could not be parsed as a Fortran namelist: {exc}; "
            "check the line it names for a missing '/', quote or comma",
            [str(exc)],
        ) from exc
    _check_groups_closed(text, namelist)
    return namelist


_GROUP_HEADER = re.compile(r"^\s*&(\w+)", re.MULTILINE)


def _check_groups_closed(text: str, namelist: f90nml.Namelist) -> None:
    """Raise NamelistError for a group that f90nml dropped because the one before is open.

    f90nml reads ``&a ... &b ... /`` as group ``a`` alone, so a missing ``/``
    would otherwise show up later as a missing group.
    """
    headers = [match.group(1).lower() for match in _GROUP_HEADER.finditer(text)]
    for previous, header in zip(headers, headers[1:]):
        if header not in namelist:
            problem = (f"&{previous} is not closed with '/' before &{header}, so &{header} "
                       "was not read")
            raise NamelistError(f"namelist.input: {problem}; add a line with '/' at the end "
                                f"of &{previous}", [problem])


@dataclass
class NamelistSummary:
    """The settings of a namelist that the run lifecycle uses, with WRF's defaults applied."""

    max_dom: int
    starts: list[datetime]
    ends: list[datetime]
    # wrf.exe's forecast length: run_days..run_seconds when set, else end minus start of d01.
    run_length: timedelta
    interval_seconds: int
    history_interval_min: list[int]
    restart: bool
    restart_interval_min: int
    e_we: list[int]
    e_sn: list[int]
    e_vert: list[int]
    dx: list[float]
    dy: list[float]
    time_step: int
    time_step_fract: tuple[int, int]
    nocolons: bool
    num_metgrid_levels: int
    num_metgrid_soil_levels: int
    io_form_input: int
    nio_groups: int
    nio_tasks_per_group: int
    ideal: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def start(self) -> datetime:
        return self.starts[0]

    @property
    def end(self) -> datetime:
        """End of wrf.exe's forecast on domain 1."""
        return self.start + self.run_length

    @property
    def real_end(self) -> datetime:
        """End of the window that real.exe processes (end_* of domain 1)."""
        return self.ends[0]

    @property
    def io_tasks(self) -> int:
        """MPI tasks reserved for I/O quilting, which do not compute."""
        return self.nio_groups * self.nio_tasks_per_group


# Per-domain settings that have no usable default for a nest: each domain needs its own value.
# (A nest's dx and dy follow from its parent's and parent_grid_ratio.)
_ONE_PER_DOMAIN = {"e_we", "e_sn", "start_year", "end_year"}


def _per_domain(
    namelist: f90nml.Namelist, group: str, name: str, max_dom: int, default: Any
) -> list[Any]:
    """Return a per-domain setting as a list of max_dom values, repeating the last one."""
    value = namelist.get(group, {}).get(name, default)
    values = list(value) if isinstance(value, list) else [value]
    if len(values) < max_dom and name in _ONE_PER_DOMAIN:
        raise NamelistError(
            f"&{group} {name} has {len(values)} value(s) but max_dom is {max_dom}: give one "
            "value per domain",
            [f"&{group} {name}: {len(values)} values for max_dom = {max_dom}"],
        )
    values += [values[-1]] * (max_dom - len(values))
    return values[:max_dom]


def _dates(namelist: f90nml.Namelist, prefix: str, max_dom: int) -> list[datetime]:
    columns = [
        _per_domain(namelist, "time_control", f"{prefix}_{part}", max_dom,
                    1 if part in ("month", "day") else 0)
        for part in _DATE_PARTS
    ]
    dates = []
    for domain, parts in enumerate(zip(*columns, strict=True), start=1):
        try:
            dates.append(datetime(*(int(p) for p in parts)))
        except (TypeError, ValueError) as exc:
            raise NamelistError(
                f"&time_control {prefix} date of domain {domain} is invalid ({parts}): {exc}",
                [f"{prefix} date of domain {domain}: {exc}"],
            ) from exc
    return dates


def _run_length(time_control: dict[str, Any], start: datetime, end: datetime) -> timedelta:
    run = timedelta(
        days=int(time_control.get("run_days", 0) or 0),
        hours=int(time_control.get("run_hours", 0) or 0),
        minutes=int(time_control.get("run_minutes", 0) or 0),
        seconds=int(time_control.get("run_seconds", 0) or 0),
    )
    return run if run > timedelta(0) else end - start


def _grid_distances(namelist: f90nml.Namelist, name: str, max_dom: int) -> list[float]:
    """Return dx or dy per domain; a nest without its own value gets parent / ratio."""
    domains = namelist.get("domains", {})
    given = domains.get(name, 200.0)
    given = [v for v in (given if isinstance(given, list) else [given]) if v is not None]
    parents = _per_domain(namelist, "domains", "parent_id", max_dom, 1)
    ratios = _per_domain(namelist, "domains", "parent_grid_ratio", max_dom, 1)
    values: list[float] = []
    for domain in range(max_dom):
        if domain < len(given):
            values.append(float(given[domain]))
            continue
        parent = min(max(int(parents[domain]), 1), domain) - 1
        values.append(values[parent] / max(int(ratios[domain]), 1))
    return values


def _first(value: Any, default: Any) -> Any:
    if isinstance(value, list):
        value = value[0] if value else None
    return default if value is None else value


def summarize(namelist: f90nml.Namelist) -> NamelistSummary:
    """Extract the lifecycle's settings; raise NamelistError when required ones are missing."""
    time_control = namelist.get("time_control", {})
    domains = namelist.get("domains", {})
    quilt = namelist.get("namelist_quilt", {})
    if not domains:
        raise NamelistError("namelist.input has no &domains group: add one with max_dom, "
                            "e_we, e_sn, dx, dy and time_step", ["missing &domains"])
    max_dom = int(domains.get("max_dom", 1))
    starts = _dates(namelist, "start", max_dom)
    ends = _dates(namelist, "end", max_dom)
    history = _per_domain(namelist, "time_control", "history_interval", max_dom, 60)
    return NamelistSummary(
        max_dom=max_dom,
        starts=starts,
        ends=ends,
        run_length=_run_length(time_control, starts[0], ends[0]),
        interval_seconds=int(time_control.get("interval_seconds", 21600)),
        history_interval_min=[int(h) for h in history],
        restart=bool(time_control.get("restart", False)),
        restart_interval_min=int(time_control.get("restart_interval", 1440)),
        e_we=[int(v) for v in _per_domain(namelist, "domains", "e_we", max_dom, 32)],
        e_sn=[int(v) for v in _per_domain(namelist, "domains", "e_sn", max_dom, 32)],
        e_vert=[int(v) for v in _per_domain(namelist, "domains", "e_vert", max_dom, 30)],
        dx=_grid_distances(namelist, "dx", max_dom),
        dy=_grid_distances(namelist, "dy", max_dom),
        time_step=int(domains.get("time_step", 0) or 0),
        time_step_fract=(
            int(domains.get("time_step_fract_num", 0) or 0),
            int(domains.get("time_step_fract_den", 1) or 1),
        ),
        nocolons=bool(time_control.get("nocolons", False)),
        num_metgrid_levels=int(domains.get("num_metgrid_levels", 27)),
        num_metgrid_soil_levels=int(domains.get("num_metgrid_soil_levels", 4)),
        io_form_input=int(time_control.get("io_form_input", 2)),
        nio_groups=int(_first(quilt.get("nio_groups"), 1)),
        nio_tasks_per_group=int(_first(quilt.get("nio_tasks_per_group"), 0)),
        ideal=is_ideal(namelist),
        extra={
            "i_parent_start": [int(v) for v in _per_domain(namelist, "domains", "i_parent_start",
                                                          max_dom, 1)],
            "j_parent_start": [int(v) for v in _per_domain(namelist, "domains", "j_parent_start",
                                                          max_dom, 1)],
            "num_land_cat": int(_first(namelist.get("physics", {}).get("num_land_cat"), 21)),
            "nest_needs_all_times": _nest_needs_all_times(namelist, max_dom),
        },
    )


def _nest_needs_all_times(namelist: f90nml.Namelist, max_dom: int) -> list[bool]:
    """Return per domain whether real.exe reads its met_em files at every time, not only at
    the start: with sst_update or qna_update (all domains) or grid_fdda (that domain)."""
    physics = namelist.get("physics", {})
    everywhere = any(int(_first(physics.get(name), 0) or 0) for name in ("sst_update",
                                                                        "qna_update"))
    fdda = _per_domain(namelist, "fdda", "grid_fdda", max_dom, 0)
    return [everywhere or bool(int(value or 0)) for value in fdda]
