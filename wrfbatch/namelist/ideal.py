"""Telling an idealized run (ideal.exe and input_sounding) from a real-data run (real.exe).

The decision uses the namelist alone, so setup and start, which both read it, always
agree. A namelist is idealized when it names an idealized case (``&ideal ideal_case``,
WRF 4.0+), or when it has none of the settings that only real-data runs need: metgrid
levels, ``interval_seconds`` and specified lateral boundaries. WRF's idealized test
namelists (em_quarter_ss, em_b_wave, ...) have none of these; its real-data namelists
have all of them.
"""

from __future__ import annotations

import f90nml

REAL_DATA_SETTINGS = (
    ("domains", "num_metgrid_levels"),
    ("domains", "num_metgrid_soil_levels"),
    ("time_control", "interval_seconds"),
)
SOUNDING = "input_sounding"


def is_ideal(nml: f90nml.Namelist) -> bool:
    """Return whether a namelist describes an idealized case rather than a real-data run."""
    if nml.get("ideal", {}).get("ideal_case") is not None:
        return True
    if nml.get("bdy_control", {}).get("specified") is True:
        return False
    return not any(name in nml.get(group, {}) for group, name in REAL_DATA_SETTINGS)
