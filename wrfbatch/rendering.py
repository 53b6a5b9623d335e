"""Rendering of batch scripts from Jinja2 templates.

The packaged templates live in ``wrfbatch.templates`` (``batch/<stage>.sh.j2``
with a shared ``batch/base.sh.j2``). A site template directory overrides them
file by file: a file there with the same relative name wins. Every value that
reaches a script is validated here and quoted in the template with the
``shquote`` filter; only the site's ``setup_lines`` are emitted verbatim.
"""

from __future__ import annotations

import logging
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from . import names
from .config import ClusterConfig, LauncherConfig
from .errors import ConfigError, InvalidInputError
from .states import Stage

logger = logging.getLogger(__name__)

#: Directory inside the run directory that contains scripts, state files and job output.
STATE_DIR_NAME = ".wrfbatch"

#: Line that rank 0 of each stage's program prints when it ends successfully.
SUCCESS_LINES: dict[Stage, str] = {
    Stage.REAL: "SUCCESS COMPLETE REAL_EM INIT",
    Stage.IDEAL: "SUCCESS COMPLETE IDEAL INIT",
    Stage.WRF: "SUCCESS COMPLETE WRF",
}

#: Files that wrf.exe of a real-data run needs from the real stage.
REAL_DATA_WRF_INPUTS = ("wrfinput_d01", "wrfbdy_d01")

# #SBATCH lines are read by sbatch, not by a shell, and '%' starts a file name
# pattern there, so paths in them are limited to characters that need no quoting.
_SBATCH_PATH = re.compile(r"^/[A-Za-z0-9_.+/-]*$")
_MODULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./+-]{0,127}$")


def job_name(run_id: str, attempt: int, stage: Stage) -> str:
    """Return the Slurm job name of one stage of one attempt of a run."""
    return f"wrfbatch-{run_id}-a{attempt}-{Stage(stage).value}"


def state_file_path(run_dir: str, stage: Stage) -> str:
    """Return the path of the state file that the stage's batch script writes."""
    return posixpath.join(run_dir, STATE_DIR_NAME, f"{Stage(stage).value}.state")


def script_path(run_dir: str, stage: Stage) -> str:
    """Return the conventional path of a stage's rendered batch script in the run directory."""
    return posixpath.join(run_dir, STATE_DIR_NAME, f"{Stage(stage).value}.sh")


@dataclass
class BatchContext:
    """Everything a stage's batch script needs; validated by :func:`validate_context`.

    ``required_inputs`` lists the files the wrf stage refuses to start without;
    None means wrfinput_d01 and wrfbdy_d01 (a real-data run). An idealized run
    has no wrfbdy_d01, so it passes ``("wrfinput_d01",)``.
    """

    run_id: str
    attempt: int
    stage: Stage
    run_dir: str
    wrf_install_path: str
    ntasks: int
    walltime_min: int
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    modules: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    setup_lines: list[str] = field(default_factory=list)
    required_inputs: tuple[str, ...] | None = None

    @property
    def job_name(self) -> str:
        return job_name(self.run_id, self.attempt, self.stage)

    @classmethod
    def for_cluster(
        cls,
        cluster: ClusterConfig,
        *,
        run_id: str,
        attempt: int,
        stage: Stage,
        run_dir: str,
        wrf_install_path: str,
        ntasks: int,
        walltime_min: int,
        required_inputs: tuple[str, ...] | None = None,
    ) -> BatchContext:
        """Build a context with the cluster's partition, launcher, modules and environment."""
        return cls(
            run_id=run_id,
            attempt=attempt,
            stage=Stage(stage),
            run_dir=run_dir,
            wrf_install_path=wrf_install_path,
            ntasks=ntasks,
            walltime_min=walltime_min,
            partition=cluster.partition,
            account=cluster.account,
            qos=cluster.qos,
            launcher=cluster.launcher,
            modules=list(cluster.modules),
            environment=dict(cluster.environment),
            setup_lines=list(cluster.setup_lines),
            required_inputs=required_inputs,
        )


def validate_context(context: BatchContext) -> None:
    """Raise InvalidInputError naming the first value that may not reach a batch script."""
    names.check_run_id(context.run_id)
    Stage(context.stage)
    _check_positive(context.attempt, "attempt")
    _check_positive(context.ntasks, "ntasks")
    _check_positive(context.walltime_min, "walltime_min")
    _check_sbatch_path(context.run_dir, "run directory")
    names.check_remote_path(context.wrf_install_path, "WRF install path")
    for what in ("partition", "account", "qos"):
        value = getattr(context, what)
        if value is not None:
            names.check_slurm_name(value, what)
    _check_launcher(context.launcher)
    for module in context.modules:
        _check_module_name(module)
    for name, value in context.environment.items():
        names.check_env_name(name)
        names.check_env_value(name, value)
    for name in context.required_inputs or ():
        names.check_file_name(name)
    for line in context.setup_lines:
        if "\n" in line or "\0" in line:
            raise InvalidInputError(f"invalid setup line {line!r}: give one line per entry")


def _check_positive(value: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"invalid {what} {value!r}: give a whole number of at least 1")


def _check_sbatch_path(value: str, what: str) -> None:
    names.check_remote_path(value, what)
    if not _SBATCH_PATH.match(value):
        raise InvalidInputError(
            f"invalid {what} {value!r}: it appears in #SBATCH lines, so use only letters, "
            "digits and '_', '.', '+', '-', '/'"
        )


def _check_module_name(value: str) -> None:
    if not isinstance(value, str) or not _MODULE_NAME.match(value):
        raise InvalidInputError(
            f"invalid module name {value!r}: use letters, digits and '_', '.', '/', '+', '-'"
        )


def _check_launcher(launcher: LauncherConfig) -> None:
    if launcher.mpi_plugin is not None:
        names.check_slurm_name(launcher.mpi_plugin, "MPI plugin")
    for arg in launcher.extra_args:
        if "\n" in arg or "\0" in arg:
            raise InvalidInputError(f"invalid launcher argument {arg!r}: it contains a newline")


class TemplateRenderer:
    """Renders batch scripts from the packaged templates and an optional site directory."""

    def __init__(self, site_dir: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if site_dir is not None:
            if not Path(site_dir).is_dir():
                raise ConfigError(
                    f"template directory {site_dir} does not exist: create it or unset "
                    "service.template_dir"
                )
            loaders.append(jinja2.FileSystemLoader(str(site_dir)))
        loaders.append(jinja2.PackageLoader("wrfbatch.templates", ""))
        self.environment = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.environment.filters["shquote"] = _shquote

    def render(self, template_name: str, values: dict[str, Any]) -> str:
        """Render one template; a missing template or variable raises ConfigError."""
        try:
            return self.environment.get_template(template_name).render(values)
        except jinja2.TemplateNotFound as exc:
            raise ConfigError(f"template {exc.name} not found in the site or packaged "
                              "templates") from exc
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"template {template_name} uses an undefined value: "
                              f"{exc.message}") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"template {exc.name or template_name} line {exc.lineno} "
                              f"has a syntax error: {exc.message}") from exc

    def render_batch_script(self, context: BatchContext) -> str:
        """Validate the context and render the batch script of its stage."""
        validate_context(context)
        stage = Stage(context.stage)
        script = self.render(f"batch/{stage.value}.sh.j2", _template_values(context))
        logger.debug("rendered %s script of run %s attempt %d:\n%s",
                     stage.value, context.run_id, context.attempt, script)
        return script


def render_batch_script(context: BatchContext, site_dir: Path | None = None) -> str:
    """Render the batch script of ``context.stage`` with the packaged (or site) templates."""
    return TemplateRenderer(site_dir).render_batch_script(context)


def _shquote(value: object) -> str:
    return shlex.quote(str(value))


def _template_values(context: BatchContext) -> dict[str, Any]:
    stage = Stage(context.stage)
    required_inputs = context.required_inputs
    if required_inputs is None:
        required_inputs = REAL_DATA_WRF_INPUTS if stage is Stage.WRF else ()
    return {
        "run_id": context.run_id,
        "attempt": context.attempt,
        "stage": stage.value,
        "program": stage.program,
        "success_line": SUCCESS_LINES[stage],
        "job_name": context.job_name,
        "run_dir": context.run_dir,
        "state_dir_name": STATE_DIR_NAME,
        "state_dir": posixpath.join(context.run_dir, STATE_DIR_NAME),
        "log_dir": posixpath.join("logs", stage.value),
        "wrf_install_path": context.wrf_install_path,
        "ntasks": context.ntasks,
        "walltime_min": context.walltime_min,
        "partition": context.partition,
        "account": context.account,
        "qos": context.qos,
        "launcher": context.launcher,
        "modules": context.modules,
        "environment": context.environment,
        "setup_lines": context.setup_lines,
        "required_inputs": required_inputs,
    }
