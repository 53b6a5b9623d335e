"""The met_em header check: every mismatch with the namelist, and its speed on big inputs."""

from __future__ import annotations

import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from wrfbatch.namelist import read_namelist, summarize
from wrfbatch.namelist.inputs import required_input_files
from wrfbatch.namelist.metem_check import met_em_problems, read_header
from wrfbatch.namelist.validate import validate_namelist
from wrfbatch.standin.metem import write_met_em_set

NAMELIST = """\
&time_control
 start_year = 2019, 2019, start_month = 9, 9, start_day = 4, 4, start_hour = 12, 12,
 end_year = 2019, 2019, end_month = 9, 9, end_day = 4, 4, end_hour = 18, 18,
 interval_seconds = 21600,
/
&domains
 time_step = 180, max_dom = 2, e_we = 40, 31, e_sn = 35, 31, e_vert = 30, 30,
 num_metgrid_levels = 27, num_metgrid_soil_levels = 4, dx = 30000, dy = 30000,
 parent_id = 0, 1, i_parent_start = 1, 10, j_parent_start = 1, 8,
 parent_grid_ratio = 1, 3,
/
&physics
 num_land_cat = 21,
/
"""


def write_set(tmp_path: Path, text: str, **options: int) -> list[Path]:
    path = tmp_path / "namelist.input"
    path.write_text(text)
    return write_met_em_set(path, tmp_path / "met_em", **options)


def problems_for(text: str, paths: list[Path]) -> list[str]:
    return [str(p) for p in met_em_problems(summarize(read_namelist(text)), paths)]


def test_matching_files_pass(tmp_path):
    assert problems_for(NAMELIST, write_set(tmp_path, NAMELIST)) == []


def test_header_fields_read(tmp_path):
    header = read_header(write_set(tmp_path, NAMELIST)[-1])
    assert header.domain == 2
    assert header.file_time == "2019-09-04_12:00:00"
    assert int(header.attrs["i_parent_start"]) == 10


def test_levels_mismatch_named(tmp_path):
    found = problems_for(NAMELIST, write_set(tmp_path, NAMELIST, num_metgrid_levels=34))
    assert found == ["&domains num_metgrid_levels = 27: met_em.d01.2019-09-04_12:00:00.nc, "
                     "met_em.d01.2019-09-04_18:00:00.nc, met_em.d02.2019-09-04_12:00:00.nc have "
                     "BOTTOM-TOP_GRID_DIMENSION = 34; set num_metgrid_levels = 34 to match the "
                     "files, or regenerate them with WPS"]


def test_soil_levels_mismatch(tmp_path):
    found = problems_for(NAMELIST, write_set(tmp_path, NAMELIST, num_soil_levels=2))
    assert "NUM_METGRID_SOIL_LEVELS = 2" in found[0]


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("e_we = 40, 31,", "e_we = 41, 31,", "WEST-EAST_GRID_DIMENSION = 40"),
    ("e_sn = 35, 31,", "e_sn = 36, 31,", "SOUTH-NORTH_GRID_DIMENSION = 35"),
    ("dx = 30000,", "dx = 25000,", "DX = 30000.0"),
    ("num_land_cat = 21,", "num_land_cat = 24,", "NUM_LAND_CAT = 21"),
    ("j_parent_start = 1, 8,", "j_parent_start = 1, 9,", "j_parent_start = 8"),
])
def test_namelist_change_detected(tmp_path, old, new, expected):
    paths = write_set(tmp_path, NAMELIST)
    assert any(expected in p for p in problems_for(NAMELIST.replace(old, new), paths))


def test_times_record_checked(tmp_path):
    paths = write_set(tmp_path, NAMELIST)
    with netCDF4.Dataset(paths[0], "a") as data:
        data.variables["Times"][0, :] = netCDF4.stringtochar(np.array(["2019-09-04_06:00:00"],
                                                                        "S19"))
    assert "holds time 2019-09-04_06:00:00 in Times" in problems_for(NAMELIST, paths)[0]


def test_int64_attribute_rejected(tmp_path):
    paths = write_set(tmp_path, NAMELIST)
    with netCDF4.Dataset(paths[0], "a") as data:
        data.setncattr("NUM_LAND_CAT", np.int64(21))
    assert "stored as int64, not int32" in problems_for(NAMELIST, paths)[0]


def test_nocolons_names_checked(tmp_path):
    text = NAMELIST.replace("interval_seconds = 21600,", "interval_seconds = 21600, "
                            "nocolons = .true.,")
    paths = write_set(tmp_path, text, num_metgrid_levels=30)
    assert paths[0].name == "met_em.d01.2019-09-04_12_00_00.nc"
    assert "BOTTOM-TOP_GRID_DIMENSION = 30" in problems_for(text, paths)[0]


def test_unreadable_file_reported(tmp_path):
    bad = tmp_path / "met_em.d01.2019-09-04_12:00:00.nc"
    bad.write_bytes(b"not netCDF")
    assert "cannot be read as netCDF" in problems_for(NAMELIST, [bad])[0]


# The shared namelist with the most met_em data (11 files, 0.43 million cells) and the
# largest shared namelist file.
BIG_NAMELISTS = ["v4.7.1/namelist.input.pbl-les", "V3.8.1/namelist.input.chem"]


@pytest.mark.parametrize("name", BIG_NAMELISTS)
def test_big_namelist_under_second(shared_dir, tmp_path, name):
    path = shared_dir / "wrf" / "namelists" / name
    paths = write_met_em_set(path, tmp_path)
    started = time.perf_counter()
    result = validate_namelist(path.read_text(), path.parent.name[1:])
    found = met_em_problems(result.summary, paths)
    elapsed = time.perf_counter() - started
    assert result.ok
    assert found == []
    assert len(paths) == len(required_input_files(result.summary))
    assert elapsed < 1.0
