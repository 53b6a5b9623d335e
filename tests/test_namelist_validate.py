"""Namelist validation: WRF's own namelists per version, and each rule with a small input."""

from __future__ import annotations

from pathlib import Path

import pytest

from wrfbatch.errors import NamelistError, NotFoundError
from wrfbatch.namelist.validate import check_namelist, validate_namelist

SMALL = """\
&time_control
 start_year = 2019, 2019, start_month = 9, 9, start_day = 4, 4, start_hour = 12, 12,
 end_year = 2019, 2019, end_month = 9, 9, end_day = 4, 4, end_hour = 18, 18,
 interval_seconds = 10800,
/
&domains
 time_step = 180, max_dom = 1, e_we = 50, 31, e_sn = 45, 31, e_vert = 30, 30,
 num_metgrid_levels = 27, dx = 30000, 10000, dy = 30000, 10000,
 parent_id = 0, 1, i_parent_start = 1, 10, j_parent_start = 1, 10,
 parent_grid_ratio = 1, 3,
/
&physics
 mp_physics = 3, 3,
/
"""


def problems(text: str, version: str = "4.7.1", flavour: str = "plain") -> list[str]:
    return [str(p) for p in validate_namelist(text, version, flavour).errors]


def warnings(text: str, version: str = "4.7.1") -> list[str]:
    return [str(p) for p in validate_namelist(text, version).warnings]


def edit(**changes: str) -> str:
    text = SMALL
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def shared_namelists() -> list[Path]:
    from conftest import SHARED_DIR

    return sorted((SHARED_DIR / "wrf" / "namelists").glob("*/namelist.input*"))


def version_of(path: Path) -> str:
    return path.parent.name[1:]


# --------------------------------------------------------------------------- WRF's namelists


@pytest.mark.parametrize("path", [p for p in shared_namelists() if "fire" not in p.name],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shared_namelist_valid(shared_dir, path):
    assert problems(path.read_text(), version_of(path)) == []


@pytest.mark.parametrize("path", [p for p in shared_namelists() if "fire" in p.name],
                         ids=lambda p: p.parent.name)
def test_fire_namelist_rejected(shared_dir, path):
    found = problems(path.read_text(), version_of(path))
    assert any("pd_moist" in p and "use moist_adv_opt instead" in p for p in found)
    assert any("fire_ignition_start_long2" in p and "did you mean fire_ignition_start_lon2"
               in p for p in found)


@pytest.mark.parametrize("old", ["pd_chem", "pd_tke", "pd_scalar"])
def test_removed_pd_names_renamed(old):
    new = {"pd_chem": "chem_adv_opt", "pd_tke": "tke_adv_opt", "pd_scalar": "scalar_adv_opt"}
    text = SMALL + f"&dynamics\n {old} = .true.,\n/\n"
    assert f"use {new[old]} instead" in problems(text)[0]


def test_chem_group_ignored_plain(shared_dir):
    text = (shared_dir / "wrf/namelists/v4.7.1/namelist.input.chem").read_text()
    assert any(w.startswith("&chem: this is a plain WRF build") for w in warnings(text))


def test_chem_group_checked_chem():
    text = SMALL + "&chem\n chem_opt = 2, kemit = 1.5, chem_made_up = 1,\n/\n"
    found = problems(text, flavour="chem")
    assert len(found) == 2
    assert any("kemit" in p and "integer" in p for p in found)


def test_unknown_flavour_rejected():
    with pytest.raises(NotFoundError, match="plain, chem"):
        validate_namelist(SMALL, "4.7.1", "fortran")


# --------------------------------------------------------------------------- names, types, counts


def test_unknown_names_versions():
    text = edit(**{"mp_physics = 3, 3,": "mp_physics = 3, bl_mynn_tkebudget = 1,"})
    assert "defined in WRF 3.8.1 to 4.4" in problems(text)[0]


def test_variable_in_wrong_group():
    text = edit(**{"mp_physics = 3, 3,": "mp_physics = 3, time_step = 60,"})
    assert "move it to &domains" in problems(text)[0]


def test_too_many_values_rejected():
    text = edit(**{"interval_seconds = 10800,": "interval_seconds = 10800, 10800,"})
    assert "2 values given, but WRF 4.7.1 accepts one value" in problems(text)[0]


def test_gwd_opt_two_values_before_42():
    text = SMALL + "&dynamics\n gwd_opt = 1, 1,\n/\n"
    assert problems(text, "4.1")
    assert problems(text, "4.2") == []


def test_logical_type_checked():
    text = edit(**{"interval_seconds = 10800,": "interval_seconds = 10800, restart = 1,"})
    assert ".true. or .false." in problems(text)[0]


def test_short_per_domain_list():
    text = edit(**{"max_dom = 1,": "max_dom = 2,", "e_sn = 45, 31,": "e_sn = 45,"})
    assert problems(text) == ["&domains e_sn = 45: 1 value(s) for max_dom = 2; give one value "
                              "per domain (2 values)"]


def test_all_problems_at_once():
    text = edit(**{"time_step = 180,": "time_step = 150.5,", "max_dom = 1,": "max_dom = 30,",
                   "mp_physics = 3, 3,": "mp_physcs = 3,"})
    assert len(problems(text)) == 3


def test_check_raises_every_error():
    text = edit(**{"time_step = 180,": "time_step = 'x',", "mp_physics = 3, 3,": "mp_phys = 3,"})
    with pytest.raises(NamelistError) as info:
        check_namelist(text, "4.7.1")
    assert len(info.value.problems) == 2


# --------------------------------------------------------------------------- dates


def test_end_before_start():
    text = edit(**{"end_hour = 18, 18,": "end_hour = 6, 6,"})
    assert "the end date is before the start date" in problems(text)[0]


def test_window_shorter_than_interval():
    text = edit(**{"end_hour = 18, 18,": "end_hour = 14, 14,"})
    assert "at least one interval_seconds" in problems(text)[0]


def test_run_length_past_window():
    text = edit(**{"interval_seconds = 10800,": "interval_seconds = 10800, run_hours = 12,"})
    assert "runs out of boundary conditions" in problems(text)[0]


def test_invalid_date_named():
    text = edit(**{"start_month = 9, 9,": "start_month = 13, 13,"})
    assert "the start date of domain 1 is not a date" in problems(text)[0]


def test_nest_starting_late():
    text = edit(**{"max_dom = 1,": "max_dom = 2,", "start_hour = 12, 12,": "start_hour = 12, 19,"})
    assert any("domain 2 starts outside" in p for p in problems(text))


# --------------------------------------------------------------------------- nests


def test_valid_nest_accepted():
    assert problems(edit(**{"max_dom = 1,": "max_dom = 2,"})) == []


def test_nest_outside_parent():
    text = edit(**{"max_dom = 1,": "max_dom = 2,", "i_parent_start = 1, 10,":
                   "i_parent_start = 1, 45,"})
    assert "spans parent cells 45 to 55 in x, outside its parent (1 to 49)" in problems(text)[0]


def test_nest_size_not_multiple():
    text = edit(**{"max_dom = 1,": "max_dom = 2,", "e_we = 50, 31,": "e_we = 50, 32,"})
    assert "e_we = n * 3 + 1, for example 31" in problems(text)[0]


def test_nest_parent_after_itself():
    text = edit(**{"max_dom = 1,": "max_dom = 2,", "parent_id = 0, 1,": "parent_id = 0, 2,"})
    assert "between 1 and 1" in problems(text)[0]


def test_nest_dx_ratio_before_42():
    text = edit(**{"max_dom = 1,": "max_dom = 2,", "dx = 30000, 10000,": "dx = 30000, 12000,"})
    assert "set dx of domain 2 to 10000" in problems(text, "4.1")[0]
    assert problems(text, "4.2") == []


# ------------------------------------------------------------------ time step, quilt, paths


def test_time_step_ratio_override():
    text = edit(**{"time_step = 180,": "time_step = 210, reasonable_time_step_ratio = 8.,"})
    assert problems(text) == []


def test_fractional_time_step_counts():
    text = edit(**{"time_step = 180,": "time_step = 180, time_step_fract_num = 1, "
                   "time_step_fract_den = 2,"})
    assert "180.5" in problems(text)[0]


def test_quilt_groups_without_tasks():
    text = SMALL + "&namelist_quilt\n nio_tasks_per_group = 0, nio_groups = 3,\n/\n"
    assert problems(text) == []
    assert "nio_groups has no effect" in warnings(text)[0]


@pytest.mark.parametrize("value", ["/etc/passwd", "../wrfout_d<domain>", "out/wrfout"])
def test_path_outside_run_dir(value):
    text = edit(**{"interval_seconds = 10800,":
                   f"interval_seconds = 10800, history_outname = '{value}',"})
    assert "names a path outside the run directory" in problems(text)[0]


def test_plain_file_name_accepted():
    text = edit(**{"interval_seconds = 10800,":
                   "interval_seconds = 10800, history_outname = 'wrfout_d<domain>_<date>',"})
    assert problems(text) == []


def test_physics_suite_unknown():
    text = edit(**{"mp_physics = 3, 3,": "physics_suite = 'MIDLAT',"})
    assert "'CONUS', 'tropical' and 'none'" in problems(text)[0]


def test_unknown_group_warning():
    assert "&physic:" in warnings(SMALL + "&physic\n mp_physics = 3,\n/\n")[0]


def test_end_before_start_reported_once():
    from wrfbatch.namelist.validate import validate_namelist

    text = """&time_control
 start_year = 2019, start_month = 9, start_day = 4, start_hour = 12,
 end_year = 2019, end_month = 9, end_day = 3, end_hour = 18,
 interval_seconds = 21600,
/
&domains
 max_dom = 1, e_we = 50, e_sn = 45, e_vert = 30, dx = 30000, dy = 30000, time_step = 180,
 num_metgrid_levels = 27,
/
&namelist_quilt
/
"""
    messages = [str(problem) for problem in validate_namelist(text, "3.9").errors]
    assert any("before" in message or "after" in message for message in messages)
    assert not any("longer than end minus start" in message for message in messages)
