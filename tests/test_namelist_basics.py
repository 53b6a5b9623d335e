"""Reading namelists, the met_em window, decomposition and the rendered namelist."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from wrfbatch.errors import NamelistError
from wrfbatch.namelist import (
    factor_tasks,
    read_namelist,
    required_input_files,
    summarize,
    valid_core_counts,
)
from wrfbatch.namelist.cost import estimate_wall_time_s
from wrfbatch.namelist.decomposition import decomposition_problem
from wrfbatch.namelist.params import DomainParams, NamelistParams, render_namelist
from wrfbatch.rendering import TemplateRenderer

SMALL = """
&time_control
 start_year = 2019, start_month = 09, start_day = 04, start_hour = 12,
 end_year = 2019, end_month = 09, end_day = 05, end_hour = 00,
 interval_seconds = 21600, history_interval = 60,
/
&domains
 max_dom = 1, e_we = 142, e_sn = 133, e_vert = 33, dx = 12000, dy = 12000, time_step = 60,
/
"""


def summary_of(text: str):
    return summarize(read_namelist(text))


def test_summary_window():
    summary = summary_of(SMALL)
    assert summary.start == datetime(2019, 9, 4, 12)
    assert summary.end == datetime(2019, 9, 5, 0)
    assert summary.run_length == timedelta(hours=12)


def test_run_hours_override_end_for_wrf():
    summary = summary_of(SMALL.replace("interval_seconds", "run_hours = 6, interval_seconds"))
    assert summary.end == datetime(2019, 9, 4, 18)
    assert summary.real_end == datetime(2019, 9, 5, 0)


def test_required_met_em_every_interval():
    files = required_input_files(summary_of(SMALL))
    assert files == [
        "met_em.d01.2019-09-04_12:00:00.nc",
        "met_em.d01.2019-09-04_18:00:00.nc",
        "met_em.d01.2019-09-05_00:00:00.nc",
    ]


def test_required_met_em_nocolons():
    text = SMALL.replace("history_interval = 60,", "history_interval = 60, nocolons = .true.,")
    assert required_input_files(summary_of(text))[0] == "met_em.d01.2019-09-04_12_00_00.nc"


def test_nests_need_start_only(shared_dir: Path):
    text = (shared_dir / "wrf/namelists/V3.9/namelist.input").read_text()
    text = text.replace("max_dom                             = 1,", "max_dom = 3,")
    files = required_input_files(summary_of(text))
    assert "met_em.d02.2000-01-24_12:00:00.nc" in files
    assert "met_em.d03.2000-01-24_12:00:00.nc" in files
    assert len([f for f in files if ".d01." in f]) == 5
    assert len(files) == 7


def test_restart_needs_restart_files():
    text = SMALL.replace("history_interval = 60,", "history_interval = 60, restart = .true.,")
    assert "wrfrst_d01_2019-09-04_12:00:00" in required_input_files(summary_of(text))


def test_unparsable_namelist_rejected():
    with pytest.raises(NamelistError):
        read_namelist("&domains\n e_we = 'unterminated\n/\n")


def test_too_few_domain_values_rejected():
    text = SMALL.replace("max_dom = 1", "max_dom = 2")
    for part in ("year", "month", "day", "hour"):
        text = text.replace(f"start_{part} = ", f"start_{part} = 2*").replace(
            f"end_{part} = ", f"end_{part} = 2*")
    with pytest.raises(NamelistError, match="&domains e_we has 1 value"):
        summary_of(text)


@pytest.mark.parametrize(("tasks", "expected"), [(1, (1, 1)), (4, (2, 2)), (12, (3, 4)),
                                                  (128, (8, 16)), (7, (1, 7)), (36, (6, 6))])
def test_factor_tasks(tasks, expected):
    assert factor_tasks(tasks) == expected


def test_128_tasks_too_many_for_142x133():
    summary = summary_of(SMALL)
    problem = decomposition_problem(summary, 128)
    assert problem is not None
    assert "8 x 16" in problem


def test_valid_core_counts_exclude_invalid():
    summary = summary_of(SMALL)
    counts = valid_core_counts(summary, 200)
    assert 128 not in counts
    assert 120 in counts  # 10 x 12 tasks: 14 x 11 cells each
    assert all(decomposition_problem(summary, c) is None for c in counts)


def test_quilting_tasks_do_not_compute():
    text = SMALL + "&namelist_quilt\n nio_tasks_per_group = 2, nio_groups = 1,\n/\n"
    summary = summary_of(text)
    assert summary.io_tasks == 2
    assert 1 not in valid_core_counts(summary, 8)
    assert 3 in valid_core_counts(summary, 8)


def test_estimate_shrinks_with_cores():
    summary = summary_of(SMALL)
    assert estimate_wall_time_s(summary, 8) < estimate_wall_time_s(summary, 2)


def rendered(version: str) -> str:
    params = NamelistParams(
        start=datetime(2019, 9, 4, 12), end=datetime(2019, 9, 4, 18), dx_m=12000,
        domains=[DomainParams(e_we=60, e_sn=50),
                 DomainParams(e_we=61, e_sn=61, parent_id=1, i_parent_start=20,
                              j_parent_start=15, parent_grid_ratio=3)],
    )
    return render_namelist(params, version, TemplateRenderer())


@pytest.mark.parametrize("version", ["3.8.1", "3.9", "4.5.2"])
def test_rendered_namelist_reads_back(version):
    summary = summary_of(rendered(version))
    assert summary.max_dom == 2
    assert summary.dx == [12000.0, 4000.0]
    assert summary.e_we == [60, 61]
    assert summary.time_step == 72


def test_physics_suite_only_in_v4():
    assert "physics_suite" not in rendered("3.8.1")
    assert "physics_suite" in rendered("4.5.2")


def test_params_reject_short_window():
    with pytest.raises(ValueError, match="interval_seconds"):
        NamelistParams(start=datetime(2019, 9, 4, 12), end=datetime(2019, 9, 4, 13), dx_m=12000,
                       domains=[DomainParams(e_we=60, e_sn=50)])


def test_unclosed_group_named():
    text = SMALL.replace("history_interval = 60,\n/", "history_interval = 60,")
    with pytest.raises(NamelistError, match="&time_control is not closed with '/' before "
                                            "&domains"):
        read_namelist(text)


@pytest.mark.parametrize("setting", ["&physics\n sst_update = 1,\n/\n",
                                     "&fdda\n grid_fdda = 0, 1,\n/\n"])
def test_nest_needs_every_time_with_updates(setting):
    text = SMALL.replace("max_dom = 1, e_we = 142, e_sn = 133",
                         "max_dom = 2, e_we = 142, 100, e_sn = 133, 100, dx = 12000, 4000,"
                         " dy = 12000, 4000, parent_id = 0, 1, i_parent_start = 1, 30,"
                         " j_parent_start = 1, 30, parent_grid_ratio = 1, 3")
    text = text.replace(", dx = 12000, dy = 12000,", ",")
    for part in ("year", "month", "day", "hour"):
        text = text.replace(f"start_{part} = ", f"start_{part} = 2*").replace(
            f"end_{part} = ", f"end_{part} = 2*")
    plain = required_input_files(summary_of(text))
    updated = required_input_files(summary_of(text + setting))
    assert [f for f in plain if ".d02." in f] == ["met_em.d02.2019-09-04_12:00:00.nc"]
    assert [f for f in updated if ".d02." in f] == [
        "met_em.d02.2019-09-04_12:00:00.nc", "met_em.d02.2019-09-04_18:00:00.nc",
        "met_em.d02.2019-09-05_00:00:00.nc"]
