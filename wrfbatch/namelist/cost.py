"""Estimated wall time of the wrf stage for a core count.

The model: wall time = work / cores, where work is the number of grid
cells times the number of time steps, summed over domains, times a cost per
cell-step. A nest takes dx(1)/dx(n) steps for each step of domain 1, as WRF
runs it with parent_time_step_ratio equal to the grid ratio by convention.

When a cluster has finished runs, the cost per cell-step is calibrated from them:
the median of (wrf stage wall time x compute tasks / cell-steps) over those runs
(see ``calibrated_cost``), so estimates follow the cluster's real speed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .parse import NamelistSummary

# Core-seconds per grid cell per time step. NOTE: measured once, on a 2-core
# Debian 12 machine with gfortran 12 and WRF 4.3.3 (em_quarter_ss, 41 x 41 x 40
# cells, 4 ranks: about 0.05 s per step); a cluster's finished runs give better
# figures, and the caller can pass its own.
DEFAULT_CORE_SECONDS_PER_CELL_STEP = 3e-6


def cell_steps(summary: NamelistSummary) -> float:
    """Return cells times time steps over the forecast, summed over domains."""
    time_step = summary.time_step + (
        summary.time_step_fract[0] / summary.time_step_fract[1]
        if summary.time_step_fract[1] else 0.0
    )
    if time_step <= 0:
        return 0.0
    steps_d01 = summary.run_length.total_seconds() / time_step
    total = 0.0
    for domain in range(summary.max_dom):
        cells = summary.e_we[domain] * summary.e_sn[domain] * summary.e_vert[domain]
        ratio = summary.dx[0] / summary.dx[domain] if summary.dx[domain] else 1.0
        total += cells * steps_d01 * max(ratio, 1.0)
    return total


def estimate_wall_time_s(
    summary: NamelistSummary,
    cores: int,
    core_seconds_per_cell_step: float = DEFAULT_CORE_SECONDS_PER_CELL_STEP,
) -> float:
    """Return the estimated wall time of the wrf stage in seconds on ``cores`` compute tasks."""
    compute_tasks = max(cores - summary.io_tasks, 1)
    return round(cell_steps(summary) * core_seconds_per_cell_step / compute_tasks, 1)


@dataclass(frozen=True)
class FinishedRun:
    """One finished wrf stage of a cluster: its work, its compute tasks and its wall time."""

    cell_steps: float
    compute_tasks: int
    wall_time_s: float


def calibrated_cost(finished: list[FinishedRun]) -> float | None:
    """Return the median core-seconds per cell-step of a cluster's finished runs, if any.

    The median keeps one odd run (a queue stall, a node shared with other jobs)
    from moving every estimate.
    """
    samples = [run.wall_time_s * run.compute_tasks / run.cell_steps for run in finished
               if run.cell_steps > 0 and run.wall_time_s > 0 and run.compute_tasks > 0]
    return statistics.median(samples) if samples else None
