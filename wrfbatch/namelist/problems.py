"""One finding of namelist validation, and the collection that validation returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import NamelistError

Severity = Literal["error", "warning"]
MAX_SHOWN_VALUES = 6


def show_value(value: Any) -> str:
    """Return a short Fortran-like rendering of a namelist value for messages."""
    values = value if isinstance(value, list) else [value]
    parts = [_show_one(v) for v in values[:MAX_SHOWN_VALUES]]
    if len(values) > MAX_SHOWN_VALUES:
        parts.append(f"... ({len(values)} values)")
    return ", ".join(parts)


def _show_one(value: Any) -> str:
    if isinstance(value, bool):
        return ".true." if value else ".false."
    if isinstance(value, str):
        return repr(value)
    return "(empty)" if value is None else str(value)


@dataclass(frozen=True)
class Problem:
    """A namelist setting that WRF rejects (error) or that is suspicious (warning)."""

    group: str
    variable: str
    value: str
    rule: str
    fix: str
    severity: Severity = "error"

    def __str__(self) -> str:
        setting = f"&{self.group} {self.variable}" if self.variable else f"&{self.group}"
        shown = f" = {self.value}" if self.value else ""
        return f"{setting}{shown}: {self.rule}; {self.fix}"


def error(group: str, variable: str, value: Any, rule: str, fix: str) -> Problem:
    return Problem(group, variable, show_value(value) if value is not None else "", rule, fix)


def warning(group: str, variable: str, value: Any, rule: str, fix: str) -> Problem:
    return Problem(group, variable, show_value(value) if value is not None else "", rule, fix,
                   "warning")


@dataclass
class Findings:
    """Every problem that validation found, errors and warnings together."""

    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def extend(self, problems: list[Problem]) -> None:
        self.problems.extend(problems)

    def raise_for_errors(self, subject: str = "namelist.input") -> None:
        """Raise NamelistError listing every error at once; do nothing when there are none."""
        errors = self.errors
        if not errors:
            return
        lines = [str(p) for p in errors]
        raise NamelistError(
            f"{subject} has {len(errors)} problem(s) that WRF would stop on:\n  - "
            + "\n  - ".join(lines), lines)
