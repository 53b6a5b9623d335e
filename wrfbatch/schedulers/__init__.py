"""Schedulers: Slurm through a transport, or the local scheduler for the embedded default."""

from __future__ import annotations

from pathlib import Path

from ..config import ClusterConfig
from ..errors import ConfigError
from ..transports.base import Transport
from ..transports.local import LocalTransport
from .base import CheckResult, QueryResult, Scheduler
from .local import LocalScheduler
from .slurm import SlurmScheduler, pending_reason_is_final

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


def local_jobs_dir(cluster: ClusterConfig) -> Path:
    """Return the local scheduler's jobs directory of a cluster."""
    return Path(cluster.work_root) / LOCAL_JOBS_DIR_NAME


def make_scheduler(
    cluster: ClusterConfig, transport: Transport, *, jobs_dir: Path | None = None
) -> Scheduler:
    """Create the scheduler that ``cluster.scheduler`` names, using ``transport``.

    ``jobs_dir`` overrides where the local scheduler keeps its job records.
    """
    if cluster.scheduler == "slurm":
        return SlurmScheduler(transport, partition=cluster.partition,
                              accounting=cluster.accounting)
    if not isinstance(transport, LocalTransport):
        raise ConfigError("scheduler 'local' runs jobs on this machine, so it needs "
                          f"transport 'local', not {type(transport).__name__}")
    return LocalScheduler(transport, jobs_dir or local_jobs_dir(cluster))
