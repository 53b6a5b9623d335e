"""Compute options: valid core counts with estimated times, calibrated from finished runs."""

from __future__ import annotations

import io

import pytest

from lifecycle import FINAL, upload_inputs, wait_for
from wrfbatch.namelist import read_namelist, summarize
from wrfbatch.namelist.cost import (
    DEFAULT_CORE_SECONDS_PER_CELL_STEP,
    FinishedRun,
    calibrated_cost,
    cell_steps,
    estimate_wall_time_s,
)
from wrfbatch.namelist.decomposition import stage_problems
from wrfbatch.runs import RunManager
from wrfbatch.runs.calibration import finished_run


@pytest.fixture
def manager(local_settings):
    manager = RunManager(local_settings)
    yield manager
    manager.close()


def test_calibration_takes_median():
    runs = [FinishedRun(1e6, 2, 1.0), FinishedRun(1e6, 2, 2.0), FinishedRun(1e6, 2, 100.0)]
    assert calibrated_cost(runs) == pytest.approx(4e-6)


def test_calibration_skips_empty_samples():
    assert calibrated_cost([FinishedRun(0, 2, 5.0), FinishedRun(1e6, 0, 5.0)]) is None


def test_cell_steps_count_nest_steps(small_namelist):
    one = summarize(read_namelist(small_namelist))
    # 50 x 45 x 30 cells, 6 h at 180 s: 120 steps.
    assert cell_steps(one) == 50 * 45 * 30 * 120


def test_estimate_uses_compute_tasks(small_namelist):
    text = small_namelist.replace("nio_tasks_per_group = 0, nio_groups = 1",
                                  "nio_tasks_per_group = 1, nio_groups = 1")
    quilted, plain = (summarize(read_namelist(t)) for t in (text, small_namelist))
    assert estimate_wall_time_s(quilted, 3) == estimate_wall_time_s(plain, 2)


def test_both_stages_checked(small_namelist):
    summary = summarize(read_namelist(small_namelist))
    found = stage_problems(summary, {"real": 25, "wrf": 4})
    assert len(found) == 1
    assert found[0].startswith("real stage: 25 tasks split as 5 x 5")


def test_options_default_cost(manager, small_namelist):
    summary = summarize(read_namelist(small_namelist))
    options = manager.compute_options(summary, 4, "local")
    assert [o.time for o in options] == [estimate_wall_time_s(summary, n) for n in (1, 2, 3, 4)]


def test_options_calibrated_from_done_run(manager, small_namelist, tmp_path):
    run = manager.create_run("alice", "3.9")
    upload_inputs(manager, run.id, small_namelist, tmp_path / "inputs",
                  {"pace_s_per_model_hour": 0.5})
    manager.setup(run.id)
    manager.start(run.id, 2)
    done = wait_for(manager, run.id, FINAL)
    assert done.status == "done", done.error
    record = manager.store.get_run(run.id)
    sample = finished_run(record, manager.store.jobs_for_run(run.id, record.attempt))
    assert sample is not None
    cost = calibrated_cost([sample])
    assert cost != DEFAULT_CORE_SECONDS_PER_CELL_STEP
    summary = summarize(read_namelist(small_namelist))
    options = manager.compute_options(summary, 4, "local")
    assert [o.time for o in options] == [estimate_wall_time_s(summary, n, cost)
                                         for n in (1, 2, 3, 4)]


def test_setup_stores_cell_steps(manager, small_namelist, tmp_path):
    run = manager.create_run("alice", "3.9")
    manager.upload(run.id, "namelist.input", io.BytesIO(small_namelist.encode()))
    manager.setup(run.id)
    stored = manager.store.get_run(run.id).namelist_summary
    assert stored["cell_steps"] == 50 * 45 * 30 * 120
