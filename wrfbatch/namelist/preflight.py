"""The checks that setup makes before a run may start: namelist, inputs and met_em headers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .inputs import required_input_files
from .metem_check import MET_EM_NAME, met_em_problems
from .parse import NamelistSummary
from .validate import validate_namelist

logger = logging.getLogger(__name__)

MAX_NAMES_SHOWN = 3


@dataclass
class Preflight:
    """A namelist that passed validation, the inputs it needs and what is still missing."""

    summary: NamelistSummary
    required: list[str]
    missing: list[str]
    warnings: list[str] = field(default_factory=list)


def preflight(text: str, version: str, flavour: str, input_dir: Path,
              uploaded: set[str]) -> Preflight:
    """Validate a run's namelist and uploaded met_em headers together.

    Raises NamelistError listing every error at once (namelist settings and met_em
    files); warnings and the list of missing inputs are in the result.
    """
    validation = validate_namelist(text, version, flavour)
    summary = validation.summary
    if summary is not None and not summary.ideal:
        met_em = [input_dir / name for name in sorted(uploaded) if MET_EM_NAME.match(name)]
        validation.extend(met_em_problems(summary, met_em))
    validation.raise_for_errors()
    assert summary is not None
    required = required_input_files(summary)
    warnings = [str(problem) for problem in validation.warnings]
    unused = sorted(n for n in uploaded if MET_EM_NAME.match(n) and n not in required)
    if unused and not summary.ideal:
        warnings.append(_unused_message(unused))
    return Preflight(summary, required, [n for n in required if n not in uploaded], warnings)


def _unused_message(unused: list[str]) -> str:
    shown = ", ".join(unused[:MAX_NAMES_SHOWN])
    more = f" and {len(unused) - MAX_NAMES_SHOWN} more" if len(unused) > MAX_NAMES_SHOWN else ""
    return (f"uploaded met_em files that the namelist does not use: {shown}{more}; check "
            "start_*, end_*, interval_seconds and max_dom against the files' dates")
