"""WRF's split of MPI tasks into a processor grid, and the core counts a domain allows."""

from __future__ import annotations

import math

from .parse import NamelistSummary

# WRF 4.0+ stops when e_we / nproc_x or e_sn / nproc_y (integer division) is below this
# on any domain (share/module_check_a_mundo.F).
MIN_CELLS_PER_TASK = 10


def factor_tasks(ntasks: int) -> tuple[int, int]:
    """Return (nproc_x, nproc_y) as WRF chooses them: nproc_x <= nproc_y, as close as possible."""
    nproc_x = math.isqrt(ntasks)
    while ntasks % nproc_x:
        nproc_x -= 1
    return nproc_x, ntasks // nproc_x


def decomposition_problem(summary: NamelistSummary, ntasks: int) -> str | None:
    """Return why WRF would reject ``ntasks`` compute tasks for this grid, or None if it fits."""
    nproc_x, nproc_y = factor_tasks(ntasks)
    for domain in range(summary.max_dom):
        cells_x = summary.e_we[domain] // nproc_x
        cells_y = summary.e_sn[domain] // nproc_y
        if cells_x < MIN_CELLS_PER_TASK or cells_y < MIN_CELLS_PER_TASK:
            return (
                f"{ntasks} tasks split as {nproc_x} x {nproc_y} leave {cells_x} x {cells_y} cells "
                f"per task on domain {domain + 1} (e_we = {summary.e_we[domain]}, e_sn = "
                f"{summary.e_sn[domain]}); WRF needs at least {MIN_CELLS_PER_TASK} in each direction"
            )
    return None


def valid_core_counts(summary: NamelistSummary, max_cores: int) -> list[int]:
    """Return the core counts up to max_cores whose compute tasks WRF accepts for this grid."""
    counts = []
    for cores in range(1, max_cores + 1):
        compute_tasks = cores - summary.io_tasks
        if compute_tasks >= 1 and decomposition_problem(summary, compute_tasks) is None:
            counts.append(cores)
    return counts


def compute_tasks(summary: NamelistSummary, tasks: int) -> int:
    """Return the MPI tasks that compute when quilting reserves nio_groups * nio_tasks_per_group."""
    return tasks - summary.io_tasks


def stage_problems(summary: NamelistSummary, tasks_by_stage: dict[str, int]) -> list[str]:
    """Return why WRF would reject each stage's task count (real and wrf), or an empty list."""
    problems = []
    for stage, tasks in tasks_by_stage.items():
        computing = compute_tasks(summary, tasks)
        if computing < 1:
            problems.append(f"{stage} stage: {tasks} tasks leave no compute task after "
                            f"{summary.io_tasks} I/O quilting tasks")
            continue
        problem = decomposition_problem(summary, computing)
        if problem:
            problems.append(f"{stage} stage: {problem}")
    return problems
