"""Checks of the Slurm, sshd and MPI testbed that scripts/testbed-start.sh starts.

One batch job, submitted over SSH as the testbed user, runs a 4-rank mpi4py program under
``srun --mpi=pmix`` and then under ``mpirun``. While the job runs, the tests sample the
listening sockets of the testbed processes with ``ss``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import CLUSTER_PYTHON, PROJECT_ROOT
from conftest import Testbed as ClusterTestbed

pytestmark = pytest.mark.cluster

STATUS_SCRIPT = PROJECT_ROOT / "scripts" / "testbed-status.sh"
RANKS = 4
# Seconds each MPI program keeps its sockets open, so the sampler records the job's listeners.
HOLD_SECONDS = 3
# Seconds to wait for the job, including time pending behind other jobs on the 4 CPUs.
JOB_TIMEOUT = 240
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}

RANKS_PROGRAM = """\
import sys
import time

from mpi4py import MPI

comm = MPI.COMM_WORLD
rank_sum = comm.allreduce(comm.rank)
time.sleep(float(sys.argv[2]))
print(f"{sys.argv[1]} rank {comm.rank} of {comm.size} sum {rank_sum}", flush=True)
"""

JOB_SCRIPT = f"""\
#!/bin/bash
#SBATCH --job-name=testbed-check
#SBATCH --ntasks={RANKS}
#SBATCH --time=2
#SBATCH --output=job.out
set -e
srun --mpi=pmix {CLUSTER_PYTHON} ranks.py srun {HOLD_SECONDS}
mpirun {CLUSTER_PYTHON} ranks.py mpirun {HOLD_SECONDS}
"""


@dataclass(frozen=True)
class Listener:
    """A listening socket from ``ss``: protocol, local address and owning processes."""

    protocol: str
    address: str
    processes: tuple[tuple[str, int], ...]


@dataclass
class JobRun:
    """Outcome of the check job: its id, final state, output and the sockets seen meanwhile."""

    job_id: str
    state: str
    output: str
    listeners: set[Listener] = field(default_factory=set)


def run_remote(testbed: ClusterTestbed, command: str, stdin: str | None = None) -> str:
    """Run ``command`` over SSH as the testbed user and return its standard output."""
    result = subprocess.run(
        testbed.ssh_command(command), input=stdin, capture_output=True, text=True, timeout=60,
    )
    if result.returncode != 0:
        raise AssertionError(f"ssh command {command!r} failed ({result.returncode}): "
                             f"{result.stderr.strip()}")
    return result.stdout


def is_loopback(address: str) -> bool:
    """Whether an ``ss`` local address such as ``[::ffff:127.0.0.1]:80`` is a loopback one."""
    host = address.rpartition(":")[0].strip("[]").split("%")[0]
    if host == "*":
        return False
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def parse_listeners(ss_output: str) -> set[Listener]:
    """Parse ``ss -Hltunp`` lines into listeners; sockets without a visible owner are dropped."""
    listeners = set()
    for line in ss_output.splitlines():
        columns = line.split()
        if len(columns) < 7:
            continue
        owners = re.findall(r'\("([^"]+)",pid=(\d+)', " ".join(columns[6:]))
        processes = tuple((name, int(pid)) for name, pid in owners)
        listeners.add(Listener(columns[0], columns[4], processes))
    return listeners


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def process_parents() -> dict[int, tuple[int, int]]:
    """Map each visible pid to its parent pid and real user id, read from /proc."""
    parents = {}
    for status_file in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status_file.read_text().splitlines())
            parents[int(status_file.parent.name)] = (
                int(fields["PPid"]), int(fields["Uid"].split()[0]),
            )
        except (OSError, KeyError, ValueError):
            continue
    return parents


def owned_pids(testbed: ClusterTestbed) -> set[int]:
    """Pids of the testbed daemons, their descendants and every process of the testbed user."""
    pidfiles = [*testbed.directory.glob("run/*.pid"), testbed.directory / "run/mysql/mysqld.pid"]
    roots = {pid for pid in map(read_pid, pidfiles) if pid is not None}
    user_id = int(subprocess.run(["id", "-u", testbed.ssh_user], capture_output=True,
                                 text=True, check=True).stdout)
    parents = process_parents()
    owned = set()
    for pid, (_, uid) in parents.items():
        chain, current = [], pid
        while current > 1 and current not in roots and current not in owned:
            chain.append(current)
            current = parents.get(current, (0, 0))[0]
        if uid == user_id or current in roots or current in owned:
            owned.update(chain)
    return owned | roots


def owned_listeners(testbed: ClusterTestbed) -> set[Listener]:
    """Listening TCP and UDP sockets that belong to testbed processes."""
    ss_output = subprocess.run(["ss", "-Hltunp"], capture_output=True, text=True,
                               check=True).stdout
    pids = owned_pids(testbed)
    return {item for item in parse_listeners(ss_output)
            if any(pid in pids for _, pid in item.processes)}


def job_state(testbed: ClusterTestbed, job_id: str) -> str:
    return run_remote(testbed, f"squeue -h -t all -j {job_id} -o %T").strip()


def require_socket_owners() -> None:
    if os.geteuid() != 0:
        pytest.skip("ss shows the processes behind other users' sockets only to root")


@pytest.fixture(scope="module")
def remote_dir(testbed: ClusterTestbed) -> Iterator[str]:
    """A temporary directory in the testbed user's home on the cluster side."""
    path = run_remote(testbed, 'mktemp -d "$HOME/pytest-testbed.XXXXXX"').strip()
    yield path
    run_remote(testbed, f"rm -rf -- {shlex.quote(path)}")


@pytest.fixture(scope="module")
def job_run(testbed: ClusterTestbed, remote_dir: str) -> JobRun:
    """Submit the check job with sbatch over SSH, sample listeners until it ends."""
    quoted_dir = shlex.quote(remote_dir)
    run_remote(testbed, f"cat > {quoted_dir}/ranks.py", stdin=RANKS_PROGRAM)
    run_remote(testbed, f"cat > {quoted_dir}/job.sh", stdin=JOB_SCRIPT)
    job_id = run_remote(testbed, f"cd {quoted_dir} && sbatch --parsable job.sh").strip()
    assert job_id.isdigit(), f"sbatch --parsable printed {job_id!r}"
    listeners: set[Listener] = set()
    deadline = time.monotonic() + JOB_TIMEOUT
    state = job_state(testbed, job_id)
    while state not in TERMINAL_STATES and time.monotonic() < deadline:
        if state == "RUNNING" and os.geteuid() == 0:
            listeners |= owned_listeners(testbed)
        time.sleep(0.3 if state == "RUNNING" else 1.0)
        state = job_state(testbed, job_id)
    if state not in TERMINAL_STATES:
        run_remote(testbed, f"scancel {job_id}")
        pytest.fail(f"job {job_id} still {state} after {JOB_TIMEOUT} s; cancelled it")
    output = run_remote(testbed, f"cat {quoted_dir}/job.out")
    return JobRun(job_id, state, output, listeners)


def ranks_reported(output: str, launcher: str) -> set[int]:
    pattern = rf"^{launcher} rank (\d+) of {RANKS} sum {sum(range(RANKS))}$"
    return {int(rank) for rank in re.findall(pattern, output, flags=re.MULTILINE)}


def test_status_reports_all_up(testbed: ClusterTestbed) -> None:
    result = subprocess.run(["bash", str(STATUS_SCRIPT)], capture_output=True, text=True,
                            timeout=60)
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    expected = {"munged", "slurmctld", "slurmd", "sshd"}
    if testbed.slurmdbd:
        expected |= {"mariadbd", "slurmdbd"}
    assert result.returncode == 0, result.stdout
    assert set(lines) == expected
    assert all(state == "ok" for state in lines.values()), result.stdout


def test_status_quiet_prints_nothing(testbed: ClusterTestbed) -> None:
    result = subprocess.run(["bash", str(STATUS_SCRIPT), "--quiet"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout == ""


def test_status_fails_without_env(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(STATUS_SCRIPT)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "TESTBED_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "testbed.env not found" in result.stdout


def test_is_loopback_address_forms() -> None:
    assert is_loopback("127.0.0.1:6817")
    assert is_loopback("[::1]:1024")
    assert is_loopback("[::ffff:127.0.0.1]:40513")
    assert is_loopback("127.0.0.1%lo:53")
    assert not is_loopback("0.0.0.0:6817")
    assert not is_loopback("[::]:1025")
    assert not is_loopback("*:40513")


def test_daemons_listen_on_loopback_only(testbed: ClusterTestbed) -> None:
    require_socket_owners()
    listeners = owned_listeners(testbed)
    owners = {name for listener in listeners for name, _ in listener.processes}
    exposed = sorted((item.address, item.processes) for item in listeners
                     if not is_loopback(item.address))
    assert {"slurmctld", "slurmd", "sshd"} <= owners
    assert exposed == []


def test_mpi_job_listens_on_loopback_only(job_run: JobRun) -> None:
    require_socket_owners()
    job_owners = {name for listener in job_run.listeners for name, _ in listener.processes}
    exposed = sorted((item.address, item.processes) for item in job_run.listeners
                     if not is_loopback(item.address))
    # srun and mpirun open listening sockets while their steps run: seeing none would
    # mean the sampler missed the job, not that the job is safe.
    assert "srun" in job_owners
    assert "mpirun" in job_owners
    assert exposed == []


def test_sbatch_job_completes(job_run: JobRun) -> None:
    assert job_run.state == "COMPLETED", job_run.output


def test_srun_pmix_all_ranks_report(job_run: JobRun) -> None:
    assert ranks_reported(job_run.output, "srun") == set(range(RANKS)), job_run.output


def test_mpirun_all_ranks_report(job_run: JobRun) -> None:
    assert ranks_reported(job_run.output, "mpirun") == set(range(RANKS)), job_run.output


def test_sacct_lists_finished_job(testbed: ClusterTestbed, job_run: JobRun) -> None:
    if not testbed.slurmdbd:
        pytest.skip("testbed runs without slurmdbd (TESTBED_SLURMDBD=0), so sacct is disabled")
    # slurmctld sends the job end to slurmdbd asynchronously, so the record may lag a little.
    command = f"sacct -n -P -X -j {job_run.job_id} -S now-1hour -o JobID,State"
    deadline = time.monotonic() + 20
    record = run_remote(testbed, command).strip()
    while record != f"{job_run.job_id}|COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.5)
        record = run_remote(testbed, command).strip()
    assert record == f"{job_run.job_id}|COMPLETED"
