"""Configuration: clusters, WRF installs and service settings.

Settings are read from a TOML file and then from environment variables that
start with ``WRFBATCH_``. Nested keys are joined with ``__``, so
``WRFBATCH_SERVICE__PORT=9000`` overrides ``[service] port`` and
``WRFBATCH_CLUSTERS__HPC__PARTITION=debug`` overrides ``[clusters.hpc] partition``.
Without a file, the embedded default applies: one cluster named ``local`` that
runs jobs on this machine with the local transport and scheduler.

An invalid setting raises :class:`~wrfbatch.errors.ConfigError` at load time,
naming the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import names
from .errors import ConfigError, InvalidInputError

ENV_PREFIX = "WRFBATCH_"
CONFIG_ENV = "WRFBATCH_CONFIG"
_CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _checked(check: Any, *args: Any) -> Any:
    """Run a check from :mod:`names` so that pydantic reports its failure with the key."""
    try:
        return check(*args)
    except InvalidInputError as exc:
        raise ValueError(str(exc)) from exc


def default_data_dir() -> Path:
    """Return ``$XDG_DATA_HOME/wrfbatch``, or ``~/.local/share/wrfbatch``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "wrfbatch"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SSHConfig(_Model):
    """How to reach a cluster's login node over SSH. Unknown host keys are rejected."""

    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str
    key_file: Path
    known_hosts_file: Path
    connect_timeout_s: float = Field(10.0, gt=0)
    keepalive_interval_s: int = Field(15, ge=0)
    # OpenSSH's sshd allows 10 sessions per connection (MaxSessions) by default.
    max_channels: int = Field(8, ge=1, le=64)
    # Hash each transferred file on the cluster too and compare it with the local SHA-256.
    # Off by default: SSH's authenticated encryption already rejects bytes altered in transit,
    # and the second hash made transfers 1.3 to 1.8 times slower than scp where client and
    # sshd share the CPUs (see the SSH transport's module docstring).
    verify_remote_sha256: bool = False

    @field_validator("host", "user")
    @classmethod
    def _no_shell_syntax(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.:@%-]+$", value):
            raise ValueError("use letters, digits, '.', '-', '_' (and ':' for IPv6 addresses)")
        return value


class LauncherConfig(_Model):
    """The command that starts the MPI ranks of a WRF program inside a job."""

    kind: Literal["srun", "mpirun", "none"] = "srun"
    # srun --mpi=<plugin>; None leaves Slurm's MpiDefault in force.
    mpi_plugin: str | None = "pmix"
    extra_args: list[str] = Field(default_factory=list)

    @field_validator("mpi_plugin")
    @classmethod
    def _plugin_name(cls, value: str | None) -> str | None:
        if value is not None:
            _checked(names.check_slurm_name, value, "MPI plugin")
        return value

    @field_validator("extra_args")
    @classmethod
    def _one_line_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            if "\n" in arg or "\0" in arg:
                raise ValueError(f"launcher argument {arg!r} contains a newline or NUL")
        return value


class WrfInstallConfig(_Model):
    """One WRF build on the cluster: the directory that contains ``main/`` and ``run/``."""

    path: str
    flavour: Literal["plain", "chem"] = "plain"

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _checked(names.check_remote_path, value, "WRF install path")


class ClusterConfig(_Model):
    """A cluster that runs WRF: how to reach it, how to submit, and its WRF installs."""

    transport: Literal["ssh", "local"] = "ssh"
    ssh: SSHConfig | None = None
    scheduler: Literal["slurm", "local"] = "slurm"
    work_root: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    max_walltime_min: int = Field(60, ge=1)
    max_cores: int = Field(4, ge=1)
    # MPI tasks for real.exe; None uses the run's core count (real.exe rarely needs as many).
    real_cores: int | None = Field(None, ge=1)
    launcher: LauncherConfig = Field(default_factory=LauncherConfig)
    modules: list[str] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    # Shell lines a site adds before the launcher runs (trusted: written by the sysadmin).
    setup_lines: list[str] = Field(default_factory=list)
    accounting: Literal["auto", "sacct", "none"] = "auto"
    wrf: dict[str, WrfInstallConfig] = Field(default_factory=dict)

    @field_validator("work_root")
    @classmethod
    def _work_root(cls, value: str) -> str:
        return _checked(names.check_remote_path, value, "work_root")

    @field_validator("partition", "account", "qos")
    @classmethod
    def _slurm_names(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            _checked(names.check_slurm_name, value, info.field_name)
        return value

    @field_validator("modules")
    @classmethod
    def _module_names(cls, value: list[str]) -> list[str]:
        for module in value:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_./+-]{0,127}$", module):
                raise ValueError(f"module name {module!r} may use letters, digits, '_./+-'")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            _checked(names.check_env_name, key)
            _checked(names.check_env_value, key, item)
        return value

    @field_validator("wrf")
    @classmethod
    def _versions(cls, value: dict[str, WrfInstallConfig]) -> dict[str, WrfInstallConfig]:
        for version in value:
            _checked(names.check_version, version)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        if self.transport == "ssh" and self.ssh is None:
            raise ValueError("transport 'ssh' needs an [ssh] table with host, user, key_file "
                             "and known_hosts_file")
        if self.scheduler == "local" and self.transport != "local":
            raise ValueError("scheduler 'local' runs jobs on this machine, so it needs "
                             "transport 'local'")
        return self


class ServiceConfig(_Model):
    """Settings of the HTTP service and of the data it keeps on this machine."""

    data_dir: Path = Field(default_factory=default_data_dir)
    # SQLAlchemy URL; None means a SQLite file in data_dir.
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    max_upload_bytes: int = Field(20 * 1024**3, ge=1)
    upload_chunk_bytes: int = Field(1024**2, ge=4096)
    poll_interval_s: float = Field(5.0, gt=0)
    poll_max_backoff_s: float = Field(300.0, gt=0)
    # A running job whose rank-0 log has not grown for this long is reported as stalled.
    stall_timeout_s: float = Field(1800.0, gt=0)
    rate_limit_requests: int = Field(1200, ge=1)
    rate_limit_window_s: int = Field(60, ge=1)
    template_dir: Path | None = None
    default_cluster: str | None = None

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'wrfbatch.db'}"


class Settings(_Model):
    """Everything wrfbatch reads from its configuration."""

    service: ServiceConfig = Field(default_factory=ServiceConfig)
    clusters: dict[str, ClusterConfig] = Field(default_factory=dict)

    @field_validator("clusters")
    @classmethod
    def _cluster_names(cls, value: dict[str, ClusterConfig]) -> dict[str, ClusterConfig]:
        for name in value:
            if not _CLUSTER_NAME.match(name):
                raise ValueError(f"cluster name {name!r} must be 1 to 32 lower-case letters, "
                                 "digits, '_' or '-', starting with a letter")
        return value

    @model_validator(mode="after")
    def _default_cluster(self) -> Settings:
        default = self.service.default_cluster
        if default is not None and default not in self.clusters:
            raise ValueError(f"service.default_cluster {default!r} is not one of the configured "
                             f"clusters: {sorted(self.clusters) or 'none'}")
        return self

    def cluster(self, name: str | None = None) -> tuple[str, ClusterConfig]:
        """Return the named cluster, or the default one, with its name."""
        name = name or self.service.default_cluster or next(iter(self.clusters), None)
        if name is None or name not in self.clusters:
            raise ConfigError(f"cluster {name!r} is not configured; configured clusters: "
                              f"{', '.join(sorted(self.clusters)) or 'none'}")
        return name, self.clusters[name]


def embedded_cluster(data_dir: Path) -> ClusterConfig:
    """Return the embedded default cluster: jobs run on this machine under ``data_dir``.

    Its WRF installs are stand-in installs under ``data_dir/wrf/<version>``,
    created by ``wrfbatch demo`` or ``wrfbatch-standin install``.
    """
    wrf_root = data_dir / "wrf"
    return ClusterConfig(
        transport="local",
        scheduler="local",
        work_root=str(data_dir / "cluster" / "runs"),
        # Without an MPI launcher every program runs as one process, so one core is all
        # that the embedded default can honestly offer.
        max_cores=1,
        max_walltime_min=24 * 60,
        launcher=LauncherConfig(kind="none", mpi_plugin=None),
        wrf={v: WrfInstallConfig(path=str(wrf_root / v)) for v in ("3.8.1", "3.9")},
    )


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Load settings from a TOML file (or ``$WRFBATCH_CONFIG``) and the environment.

    With neither a file nor clusters in the environment, the embedded default
    cluster ``local`` is configured.
    """
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    if path:
        data = _read_toml(Path(path))
    _merge(data, _env_overrides(env))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, path)) from exc
    if not settings.clusters:
        settings.clusters = {"local": embedded_cluster(settings.service.data_dir)}
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} not found; create it, or name another "
                          f"file with --config or {CONFIG_ENV}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``WRFBATCH_A__B=v`` variables into ``{"a": {"b": v}}``."""
    overrides: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV or "__" not in key:
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX):].split("__")]
        node = overrides
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_env_value(value)
    return overrides


def _parse_env_value(value: str) -> Any:
    """Read JSON-looking values (lists, tables) as JSON; leave the rest as text for pydantic."""
    import json

    if value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _where(path: object) -> str:
    return f" in {path}" if path else ""


def _unknown_key_message(location: tuple[Any, ...]) -> str:
    """Suggest the nearest valid key for a misspelt one."""
    annotation: Any = Settings
    for part in location[:-1]:
        annotation = _child_annotation(annotation, str(part))
    model = _model_in(annotation)
    valid = sorted(model.model_fields) if model else []
    close = difflib.get_close_matches(str(location[-1]), valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {hint}the settings are listed in docs/configuration.md"


def _child_annotation(annotation: Any, part: str) -> Any:
    """Return the annotation one level down: a dict's value type, or a model field's type."""
    if typing.get_origin(annotation) is dict:
        return typing.get_args(annotation)[1]
    model = _model_in(annotation)
    field = model.model_fields.get(part) if model else None
    return field.annotation if field else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """Return the settings model inside an annotation such as ``SSHConfig | None``."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _describe_validation_error(exc: ValidationError, path: object) -> str:
    lines = [f"invalid configuration{_where(path)}:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = _unknown_key_message(error["loc"])
        value = error.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        lines.append(f"  {key}{shown}: {message}")
    return "\n".join(lines)
