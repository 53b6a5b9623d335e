"""Samples for the run-time cost model from a cluster's finished runs."""

from __future__ import annotations

from ..namelist.cost import FinishedRun
from ..states import Stage
from ..store.records import RunJob, RunRecord


def finished_run(record: RunRecord, jobs: list[RunJob]) -> FinishedRun | None:
    """Return the work, compute tasks and wrf stage wall time of a done run, if all are known.

    Setup stores the namelist's cell-steps in ``namelist_summary``; runs set up
    before that was stored, and jobs without start and end times, give no sample.
    """
    summary = record.namelist_summary or {}
    work = summary.get("cell_steps")
    wrf = next((job for job in jobs if job.stage == Stage.WRF), None)
    if not work or record.cores is None or wrf is None:
        return None
    if wrf.time_started is None or wrf.time_ended is None:
        return None
    wall_s = (wrf.time_ended - wrf.time_started).total_seconds()
    tasks = record.cores - int(summary.get("io_tasks", 0) or 0)
    return FinishedRun(cell_steps=float(work), compute_tasks=tasks, wall_time_s=wall_s)
