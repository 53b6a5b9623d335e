"""A stand-in WRF install whose programs behave like WRF's from outside, for tests and demos.

WRF itself cannot be installed everywhere wrfbatch runs, so its tests and its
embedded local default use these programs instead: real.exe, wrf.exe and
ideal.exe read ``namelist.input``, check inputs, print WRF's log lines into
rsl.out/rsl.error files and write small netCDF outputs.
"""

from .install import install_standin
from .metem import met_em_file_names, write_met_em_set

__all__ = ["install_standin", "met_em_file_names", "write_met_em_set"]
