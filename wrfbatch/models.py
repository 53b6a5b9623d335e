"""Public data models: the run object of the Cloudrun API and the results of lifecycle calls.

These models are what the run lifecycle returns, what the HTTP service
serialises and what the Cloudrun client parses, so all three agree on one
shape. They import nothing but pydantic, so the client stays light.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RunError(_Model):
    """Why a run failed: a short cause code and a message with the hint."""

    code: str = "unknown"
    message: str


class ModelInfo(_Model):
    """The WRF configuration of a run, read from its namelist."""

    name: str = "wrf"
    version: str
    domains: int | None = None
    domain_shape: list[list[int]] | None = Field(
        None, description="[e_we, e_sn] of each domain, in grid points"
    )
    dt: float | None = Field(None, description="time_step of domain 1, in seconds")
    dx: float | None = Field(None, description="grid distance of domain 1, in metres")
    dy: float | None = Field(None, description="grid distance of domain 1, in metres")
    dz: int | None = Field(None, description="number of vertical levels (e_vert)")
    start_time: datetime | None = None
    end_time: datetime | None = None
    output_interval: int | None = Field(None, description="history_interval, in minutes")


class InputFile(_Model):
    """An uploaded input file."""

    fileid: str
    filename: str
    size: int


class OutputFile(_Model):
    """A file that the run wrote in its run directory."""

    filename: str
    size: int


class JobInfo(_Model):
    """One batch job of a run."""

    stage: str
    attempt: int
    job_id: str | None
    job_name: str
    state: str
    reason: str | None = None
    exit_code: int | None = None


class Run(_Model):
    """A WRF run as the Cloudrun API returns it."""

    id: str
    run_name: str | None = None
    status: str
    error: RunError | None = None
    model: ModelInfo
    owner: str | None = None
    cluster: str | None = None
    cores: int | None = None
    input_files: list[InputFile] = Field(default_factory=list)
    output_files: list[OutputFile] = Field(default_factory=list)
    output_size: int = 0
    disk_usage: int = 0
    percent_complete: float | None = None
    remaining_time: float | None = Field(None, description="estimated seconds until done")
    stage: str | None = Field(None, description="stage of the newest job: real, ideal or wrf")
    jobs: list[JobInfo] = Field(default_factory=list)
    warning: str | None = Field(None, description="a problem that has not stopped the run yet")
    deleted: bool = Field(False, description="the run's files are gone; its metadata stays")
    time_created: datetime | None = None
    time_started: datetime | None = None
    time_stopped: datetime | None = None


class ComputeOption(_Model):
    """A core count that the run may start with, and its estimated run time."""

    cores: int
    time: float = Field(description="estimated wall time of the wrf stage, in seconds")


class SetupResult(_Model):
    """Result of setup: the inputs the namelist needs, which are missing, and valid core counts."""

    run: Run
    required_input_files: list[str]
    missing_input_files: list[str]
    compute_options: list[ComputeOption]
    warnings: list[str] = Field(default_factory=list)
