"""Synthetic met_em files: names for the namelist window, netCDF header and size."""

from __future__ import annotations

import subprocess
import sys

import f90nml
import netCDF4
import numpy as np
import pytest

from wrfbatch.errors import InvalidInputError
from wrfbatch.standin import met_em_file_names, write_met_em_set
from wrfbatch.standin.install import DEFAULT_NAMELIST


def _namelist(**domains):
    nml = f90nml.reads(DEFAULT_NAMELIST)
    for key, value in domains.items():
        nml["domains"][key] = value
    return nml


def test_names_cover_window():
    nml = _namelist()
    nml["time_control"]["end_day"] = [5, 5]
    assert met_em_file_names(nml) == [
        "met_em.d01.2019-09-04_12:00:00.nc", "met_em.d01.2019-09-04_18:00:00.nc",
        "met_em.d01.2019-09-05_00:00:00.nc", "met_em.d01.2019-09-05_06:00:00.nc",
        "met_em.d01.2019-09-05_12:00:00.nc", "met_em.d01.2019-09-05_18:00:00.nc",
    ]


def test_names_nest_start_only():
    names = met_em_file_names(_namelist(max_dom=2))
    assert names[-1] == "met_em.d02.2019-09-04_12:00:00.nc"
    assert len(names) == 3


def test_names_nocolons():
    nml = _namelist()
    nml["time_control"]["nocolons"] = True
    assert met_em_file_names(nml)[0] == "met_em.d01.2019-09-04_12_00_00.nc"


def test_names_end_before_start():
    nml = _namelist()
    nml["time_control"]["end_day"] = [3, 3]
    with pytest.raises(InvalidInputError, match="before start"):
        met_em_file_names(nml)


def test_header_dimensions(tmp_path):
    path = write_met_em_set(_namelist(e_we=[50, 43], e_sn=[40, 43]), tmp_path,
                            num_metgrid_levels=34)[0]
    with netCDF4.Dataset(path) as data:
        dims = {name: len(dim) for name, dim in data.dimensions.items()}
        assert data.dimensions["Time"].isunlimited()
    assert dims["west_east"] == 49
    assert dims["south_north"] == 39
    assert dims["west_east_stag"] == 50
    assert dims["south_north_stag"] == 40
    assert dims["num_metgrid_levels"] == 34
    assert dims["num_st_layers"] == 4
    assert dims["z-dimension0021"] == 21
    assert dims["DateStrLen"] == 19


def test_header_attribute_types(tmp_path):
    path = write_met_em_set(_namelist(), tmp_path, num_soil_levels=3)[1]
    with netCDF4.Dataset(path) as data:
        attrs = {name: data.getncattr(name) for name in data.ncattrs()}
        times = netCDF4.chartostring(data.variables["Times"][:])
    assert attrs["WEST-EAST_GRID_DIMENSION"].dtype == np.int32
    assert attrs["BOTTOM-TOP_GRID_DIMENSION"] == 27
    assert attrs["NUM_METGRID_SOIL_LEVELS"] == 3
    assert attrs["FLAG_PSFC"].dtype == np.int32
    assert attrs["DX"].dtype == np.float32
    assert len(attrs["corner_lats"]) == 16
    assert attrs["SIMULATION_START_DATE"] == "2019-09-04_18:00:00"
    assert str(times[0]) == "2019-09-04_18:00:00"


def test_variables_real_reads(tmp_path):
    path = write_met_em_set(_namelist(), tmp_path)[0]
    with netCDF4.Dataset(path) as data:
        variables = data.variables
        assert variables["UU"].dimensions == ("Time", "num_metgrid_levels", "south_north",
                                              "west_east_stag")
        assert variables["VV"].dimensions[-2] == "south_north_stag"
        assert variables["TT"].getncattr("FieldType") == 104
        for name in ("PRES", "GHT", "RH", "ST", "SM", "SOIL_LAYERS", "PSFC", "PMSL",
                     "SKINTEMP", "SOILHGT", "LANDMASK", "XLAT_U", "MAPFAC_V", "LANDUSEF",
                     "GREENFRAC", "ALBEDO12M"):
            assert name in variables, name
        assert float(variables["PSFC"][0, 0, 0]) == 100000.0


def test_default_files_small(tmp_path):
    for path in write_met_em_set(_namelist(), tmp_path):
        assert path.stat().st_size < 256 * 1024


def test_size_request_reached(tmp_path):
    target = 6 * 1024 * 1024
    path = write_met_em_set(_namelist(), tmp_path, size_bytes=target)[0]
    assert abs(path.stat().st_size - target) < 64 * 1024
    with netCDF4.Dataset(path) as data:
        assert "STANDIN_PADDING" in data.variables


def test_cli_writes_files(tmp_path):
    namelist = tmp_path / "namelist.input"
    namelist.write_text(DEFAULT_NAMELIST)
    result = subprocess.run(
        [sys.executable, "-m", "wrfbatch.standin", "metem", "--namelist", str(namelist),
         "--out", str(tmp_path / "met"), "--levels", "30"],
        capture_output=True, text=True, check=True,
    )
    assert len(result.stdout.split()) == 2
    with netCDF4.Dataset(tmp_path / "met" / "met_em.d01.2019-09-04_12:00:00.nc") as data:
        assert data.getncattr("BOTTOM-TOP_GRID_DIMENSION") == 30
