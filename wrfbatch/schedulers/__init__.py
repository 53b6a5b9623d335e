"""Schedulers: Slurm through a transport, or the local scheduler for the embedded default."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import ClusterConfig
    from ..transports.base import Transport
    from .base import CheckResult, QueryResult, Scheduler
    from .local import LocalScheduler
    from .slurm import SlurmScheduler, pending_reason_is_final

# The classes are imported on first use (PEP 562), because every local job starts a
# supervisor process (``python -m wrfbatch.schedulers.local_supervisor``) that imports this
# package first. Importing the transports (paramiko) and the settings (pydantic) here cost
# each job 0.25 s of CPU instead of 0.07 s on the 2-core benchmark machine.
_LAZY_NAMES = {
    "CheckResult": ".base", "QueryResult": ".base", "Scheduler": ".base",
    "LocalScheduler": ".local", "SlurmScheduler": ".slurm", "pending_reason_is_final": ".slurm",
}

__all__ = [
    "CheckResult",
    "LocalScheduler",
    "QueryResult",
    "Scheduler",
    "SlurmScheduler",
    "local_jobs_dir",
    "make_scheduler",
    "pending_reason_is_final",
]

#: Directory under a local cluster's work_root that contains the local scheduler's job records.
#: Run directories are named by run id (lower-case letters and digits), so it cannot clash.
LOCAL_JOBS_DIR_NAME = ".wrfbatch-jobs"


def __getattr__(name: str) -> Any:
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY_NAMES[name], __name__), name)


def local_jobs_dir(cluster: ClusterConfig) -> Path:
    """Return the local scheduler's jobs directory of a cluster."""
    return Path(cluster.work_root) / LOCAL_JOBS_DIR_NAME


def make_scheduler(
    cluster: ClusterConfig, transport: Transport, *, jobs_dir: Path | None = None
) -> Scheduler:
    """Create the scheduler that ``cluster.scheduler`` names, using ``transport``.

    ``jobs_dir`` overrides where the local scheduler keeps its job records.
    """
    from ..transports.local import LocalTransport
    from .local import LocalScheduler
    from .slurm import SlurmScheduler

    if cluster.scheduler == "slurm":
        return SlurmScheduler(transport, partition=cluster.partition,
                              accounting=cluster.accounting)
    if not isinstance(transport, LocalTransport):
        raise ConfigError("scheduler 'local' runs jobs on this machine, so it needs "
                          f"transport 'local', not {type(transport).__name__}")
    return LocalScheduler(transport, jobs_dir or local_jobs_dir(cluster))
