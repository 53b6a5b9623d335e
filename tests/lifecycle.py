"""Helpers shared by the lifecycle tests: inputs for a run, and waiting for a state."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from wrfbatch.models import Run
from wrfbatch.runs import RunManager
from wrfbatch.standin.metem import write_met_em_set

FINAL = {"done", "error", "stopped"}


def upload_inputs(
    manager: RunManager,
    run_id: str,
    namelist: str,
    directory: Path,
    standin: dict | None = None,
    **met_em_options: int,
) -> list[str]:
    """Upload namelist.input, the met_em files it needs and an optional standin.json."""
    directory.mkdir(parents=True, exist_ok=True)
    namelist_path = directory / "namelist.input"
    namelist_path.write_text(namelist)
    files = [namelist_path, *write_met_em_set(namelist_path, directory / "met_em",
                                              **met_em_options)]
    for path in files:
        with path.open("rb") as handle:
            manager.upload(run_id, path.name, handle)
    if standin is not None:
        manager.upload(run_id, "standin.json", io.BytesIO(json.dumps(standin).encode()))
    return [path.name for path in files]


def wait_for(
    manager: RunManager, run_id: str, states: set[str], timeout_s: float = 120.0,
    interval_s: float = 0.5,
) -> Run:
    """Refresh the run's cluster until the run reaches one of ``states``; fail on timeout."""
    deadline = time.monotonic() + timeout_s
    run = manager.get(run_id)
    while run.status not in states:
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run.status} after {timeout_s} s, "
                                 f"expected {sorted(states)}: {run.model_dump_json(indent=1)}")
        time.sleep(interval_s)
        manager.refresh(run.cluster)
        run = manager.get(run_id)
    return run
