"""Synthetic met_em files: the names, dimensions, attributes and variables real.exe reads.

The files follow what WPS metgrid writes (netCDF, one time record per file) with
plain synthetic values. By default they are small: zlib-compressed constant fields
in netCDF-4, about 170 KB for a 42 x 42 grid with 27 levels. For staging benchmarks,
``size_bytes`` pads each file with an uncompressed ``STANDIN_PADDING`` variable of
random bytes, written in 4 MiB slices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import f90nml
import netCDF4
import numpy as np

from ..errors import InvalidInputError
from . import program

logger = logging.getLogger(__name__)

PADDING_SLICE = 4 * 1024 * 1024
DEFAULT_LEVELS = 27
DEFAULT_SOIL_LEVELS = 4
DEFAULT_LAND_CATEGORIES = 21
SOIL_CATEGORIES = 16
MONTHS = 12

# name: (stagger, units, description, constant value)
ATMOSPHERE = {
    "PRES": ("M", "Pa", "Pressure", 100000.0),
    "GHT": ("M", "m", "Height", 1000.0),
    "TT": ("M", "K", "Temperature", 280.0),
    "RH": ("M", "%", "Relative Humidity", 60.0),
    "UU": ("U", "m s-1", "U", 5.0),
    "VV": ("V", "m s-1", "V", 2.0),
}
SURFACE = {
    "PSFC": ("Pa", "Surface Pressure", 100000.0),
    "PMSL": ("Pa", "Sea-level Pressure", 101300.0),
    "SKINTEMP": ("K", "Skin temperature", 288.0),
    "SOILHGT": ("m", "Terrain field of source analysis", 100.0),
    "LANDMASK": ("none", "Landmask : 1=land, 0=water", 1.0),
    "HGT_M": ("meters MSL", "Topography height", 100.0),
    "XLAT_M": ("degrees latitude", "Latitude on mass grid", 45.0),
    "XLONG_M": ("degrees longitude", "Longitude on mass grid", 10.0),
    "MAPFAC_M": ("none", "Mapfactor on mass grid", 1.0),
    "F": ("-", "Coriolis F parameter", 1.0e-4),
    "E": ("-", "Coriolis E parameter", 1.0e-4),
    "SINALPHA": ("none", "Sine of rotation angle", 0.0),
    "COSALPHA": ("none", "Cosine of rotation angle", 1.0),
}
STAGGERED_SURFACE = {
    "XLAT_U": ("U", "degrees latitude", "Latitude on U grid", 45.0),
    "XLONG_U": ("U", "degrees longitude", "Longitude on U grid", 10.0),
    "MAPFAC_U": ("U", "none", "Mapfactor on U grid", 1.0),
    "XLAT_V": ("V", "degrees latitude", "Latitude on V grid", 45.0),
    "XLONG_V": ("V", "degrees longitude", "Longitude on V grid", 10.0),
    "MAPFAC_V": ("V", "none", "Mapfactor on V grid", 1.0),
}
FLAGS = ("FLAG_METGRID", "FLAG_PSFC", "FLAG_SLP", "FLAG_SOILHGT", "FLAG_SOIL_LAYERS",
         "FLAG_MF_XY", "FLAG_LAI12M")


def _load_namelist(namelist: Any) -> Mapping[str, Any]:
    if isinstance(namelist, (str, os.PathLike)):
        path = Path(namelist)
        if not path.is_file():
            raise InvalidInputError(f"namelist file {path} not found: give an existing "
                                    "namelist.input")
        return f90nml.read(str(path))
    return namelist


def _setting(nml: Mapping[str, Any], group: str, name: str, domain: int, default: Any) -> Any:
    value = nml.get(group, {}).get(name, default)
    if isinstance(value, list):
        value = value[domain - 1] if domain <= len(value) else value[-1]
    return default if value is None else value


class _Window:
    """The met_em file names and times that a namelist needs."""

    def __init__(self, nml: Mapping[str, Any]) -> None:
        self.nml = nml

    def moment(self, prefix: str, domain: int) -> datetime:
        def get(name: str, default: int) -> int:
            return int(_setting(self.nml, "time_control", f"{prefix}_{name}", domain, default))

        base = datetime(get("year", 2000), get("month", 1), get("day", 1))
        return base + timedelta(hours=get("hour", 0), minutes=get("minute", 0),
                                seconds=get("second", 0))

    def files(self) -> list[tuple[int, datetime, str]]:
        """(domain, valid time, file name) for d01 from start to end and each nest's start."""
        nocolons = bool(_setting(self.nml, "time_control", "nocolons", 1, False))
        interval = int(_setting(self.nml, "time_control", "interval_seconds", 1, 21600))
        if interval <= 0:
            raise InvalidInputError(f"invalid interval_seconds {interval}: it must be positive")
        start, end = self.moment("start", 1), self.moment("end", 1)
        if end < start:
            raise InvalidInputError(f"end time {program.wrf_date(end)} is before start time "
                                    f"{program.wrf_date(start)}: fix end_* in &time_control")
        step = timedelta(seconds=interval)
        count = int((end - start) / step) + 1
        moments = [(1, start + k * step) for k in range(count)]
        max_dom = int(_setting(self.nml, "domains", "max_dom", 1, 1))
        moments += [(domain, self.moment("start", domain)) for domain in range(2, max_dom + 1)
                    if bool(_setting(self.nml, "time_control", "input_from_file", domain, True))]
        return [(d, t, _met_em_name(d, t, nocolons)) for d, t in moments]


def _met_em_name(domain: int, moment: datetime, nocolons: bool) -> str:
    name = f"met_em.d{domain:02d}.{program.wrf_date(moment)}.nc"
    return name.replace(":", "_") if nocolons else name


def met_em_file_names(namelist: Any) -> list[str]:
    """Return the met_em file names real.exe opens for a namelist (path or mapping)."""
    return [name for _, _, name in _Window(_load_namelist(namelist)).files()]


def write_met_em_set(
    namelist: Any,
    out_dir: str | os.PathLike[str],
    *,
    num_metgrid_levels: int | None = None,
    num_soil_levels: int | None = None,
    size_bytes: int | None = None,
) -> list[Path]:
    """Write the met_em files a namelist (path or f90nml mapping) needs into ``out_dir``.

    Levels default to the namelist's num_metgrid_levels and num_metgrid_soil_levels;
    other values make files that real.exe rejects. ``size_bytes`` sets an approximate
    size per file. Returns the paths written.
    """
    nml = _load_namelist(namelist)
    levels = num_metgrid_levels or int(_setting(nml, "domains", "num_metgrid_levels", 1,
                                                DEFAULT_LEVELS))
    soil = num_soil_levels or int(_setting(nml, "domains", "num_metgrid_soil_levels", 1,
                                           DEFAULT_SOIL_LEVELS))
    if levels < 2 or soil < 1 or (size_bytes is not None and size_bytes < 0):
        raise InvalidInputError(f"invalid met_em size: levels {levels} (at least 2), soil "
                                f"levels {soil} (at least 1), size {size_bytes} bytes")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for domain, moment, name in _Window(nml).files():
        path = out / name
        grid = _Grid.from_namelist(nml, domain, levels, soil)
        _write_file(path, grid, moment)
        if size_bytes:
            _pad_to(path, size_bytes)
        paths.append(path)
    logger.info("wrote %d met_em files to %s", len(paths), out)
    return paths


class _Grid:
    """Dimensions and global attributes of one domain's met_em files."""

    def __init__(self, attrs: dict[str, Any], dims: dict[str, int]) -> None:
        self.attrs, self.dims = attrs, dims

    @classmethod
    def from_namelist(cls, nml: Mapping[str, Any], domain: int, levels: int,
                      soil: int) -> _Grid:
        def dom(name: str, default: Any) -> Any:
            return _setting(nml, "domains", name, domain, default)

        e_we, e_sn = int(dom("e_we", 42)), int(dom("e_sn", 42))
        land = int(_setting(nml, "physics", "num_land_cat", 1, DEFAULT_LAND_CATEGORIES))
        dx = float(_setting(nml, "domains", "dx", 1, 30000.0)) / _ratio(nml, domain)
        dims = {"DateStrLen": 19, "west_east": e_we - 1, "south_north": e_sn - 1,
                "west_east_stag": e_we, "south_north_stag": e_sn,
                "num_metgrid_levels": levels, "num_st_layers": soil, "num_sm_layers": soil,
                f"z-dimension{land:04d}": land, f"z-dimension{SOIL_CATEGORIES:04d}":
                SOIL_CATEGORIES, f"z-dimension{MONTHS:04d}": MONTHS}
        ratio = int(dom("parent_grid_ratio", 1))
        i_start, j_start = int(dom("i_parent_start", 1)), int(dom("j_parent_start", 1))
        ints = {
            "WEST-EAST_GRID_DIMENSION": e_we, "SOUTH-NORTH_GRID_DIMENSION": e_sn,
            "BOTTOM-TOP_GRID_DIMENSION": levels, "DYN_OPT": 2, "MAP_PROJ": 1,
            "NUM_LAND_CAT": land, "ISWATER": 17, "ISLAKE": 21, "ISICE": 15, "ISURBAN": 13,
            "ISOILWATER": 14, "grid_id": domain, "parent_id": int(dom("parent_id", 0)),
            "i_parent_start": i_start, "j_parent_start": j_start,
            "i_parent_end": i_start + (e_we - 1) // max(ratio, 1),
            "j_parent_end": j_start + (e_sn - 1) // max(ratio, 1),
            "parent_grid_ratio": ratio, "sr_x": 1, "sr_y": 1,
            "NUM_METGRID_SOIL_LEVELS": soil, "FLAG_EXCLUDED_MIDDLE": 0,
            **{flag: 1 for flag in FLAGS},
        }
        floats = {"DX": dx, "DY": dx, "CEN_LAT": 45.0, "CEN_LON": 10.0, "TRUELAT1": 30.0,
                  "TRUELAT2": 60.0, "MOAD_CEN_LAT": 45.0, "STAND_LON": 10.0,
                  "POLE_LAT": 90.0, "POLE_LON": 0.0}
        attrs: dict[str, Any] = {"TITLE": "OUTPUT FROM METGRID V4.6.0", "GRIDTYPE": "C",
                                 "MMINLU": "MODIFIED_IGBP_MODIS_NOAH"}
        attrs.update({key: np.int32(value) for key, value in ints.items()})
        attrs.update({key: np.float32(value) for key, value in floats.items()})
        attrs["corner_lats"] = np.full(16, 45.0, dtype=np.float32)
        attrs["corner_lons"] = np.full(16, 10.0, dtype=np.float32)
        return cls(attrs, dims)

    def land_dim(self) -> str:
        return f"z-dimension{int(self.attrs['NUM_LAND_CAT']):04d}"


def _ratio(nml: Mapping[str, Any], domain: int) -> int:
    ratio = 1
    while domain > 1:
        ratio *= int(_setting(nml, "domains", "parent_grid_ratio", domain, 1))
        domain = int(_setting(nml, "domains", "parent_id", domain, 1))
    return max(ratio, 1)


def _horizontal(stagger: str) -> tuple[str, str]:
    if stagger == "U":
        return "south_north", "west_east_stag"
    if stagger == "V":
        return "south_north_stag", "west_east"
    return "south_north", "west_east"


def _write_file(path: Path, grid: _Grid, moment: datetime) -> None:
    with netCDF4.Dataset(path, "w", format="NETCDF4") as data:
        data.createDimension("Time", None)
        for name, size in grid.dims.items():
            data.createDimension(name, size)
        times = data.createVariable("Times", "S1", ("Time", "DateStrLen"))
        times[0, :] = netCDF4.stringtochar(np.array([program.wrf_date(moment)], "S19"))
        for name, value in grid.attrs.items():
            data.setncattr(name, value)
        data.setncattr("SIMULATION_START_DATE", program.wrf_date(moment))
        _write_fields(data, grid)


def _write_fields(data: Any, grid: _Grid) -> None:
    for name, (stagger, units, description, value) in ATMOSPHERE.items():
        _field(data, name, ("num_metgrid_levels", *_horizontal(stagger)), stagger, units,
               description, value)
    for name, (units, description, value) in SURFACE.items():
        _field(data, name, _horizontal("M"), "M", units, description, value)
    for name, (stagger, units, description, value) in STAGGERED_SURFACE.items():
        _field(data, name, _horizontal(stagger), stagger, units, description, value)
    for name, level, units, description, value in (
        ("ST", "num_st_layers", "K", "Soil temperature", 285.0),
        ("SM", "num_sm_layers", "m3 m-3", "Soil moisture", 0.3),
        ("SOIL_LAYERS", "num_st_layers", "cm", "Soil layer depths", 10.0),
        ("LANDUSEF", grid.land_dim(), "category", "Noah-modified land use categories", 0.0),
        ("SOILCTOP", f"z-dimension{SOIL_CATEGORIES:04d}", "category", "16-category top-layer "
         "soil type", 0.0),
        ("SOILCBOT", f"z-dimension{SOIL_CATEGORIES:04d}", "category", "16-category "
         "bottom-layer soil type", 0.0),
        ("GREENFRAC", f"z-dimension{MONTHS:04d}", "fraction", "MODIS FPAR", 0.5),
        ("ALBEDO12M", f"z-dimension{MONTHS:04d}", "%", "Monthly surface albedo", 15.0),
    ):
        _field(data, name, (level, *_horizontal("M")), "M", units, description, value)


def _field(data: Any, name: str, dims: tuple[str, ...], stagger: str, units: str,
           description: str, value: float) -> None:
    """Create a float field on (Time, *dims) filled with a constant, one level at a time."""
    var = data.createVariable(name, "f4", ("Time", *dims), zlib=True, complevel=1)
    var.setncattr("FieldType", np.int32(104))
    var.setncattr("MemoryOrder", "XYZ" if len(dims) == 3 else "XY ")
    var.setncattr("units", units)
    var.setncattr("description", description)
    var.setncattr("stagger", stagger)
    shape = [len(data.dimensions[dim]) for dim in dims]
    plane = np.full(shape[-2:], value, dtype=np.float32)
    if len(dims) == 2:
        var[0, :, :] = plane
        return
    for level in range(shape[0]):
        var[0, level, :, :] = plane


def _pad_to(path: Path, size_bytes: int) -> None:
    """Append an uncompressed random-byte variable so the file reaches about size_bytes."""
    missing = size_bytes - path.stat().st_size
    if missing <= 0:
        return
    block = np.frombuffer(os.urandom(PADDING_SLICE), dtype=np.int8)
    with netCDF4.Dataset(path, "a") as data:
        data.createDimension("standin_padding_bytes", missing)
        var = data.createVariable("STANDIN_PADDING", "i1", ("standin_padding_bytes",),
                                  contiguous=True)
        var.setncattr("description", "filler bytes of the synthetic met_em file; real.exe "
                                     "ignores this variable")
        for offset in range(0, missing, PADDING_SLICE):
            count = min(PADDING_SLICE, missing - offset)
            var[offset:offset + count] = block[:count]
