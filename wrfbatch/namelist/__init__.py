"""WRF namelist knowledge: reading, validation, the run window, inputs and decomposition."""

from .decomposition import factor_tasks, stage_problems, valid_core_counts
from .inputs import met_em_file_name, required_input_files
from .metem_check import met_em_problems
from .parse import NamelistSummary, read_namelist, summarize
from .preflight import Preflight, preflight
from .problems import Problem
from .validate import Validation, check_namelist, validate_namelist

__all__ = [
    "NamelistSummary",
    "Preflight",
    "Problem",
    "Validation",
    "check_namelist",
    "factor_tasks",
    "met_em_file_name",
    "met_em_problems",
    "preflight",
    "read_namelist",
    "required_input_files",
    "stage_problems",
    "summarize",
    "valid_core_counts",
    "validate_namelist",
]
