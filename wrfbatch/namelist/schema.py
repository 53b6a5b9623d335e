"""Checks of a parsed namelist against a WRF version's registry: names, types and counts.

WRF reads each known group with one Fortran READ: an unknown variable, a value of
the wrong type or more values than the variable can store stops it with ``ERROR while
reading namelist <group>``, and only the first problem of each group is shown.
Here every problem is reported, each with its fix. Unknown groups are ignored by
WRF, and so they only give a warning.
"""

from __future__ import annotations

import difflib
from typing import Any

import f90nml

from .. import wrftables
from .problems import Problem, error, warning

# Variables that WRF removed, with the names that replaced them. WRF 4.x prints a hint
# for these itself (frame/module_configure.F, wrf_alt_nml_obsolete).
RENAMED = {
    "pd_moist": "moist_adv_opt",
    "pd_chem": "chem_adv_opt",
    "pd_tke": "tke_adv_opt",
    "pd_scalar": "scalar_adv_opt",
    "bl_mynn_tkebudget": "tke_budget",
}
_MAX_SUGGESTIONS = 3
_PYTHON_TYPES = {"integer": "a whole number", "real": "a number",
                 "logical": ".true. or .false.", "character": "a quoted string"}


def value_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def value_count(group: f90nml.Namelist, name: str, value: Any) -> int:
    """Return how many values WRF would store, counting a ``name(3) = ...`` start offset."""
    start_index = getattr(group, "start_index", {}) or {}
    offset = (start_index.get(name) or [1])[0] or 1
    return offset - 1 + len(value_list(value))


def type_ok(kind: str, value: Any) -> bool:
    """Return whether one parsed value fits a Fortran type as WRF reads it."""
    if value is None:
        return True
    if kind == "character":
        return isinstance(value, str)
    if kind == "logical":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    return isinstance(value, (int, float))


def schema_problems(nml: f90nml.Namelist, version: str, flavour: str = "plain") -> list[Problem]:
    """Return every name, type and count problem of ``nml`` for a WRF version and flavour."""
    schema = wrftables.namelist_schema(version, flavour)
    problems: list[Problem] = []
    for group_name, group in nml.items():
        if isinstance(group, list):
            problems.append(error(group_name, "", None, f"the group appears {len(group)} times",
                                  "merge its settings into one group"))
            group = group[0]
        if group_name not in schema:
            problems.append(_unknown_group(group_name, flavour))
            continue
        for name, value in group.items():
            problems += _variable_problems(group_name, group, name, value, schema, version)
    return problems


def _unknown_group(group: str, flavour: str) -> Problem:
    if group == "chem":
        return warning("chem", "", None, f"this is a {flavour} WRF build, which ignores &chem",
                       "use a WRF install of flavour 'chem' to run WRF-Chem, or remove the group")
    return warning(group, "", None, "WRF does not read this group and ignores it",
                   "check the group name for a typo")


def _variable_problems(
    group_name: str, group: f90nml.Namelist, name: str, value: Any,
    schema: wrftables.Schema, version: str,
) -> list[Problem]:
    entry = schema[group_name].get(name)
    if entry is None:
        return [_unknown_variable(group_name, name, value, schema, version)]
    problems = []
    count, size = value_count(group, name, value), entry["size"]
    if count > size:
        allowed = "one value" if size == 1 else f"at most {size} values"
        problems.append(error(group_name, name, value,
                              f"{count} values given, but WRF {version} accepts {allowed} here",
                              f"give {allowed}"))
    wrong = [v for v in value_list(value) if not type_ok(entry["type"], v)]
    if wrong:
        problems.append(error(
            group_name, name, value,
            f"{name} is {entry['type']} in WRF {version}, but {wrong[0]!r} is not",
            f"write {_PYTHON_TYPES[entry['type']]}"
            + (f", for example {int(wrong[0])}" if entry["type"] == "integer"
               and isinstance(wrong[0], float) else "")))
    return problems


def _unknown_variable(
    group: str, name: str, value: Any, schema: wrftables.Schema, version: str
) -> Problem:
    elsewhere = [g for g, variables in schema.items() if name in variables]
    rule = f"WRF {version} has no variable {name} in &{group}"
    if elsewhere:
        return error(group, name, value, rule, f"move it to &{elsewhere[0]}")
    versions = wrftables.variable_versions(name)
    if versions:
        rule += f" (defined in WRF {_version_span(versions)})"
    else:
        rule += " nor in any WRF version from 3.8.1 to 4.7.1"
    return error(group, name, value, rule, _suggestion(name, list(schema[group])))


def _suggestion(name: str, candidates: list[str]) -> str:
    if name in RENAMED:
        return f"use {RENAMED[name]} instead, WRF's current name for this setting"
    close = difflib.get_close_matches(name, candidates, n=_MAX_SUGGESTIONS, cutoff=0.75)
    if close:
        return f"did you mean {' or '.join(close)}?"
    return "remove it, or check the spelling against the WRF documentation of this version"


def _version_span(versions: list[str]) -> str:
    return versions[0] if len(versions) == 1 else f"{versions[0]} to {versions[-1]}"
