"""Run parameters from which wrfbatch renders a namelist.input when none is uploaded."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..rendering import TemplateRenderer

# dx at or below which cumulus parameterisation is switched off (convection-permitting).
CONVECTION_PERMITTING_DX_M = 4000.0


class DomainParams(BaseModel):
    """One domain; a nest's grid distance is its parent's divided by parent_grid_ratio."""

    model_config = ConfigDict(extra="forbid")

    e_we: int = Field(ge=10, le=100_000)
    e_sn: int = Field(ge=10, le=100_000)
    parent_id: int = Field(0, ge=0, le=21)
    i_parent_start: int = Field(1, ge=1)
    j_parent_start: int = Field(1, ge=1)
    parent_grid_ratio: int = Field(1, ge=1, le=10)


class NamelistParams(BaseModel):
    """The settings a user chooses for a real-data run; everything else takes WRF's defaults."""

    model_config = ConfigDict(extra="forbid")

    start: datetime
    end: datetime
    interval_seconds: int = Field(21600, ge=60)
    history_interval_min: int = Field(60, ge=1)
    restart_interval_min: int = Field(1440, ge=1)
    domains: list[DomainParams] = Field(min_length=1, max_length=21)
    e_vert: int = Field(33, ge=5, le=500)
    dx_m: float = Field(gt=0, le=500_000)
    # None: 6 seconds per km of dx on domain 1, WRF's usual upper bound.
    time_step_s: int | None = Field(None, ge=1)
    num_metgrid_levels: int = Field(27, ge=2, le=200)
    num_metgrid_soil_levels: int = Field(4, ge=2, le=20)
    num_land_cat: int = Field(21, ge=1, le=100)
    p_top_requested_pa: float = Field(5000.0, gt=0)
    nocolons: bool = False

    @model_validator(mode="after")
    def _window(self) -> NamelistParams:
        if self.end - self.start < timedelta(seconds=self.interval_seconds):
            raise ValueError(
                f"end ({self.end}) must be at least interval_seconds ({self.interval_seconds}) "
                f"after start ({self.start})")
        for number, domain in enumerate(self.domains[1:], start=2):
            if not 1 <= domain.parent_id < number:
                raise ValueError(f"domain {number} needs parent_id between 1 and {number - 1}")
        return self

    def dx_per_domain(self) -> list[float]:
        values: list[float] = []
        for domain in self.domains:
            parent = values[domain.parent_id - 1] if domain.parent_id else self.dx_m
            values.append(parent / domain.parent_grid_ratio)
        return values


def _fortran(value: Any) -> str:
    if isinstance(value, bool):
        return ".true." if value else ".false."
    if isinstance(value, float):
        return f"{value:g}" if "." in f"{value:g}" or "e" in f"{value:g}" else f"{value:g}."
    return str(value)


def _per_domain(values: list[Any]) -> str:
    return ", ".join(_fortran(v) for v in values)


def _template_values(params: NamelistParams) -> dict[str, Any]:
    count = len(params.domains)
    dx = params.dx_per_domain()
    values: dict[str, Any] = {}
    for prefix, moment in (("start", params.start), ("end", params.end)):
        for part in ("year", "month", "day", "hour", "minute", "second"):
            values[f"{prefix}_{part}"] = _per_domain([getattr(moment, part)] * count)
    attribute = {name: _per_domain([getattr(d, name) for d in params.domains])
                 for name in ("e_we", "e_sn", "parent_id", "i_parent_start", "j_parent_start",
                              "parent_grid_ratio")}
    values.update(attribute)
    values.update(
        interval_seconds=params.interval_seconds,
        input_from_file=_per_domain([True] * count),
        history_interval=_per_domain([params.history_interval_min] * count),
        frames_per_outfile=_per_domain([1] * count),
        restart=".false.",
        restart_interval=params.restart_interval_min,
        nocolons=_fortran(params.nocolons),
        time_step=params.time_step_s or max(int(6 * params.dx_m / 1000), 1),
        max_dom=count,
        e_vert=_per_domain([params.e_vert] * count),
        p_top_requested=_fortran(params.p_top_requested_pa),
        num_metgrid_levels=params.num_metgrid_levels,
        num_metgrid_soil_levels=params.num_metgrid_soil_levels,
        num_land_cat=params.num_land_cat,
        dx=_per_domain([round(v, 3) for v in dx]),
        dy=_per_domain([round(v, 3) for v in dx]),
        grid_id=_per_domain(list(range(1, count + 1))),
        radt=_per_domain([max(int(v / 1000), 1) for v in dx]),
        cu_physics=_per_domain([6 if v > CONVECTION_PERMITTING_DX_M else 0 for v in dx]),
        w_damping=1,
        specified=_per_domain([True] + [False] * (count - 1)),
        nested=_per_domain([False] + [True] * (count - 1)),
    )
    for number in (0, 1, 2, 4, 8, 5000):
        values[f"per_domain_{number}"] = _per_domain([number] * count)
    values["per_domain_02"] = _per_domain([0.2] * count)
    values["per_domain_true"] = _per_domain([True] * count)
    return values


def namelist_template(version: str) -> str:
    """Return the namelist template of a WRF version's family."""
    return "namelist/v4.input.j2" if int(version.split(".")[0]) >= 4 else "namelist/v3.input.j2"


def render_namelist(params: NamelistParams, version: str, renderer: TemplateRenderer) -> str:
    """Render namelist.input for a WRF version from run parameters."""
    return renderer.render(namelist_template(version), _template_values(params))
