"""Validation of a namelist.input for a WRF version and build flavour, all problems at once.

``validate_namelist`` parses the text with f90nml, checks it against the version's
registry (:mod:`.schema`) and the consistency rules (:mod:`.rules`), and returns
every error and warning with the summary that the run lifecycle uses. Callers
raise with :meth:`Validation.raise_for_errors`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import f90nml

from .. import wrftables
from ..errors import NamelistError
from . import rules
from .ideal import is_ideal
from .parse import NamelistSummary, read_namelist, summarize
from .problems import Findings, Problem, error
from .schema import schema_problems

logger = logging.getLogger(__name__)

PHYSICS_SUITE_VERSION = (3, 9)


@dataclass
class Validation(Findings):
    """The problems of a namelist and, when it could be read, its summary."""

    summary: NamelistSummary | None = None
    namelist: f90nml.Namelist | None = field(default=None, repr=False)


def validate_namelist(source: str | f90nml.Namelist, version: str,
                      flavour: str = "plain") -> Validation:
    """Check a namelist (text or parsed) for a WRF version and flavour ('plain' or 'chem').

    Raises NamelistError only when the text is not a Fortran namelist at all, and
    NotFoundError for an unknown version or flavour; every other problem is in the result.
    """
    version = wrftables.resolve_version(version)
    nml = read_namelist(source) if isinstance(source, str) else source
    result = Validation(namelist=nml)
    if "domains" not in nml:
        result.extend([error("domains", "", None, "namelist.input has no &domains group",
                             "add one with max_dom, e_we, e_sn, dx, dy and time_step")])
        return result
    result.extend(schema_problems(nml, version, flavour))
    result.extend(_rule_problems(nml, version, flavour))
    result.summary = _summary(nml, result)
    logger.debug("namelist for WRF %s (%s): %d errors, %d warnings", version, flavour,
                 len(result.errors), len(result.warnings))
    return result


def _rule_problems(nml: f90nml.Namelist, version: str, flavour: str) -> list[Problem]:
    max_dom, problems = rules.max_dom_of(nml)
    real_data = not is_ideal(nml)
    short = rules.count_problems(nml, max_dom, version)
    problems += short
    problems += rules.date_problems(nml, max_dom, real_data)
    if not short:  # nest checks on repeated values would only repeat the count problem
        problems += rules.nest_problems(nml, max_dom, version)
    problems += rules.time_step_problems(nml, version, real_data)
    if rules.version_key(version) >= PHYSICS_SUITE_VERSION:
        problems += rules.physics_suite_problems(nml)
    problems += rules.quilt_problems(nml)
    problems += rules.path_problems(nml, wrftables.namelist_schema(version, flavour))
    return problems


def _summary(nml: f90nml.Namelist, result: Validation) -> NamelistSummary | None:
    """Summarise when the settings the lifecycle reads are usable; else record why not."""
    try:
        return summarize(nml)
    except NamelistError as exc:
        if result.ok:
            result.extend([error("domains", "", None, exc.message, "fix the setting it names")])
    except (TypeError, ValueError) as exc:
        if result.ok:
            result.extend([error("domains", "", None, f"a setting has an unusable value: {exc}",
                                 "fix the types reported for &domains and &time_control")])
    return None


def check_namelist(source: str | f90nml.Namelist, version: str,
                   flavour: str = "plain") -> tuple[NamelistSummary, list[Problem]]:
    """Validate and return (summary, warnings); raise NamelistError listing every error."""
    result = validate_namelist(source, version, flavour)
    result.raise_for_errors()
    assert result.summary is not None
    return result.summary, result.warnings


__all__ = ["Validation", "check_namelist", "validate_namelist"]
