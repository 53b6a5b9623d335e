"""Idealized runs: ideal.exe with an uploaded input_sounding, through the same lifecycle."""

from __future__ import annotations

import io

import pytest

from lifecycle import FINAL, wait_for
from wrfbatch.namelist import read_namelist, required_input_files, summarize
from wrfbatch.namelist.ideal import is_ideal
from wrfbatch.namelist.validate import validate_namelist
from wrfbatch.runs import RunManager

# A small em_quarter_ss-like case: no metgrid levels, no interval_seconds, open boundaries.
QUARTER_SS = """\
&time_control
 run_minutes = 20,
 start_year = 0001, start_month = 01, start_day = 01, start_hour = 00,
 end_year = 0001, end_month = 01, end_day = 01, end_hour = 00, end_minute = 20,
 history_interval = 10, frames_per_outfile = 1, restart = .false., restart_interval = 60,
/
&domains
 time_step = 12, max_dom = 1, e_we = 42, e_sn = 42, e_vert = 41, dx = 2000, dy = 2000,
 ztop = 20000,
/
&physics
 mp_physics = 1, ra_lw_physics = 0, ra_sw_physics = 0, sf_surface_physics = 0,
/
&bdy_control
 open_xs = .true., open_xe = .true., open_ys = .true., open_ye = .true.,
/
&namelist_quilt
 nio_tasks_per_group = 0, nio_groups = 1,
/
"""
SOUNDING = "1000.00 300.00 14.00\n250.00 300.45 14.00 -7.88 -3.58\n"


@pytest.fixture
def manager(local_settings):
    manager = RunManager(local_settings)
    yield manager
    manager.close()


def test_ideal_without_real_settings():
    assert is_ideal(read_namelist(QUARTER_SS))


def test_ideal_case_group_wins(small_namelist):
    assert is_ideal(read_namelist(small_namelist + "&ideal\n ideal_case = 2,\n/\n"))


def test_real_namelist_not_ideal(small_namelist):
    assert not is_ideal(read_namelist(small_namelist))


def test_ideal_needs_sounding_only():
    assert required_input_files(summarize(read_namelist(QUARTER_SS))) == ["input_sounding"]


@pytest.mark.parametrize("version", ["3.9", "4.7.1"])
def test_ideal_namelist_valid(version):
    assert validate_namelist(QUARTER_SS, version).errors == []


def test_ideal_run_to_done(manager):
    run = manager.create_run("alice", "3.9")
    manager.upload(run.id, "namelist.input", io.BytesIO(QUARTER_SS.encode()))
    assert manager.setup(run.id).missing_input_files == ["input_sounding"]
    manager.upload(run.id, "input_sounding", io.BytesIO(SOUNDING.encode()))
    assert manager.setup(run.id).run.status == "ready"
    manager.start(run.id, 1)
    done = wait_for(manager, run.id, FINAL)
    assert done.status == "done", done.error
    assert [job.stage for job in done.jobs] == ["ideal", "wrf"]
    assert "wrfout_d01_0001-01-01_00:20:00" in {f.filename for f in done.output_files}
