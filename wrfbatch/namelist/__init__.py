"""WRF namelist knowledge: reading, the run window, required inputs and decomposition."""

from .decomposition import factor_tasks, valid_core_counts
from .inputs import met_em_file_name, required_input_files
from .parse import NamelistSummary, read_namelist, summarize

__all__ = [
    "NamelistSummary",
    "factor_tasks",
    "met_em_file_name",
    "read_namelist",
    "required_input_files",
    "summarize",
    "valid_core_counts",
]
