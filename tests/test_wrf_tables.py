"""The generated WRF tables: loader behaviour and a round trip against the registry facts."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import pytest

from wrfbatch import wrftables
from wrfbatch.errors import NotFoundError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = PROJECT_ROOT / "scripts" / "generate-wrf-tables.py"
DATA = PROJECT_ROOT / "wrfbatch" / "data" / "wrf_tables.json"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_wrf_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _version(tag: str) -> str:
    return re.sub(r"^[vV]", "", tag)


def test_versions_sorted_oldest_first():
    versions = wrftables.versions()
    assert versions[0] == "3.8.1"
    assert versions[-1] == "4.7.1"
    assert versions.index("3.9.1.1") < versions.index("4.0")


def test_unknown_version_lists_valid():
    with pytest.raises(NotFoundError) as info:
        wrftables.namelist_schema("5.1")
    assert "5.1" in str(info.value)
    assert "4.7.1" in str(info.value)


def test_short_version_resolves():
    assert wrftables.resolve_version("4.6") == "4.6.0"


def test_extra_groups_present():
    schema = wrftables.namelist_schema("3.9")
    assert schema["namelist_quilt"]["nio_groups"]["type"] == "integer"
    assert set(schema["logging"]) == {"buffer_size", "compute_tasks_silent",
                                      "io_servers_silent", "stderr_logging"}


def test_gwd_opt_per_domain_from_42():
    assert wrftables.namelist_schema("4.1")["dynamics"]["gwd_opt"]["entries"] == "1"
    assert wrftables.namelist_schema("4.2")["dynamics"]["gwd_opt"]["entries"] == "max_domains"


def test_tke_budget_replaces_mynn_45():
    physics_44, physics_45 = (wrftables.namelist_schema(v)["physics"] for v in ("4.4", "4.5"))
    assert "bl_mynn_tkebudget" in physics_44
    assert "bl_mynn_tkebudget" not in physics_45
    assert "tke_budget" in physics_45


def test_schema_copy_is_private():
    schema = wrftables.namelist_schema("4.0")
    schema["domains"].clear()
    assert wrftables.namelist_schema("4.0")["domains"]


def test_run_files_earlier_listing():
    assert wrftables.run_files("4.3") == wrftables.run_files("4.0")
    assert wrftables.run_files("3.9.1") == wrftables.run_files("3.9")


def test_schema_matches_registry(shared_dir):
    generator = _generator()
    for path in sorted((shared_dir / "wrf" / "registry").glob("*.tsv")):
        schema = wrftables.namelist_schema(_version(path.stem))
        expected: dict[tuple[str, str], dict] = {}
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                expected[(row["group"], row["name"])] = {
                    "type": row["type"], "entries": row["entries"],
                    "default": generator.parse_default(row["type"], row["default"]),
                }
        found = {(group, name): {k: entry[k] for k in ("type", "entries", "default")}
                 for group, variables in schema.items() for name, entry in variables.items()
                 if group not in generator.EXTRA_GROUPS}
        assert found == expected, f"schema of {path.stem} differs from its registry table"


def test_run_files_match_listings(shared_dir):
    for path in sorted((shared_dir / "wrf" / "rundir").glob("*.run-files.tsv")):
        version = _version(path.name.removesuffix(".run-files.tsv"))
        rows = [tuple(line.split("\t")) for line in path.read_text().splitlines() if line]
        assert wrftables.run_files(version) == rows, f"run files of {version} differ"


def test_committed_data_is_current(shared_dir, tmp_path):
    output = tmp_path / "tables.json"
    _generator().main(["--shared", str(shared_dir), "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(DATA.read_text())
