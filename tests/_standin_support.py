"""Helpers for the stand-in WRF tests: run directories, namelists and program runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import f90nml

from wrfbatch.standin import write_met_em_set
from wrfbatch.standin.install import DEFAULT_NAMELIST

FAST = {"pace_s_per_model_hour": 0.05}


def namelist(**groups: dict[str, Any]) -> f90nml.Namelist:
    """The install's default namelist with ``group={name: value}`` changes applied."""
    nml = f90nml.reads(DEFAULT_NAMELIST)
    for group, changes in groups.items():
        nml.setdefault(group, f90nml.Namelist())
        for name, value in changes.items():
            nml[group][name] = value
    return nml


def run_dir(install: Path, path: Path, nml: f90nml.Namelist | None = None, *,
            met_em: bool = True, faults: dict[str, Any] | None = FAST) -> Path:
    """Link the install's run/ files into ``path`` and write namelist, met_em and faults."""
    path.mkdir(parents=True, exist_ok=True)
    for entry in (install / "run").iterdir():
        if entry.name != "namelist.input":
            (path / entry.name).symlink_to(entry.resolve())
    nml = nml if nml is not None else namelist()
    nml.write(str(path / "namelist.input"), force=True)
    if met_em:
        write_met_em_set(nml, path)
    if faults is not None:
        (path / "standin.json").write_text(json.dumps(faults))
    return path


def run(path: Path, program: str, *, env: dict[str, str] | None = None,
        launcher: list[str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    command = [*(launcher or []), f"./{program}.exe"]
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "WRFBATCH_STANDIN"}
    return subprocess.run(command, cwd=path, capture_output=True, text=True, timeout=timeout,
                          env=env)


def rsl(path: Path, kind: str = "out", rank: int = 0) -> str:
    return (path / f"rsl.{kind}.{rank:04d}").read_text()
