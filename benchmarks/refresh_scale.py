"""Status at scale: one refresh of 1,000 running runs with held jobs, against squeue per run.

The benchmark submits two held jobs per run (``sbatch --hold``) on the testbed,
writes matching run and job records into a new SQLite store, and times one
cluster refresh. A counting wrapper around the SSH transport counts the remote
commands the refresh sends. The baseline queries the scheduler about each run's
jobs on its own (one ``squeue`` per run) over the same pooled connection. The
held jobs are cancelled at the end.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from wrfbatch.config import ClusterConfig
from wrfbatch.runs.clusters import ClusterHandle
from wrfbatch.runs.refresh import ClusterRefresher
from wrfbatch.schedulers import make_scheduler
from wrfbatch.store import Store
from wrfbatch.store.models import Job, Run
from wrfbatch.transports.base import CommandResult, Transport
from wrfbatch.transports.ssh import SSHTransport

from .common import Figure, no_disruption, ssh_config, testbed_env, timed

RUNS = 1000
JOB_NAME_PREFIX = "wrfb-bench-"


class CountingTransport(Transport):
    """Passes every call to another transport and counts the remote operations."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.host = inner.host
        self.calls: list[str] = []

    def run(self, command: str | Sequence[str], **options: Any) -> CommandResult:
        self.calls.append(self.join(command)[:60])
        return self.inner.run(command, **options)

    def _count(self, name: str) -> None:
        self.calls.append(name)

    def upload(self, *args: Any, **options: Any) -> Any:
        self._count("upload")
        return self.inner.upload(*args, **options)

    def download(self, *args: Any, **options: Any) -> Any:
        self._count("download")
        return self.inner.download(*args, **options)

    def read_bytes(self, *args: Any) -> bytes:
        self._count("read_bytes")
        return self.inner.read_bytes(*args)

    def write_bytes(self, *args: Any) -> None:
        self._count("write_bytes")
        self.inner.write_bytes(*args)

    def list_dir(self, *args: Any) -> Any:
        self._count("list_dir")
        return self.inner.list_dir(*args)

    def exists(self, *args: Any) -> bool:
        self._count("exists")
        return self.inner.exists(*args)

    def make_dirs(self, *args: Any) -> None:
        self._count("make_dirs")
        self.inner.make_dirs(*args)

    def remove_tree(self, *args: Any) -> None:
        self._count("remove_tree")
        self.inner.remove_tree(*args)

    def close(self) -> None:
        self.inner.close()


def run(quick: bool) -> list[Figure]:
    env = testbed_env()
    runs = 100 if quick else RUNS
    cluster = ClusterConfig.model_validate({
        "transport": "ssh", "ssh": ssh_config(env).model_dump(), "scheduler": "slurm",
        "work_root": f"{env['TESTBED_REMOTE_HOME']}/wrfbatch-bench-runs",
        "wrf": {"3.9": {"path": "/opt/wrf/3.9"}},
    })
    transport = SSHTransport(cluster.ssh)
    job_ids: list[str] = []
    try:
        job_ids = _submit_held(transport, 2 * runs)
        with tempfile.TemporaryDirectory(prefix="wrfbatch-bench-refresh-") as directory:
            return _measure(cluster, transport, job_ids, Path(directory), runs)
    finally:
        if job_ids:
            transport.run(["scancel", *job_ids], check=False)
        transport.close()


def _submit_held(transport: SSHTransport, count: int) -> list[str]:
    """Submit ``count`` tiny held jobs in one remote loop; return their ids."""
    script = (f"i=0; while [ $i -lt {count} ]; do sbatch --hold --parsable "
              f"-J {shlex.quote(JOB_NAME_PREFIX)}$i -o /dev/null --wrap true || exit 1; "
              "i=$((i+1)); done")
    output = transport.run(["sh", "-c", script], timeout_s=600).stdout
    return [line.split(";")[0] for line in output.split()]


def _measure(
    cluster: ClusterConfig, transport: SSHTransport, job_ids: list[str], directory: Path,
    runs: int,
) -> list[Figure]:
    with Store(f"sqlite:///{directory / 'bench.db'}") as store:
        _write_records(store, job_ids, runs)
        counting = CountingTransport(transport)
        handle = ClusterHandle("testbed", cluster, counting, make_scheduler(cluster, counting))
        refresher = ClusterRefresher(store, stall_timeout_s=1800)
        with no_disruption():
            first = timed(lambda: refresher.refresh(handle))
            first_commands = len(counting.calls)
            counting.calls.clear()
            second = timed(lambda: refresher.refresh(handle))
            second_commands = len(counting.calls)
            counting.calls.clear()
            baseline = timed(lambda: [handle.scheduler.query(job_ids[i:i + 2])
                                      for i in range(0, len(job_ids), 2)])
        pending = sum(job.slurm_state == "PENDING"
                      for jobs in store.jobs_for_runs({f"{i:012x}": 1 for i in range(runs)})
                      .values() for job in jobs)
    return [
        Figure(f"first-stage jobs stored as PENDING (of {runs})", pending, "", "",
               None),
        Figure(f"refresh of {runs} runs, first (stores 2 job changes per run)", first, "s",
               "< 1", first < 1),
        Figure("remote commands, first refresh", first_commands, "", "<= 3",
               first_commands <= 3),
        Figure(f"refresh of {runs} runs, next (nothing changed)", second, "s", "< 1",
               second < 1),
        Figure("remote commands, next refresh", second_commands, "", "<= 3",
               second_commands <= 3),
        Figure(f"baseline: one squeue per run ({runs} commands)", baseline, "s", "", None),
        Figure("baseline / first refresh time", baseline / first, "x", "", None),
    ]


def _write_records(store: Store, job_ids: list[str], runs: int) -> None:
    """Insert ``runs`` starting runs with two pending jobs each, as submission leaves them."""
    now = datetime.now(UTC)
    run_rows = [{
        "id": f"{index:012x}", "owner": "bench", "run_name": f"bench {index}", "model": "wrf",
        "version": "3.9", "cluster": "testbed", "status": "starting", "attempt": 1,
        "output_files": [], "output_size_bytes": 0, "disk_usage_bytes": 0,
        "required_input_files": [], "time_created": now, "time_updated": now,
        "deleted": False, "row_version": 1,
    } for index in range(runs)]
    job_rows = [{
        "run_id": f"{index // 2:012x}", "attempt": 1, "stage": ("real", "wrf")[index % 2],
        "job_name": f"{JOB_NAME_PREFIX}{index}", "job_id": job_id, "state": "PENDING",
        "slurm_state": "", "time_submitted": now,
    } for index, job_id in enumerate(job_ids)]
    with store.engine.begin() as connection:
        connection.execute(insert(Run), run_rows)
        connection.execute(insert(Job), job_rows)
