"""Shared parts of the benchmarks: the testbed, the fault-injection lock and the report."""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

from wrfbatch.config import SSHConfig

TESTBED_ENV = Path(os.environ.get("TESTBED_ENV", "/tmp/testbed/testbed.env"))
# Another session injects faults (stops slurmctld, restarts sshd) while holding this lock.
DISRUPT_LOCK = TESTBED_ENV.parent / ".disrupt.lock"
MiB = 1024 * 1024


@dataclass
class Figure:
    """One measured figure and its target."""

    name: str
    value: float
    unit: str
    target: str
    met: bool | None  # None for a figure without a target (a baseline)

    def line(self) -> str:
        verdict = {True: "MET", False: "MISSED", None: ""}[self.met]
        return f"  {self.name:<52} {self.value:>10.3f} {self.unit:<8} {self.target:<14} {verdict}"


def testbed_env() -> dict[str, str]:
    """Read the testbed's environment file (KEY=value lines)."""
    if not TESTBED_ENV.is_file():
        raise SystemExit(f"{TESTBED_ENV} not found: start the testbed with "
                         "scripts/testbed-start.sh first")
    values = {}
    for line in TESTBED_ENV.read_text().splitlines():
        key, _, value = line.partition("=")
        if key and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def ssh_config(env: dict[str, str]) -> SSHConfig:
    return SSHConfig(host=env["TESTBED_SSH_HOST"], port=int(env["TESTBED_SSH_PORT"]),
                     user=env["TESTBED_SSH_USER"], key_file=Path(env["TESTBED_SSH_KEY"]),
                     known_hosts_file=Path(env["TESTBED_SSH_KNOWN_HOSTS"]))


@contextlib.contextmanager
def no_disruption() -> Iterator[None]:
    """Hold the fault-injection lock, so that no outage happens during a measurement."""
    DISRUPT_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with DISRUPT_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def timed(action: Callable[[], object]) -> float:
    """Return the wall time of ``action`` in seconds."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def machine() -> dict[str, str]:
    """Describe the machine for the benchmark page."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    openssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{memory_kib / 1024 / 1024:.1f} GiB",
        "cpu": cpu,
        "kernel": platform.release(),
        "openssh": openssh,
        "paramiko": paramiko.__version__,
        "python": platform.python_version(),
        "load average at start": Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__(),
    }
