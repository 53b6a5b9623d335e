#!/usr/bin/env python3
"""Generate wrfbatch/data/wrf_tables.json from the WRF registry and run/ directory facts.

Reads ``<shared>/wrf/registry/<tag>.tsv`` (group, name, type, entries, default) with
the namelist variables an ARW build accepts, and ``<shared>/wrf/rundir/<tag>.run-files.tsv``
(name, kind). Writes one compact JSON file. It stores the first version's namelist schema
in full, every later version as a difference against the one before it, and each run/
file listing once.

A chem build (WRF-Chem) reads one more group, ``&chem``, which is not in the ARW
registry tables. Its variables are collected from the ``&chem`` groups of WRF's own
chem test namelists (``<shared>/wrf/namelists/*/namelist.input.{chem,volc}``): a variable
given more than one value there is per domain, and its type is that of its values. Those
namelists do not give registry defaults, so the chem entries have none.

Usage: scripts/generate-wrf-tables.py [--shared DIR] [--output FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

import f90nml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = PROJECT_ROOT / "wrfbatch" / "data" / "wrf_tables.json"
FORMAT_VERSION = 1
TYPE_CODES = {"integer": "i", "real": "r", "logical": "l", "character": "c"}

# Array sizes of a default ARW build (frame/module_driver_constants.F; max_domains is the
# configure default). NOTE: max_zlevs is not in the WRF 3.6 copy that was checked and is
# assumed to equal max_plevs.
ARRAY_SIZES = {
    "1": 1,
    "max_domains": 21,
    "max_moves": 50,
    "max_eta": 501,
    "max_ocean": 501,
    "max_bogus": 5,
    "max_plevs": 100,
    "max_zlevs": 100,
}

# Groups that WRF reads with its own Fortran namelist statements, outside the registry:
# &namelist_quilt (frame/module_io_quilt_old.F) and &logging (frame/module_wrf_error.F).
# NOTE: the types and defaults of &logging are taken from WRF's namelist documentation,
# not from the source.
EXTRA_GROUPS: dict[str, dict[str, list[Any]]] = {
    "namelist_quilt": {
        "nio_tasks_per_group": ["i", "max_domains", 0],
        "nio_groups": ["i", "1", 1],
        "poll_servers": ["l", "1", False],
    },
    "logging": {
        "buffer_size": ["i", "1", 131072],
        "compute_tasks_silent": ["l", "1", False],
        "io_servers_silent": ["l", "1", False],
        "stderr_logging": ["i", "1", 1],
    },
}

_TAG = re.compile(r"^[vV](\d+(?:\.\d+)+)$")


def version_of_tag(tag: str) -> str:
    """Map a WRF release tag such as ``V3.9.1.1`` or ``v4.5.2`` to its version."""
    match = _TAG.match(tag)
    if match is None:
        raise ValueError(f"cannot read a WRF version from tag {tag!r}: expected V3.9 or v4.5.2")
    return match.group(1)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def parse_default(kind: str, text: str) -> Any:
    """Convert a registry default to the JSON value of its Fortran type."""
    text = text.strip()
    if kind == "integer":
        return int(text)
    if kind == "real":
        return float(text.lower().replace("d", "e"))
    if kind == "logical":
        return text.strip(".").lower().startswith("t")
    return text


def read_registry(path: Path) -> dict[str, dict[str, list[Any]]]:
    """Read one registry table into group -> name -> [type code, entries, default]."""
    schema: dict[str, dict[str, list[Any]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            kind, entries = row["type"], row["entries"]
            if kind not in TYPE_CODES:
                raise ValueError(f"{path}: unknown type {kind!r} for {row['name']}")
            if entries not in ARRAY_SIZES:
                raise ValueError(f"{path}: unknown array size {entries!r} for {row['name']}")
            default = parse_default(kind, row["default"])
            schema.setdefault(row["group"], {})[row["name"]] = [TYPE_CODES[kind], entries, default]
    for group, variables in EXTRA_GROUPS.items():
        schema.setdefault(group, {}).update(variables)
    return schema


def read_run_files(path: Path) -> list[list[str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            name, kind = line.split("\t")
            rows.append([name, kind])
    return rows


CHEM_NAMELISTS = ("namelist.input.chem", "namelist.input.volc")
# NOTE: time steps in minutes that WRF-Chem declares real; the test namelists write whole
# numbers for them, which would otherwise make them look like integers.
CHEM_REALS = {"bioemdt", "photdt", "chemdt"}


def _type_code(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "l"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "i"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "r"
    return "c"


def read_chem_group(namelists_dir: Path) -> dict[str, list[Any]]:
    """Collect the &chem variables of WRF's chem test namelists: name -> [type, entries, None]."""
    seen: dict[str, list[Any]] = {}
    per_domain: set[str] = set()
    for path in sorted(namelists_dir.glob("*/namelist.input.*")):
        if path.name not in CHEM_NAMELISTS:
            continue
        for name, value in f90nml.read(str(path)).get("chem", {}).items():
            values = value if isinstance(value, list) else [value]
            seen.setdefault(name, []).extend(v for v in values if v is not None)
            if len(values) > 1:
                per_domain.add(name)
    return {
        name: ["r" if name in CHEM_REALS else _type_code(values),
               "max_domains" if name in per_domain else "1", None]
        for name, values in sorted(seen.items())
    }


def diff_schema(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Return the changes from ``old`` to ``new``: set (added or changed) and removed."""
    changes: dict[str, Any] = {"set": {}, "removed": {}}
    for group in sorted(set(old) | set(new)):
        before, after = old.get(group, {}), new.get(group, {})
        changed = {n: v for n, v in after.items() if before.get(n) != v}
        removed = sorted(set(before) - set(after))
        if changed:
            changes["set"][group] = changed
        if removed:
            changes["removed"][group] = removed
    return changes


def build_tables(shared: Path) -> dict[str, Any]:
    registry_dir, rundir_dir = shared / "wrf" / "registry", shared / "wrf" / "rundir"
    schemas = {version_of_tag(p.stem): read_registry(p) for p in registry_dir.glob("*.tsv")}
    versions = sorted(schemas, key=version_key)
    run_lists = {
        version_of_tag(p.name.removesuffix(".run-files.tsv")): read_run_files(p)
        for p in rundir_dir.glob("*.run-files.tsv")
    }
    namelist: dict[str, Any] = {versions[0]: {"full": schemas[versions[0]]}}
    for previous, version in zip(versions, versions[1:]):
        namelist[version] = diff_schema(schemas[previous], schemas[version])
    return {
        "format": FORMAT_VERSION,
        "versions": versions,
        "array_sizes": ARRAY_SIZES,
        "types": {code: name for name, code in TYPE_CODES.items()},
        "namelist": namelist,
        "run_files": {v: run_lists[v] for v in sorted(run_lists, key=version_key)},
        "chem_group": read_chem_group(shared / "wrf" / "namelists"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=PROJECT_ROOT.parent / "shared",
                        help="folder that contains wrf/registry and wrf/rundir")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON file to write")
    args = parser.parse_args(argv)
    if not (args.shared / "wrf" / "registry").is_dir():
        parser.error(f"{args.shared}/wrf/registry not found: pass --shared DIR")
    tables = build_tables(args.shared)
    text = json.dumps(tables, separators=(",", ":"), sort_keys=True)
    args.output.write_text(text + "\n")
    print(f"wrote {args.output} ({len(text)} bytes, versions {', '.join(tables['versions'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
