"""Helpers of the fault, load and secret tests: the disruption lock, daemons and Slurm queries.

Tests that stop a testbed daemon, restart it or fill a disk hold an exclusive
lock on ``<testbed>/.disrupt.lock`` for the length of the outage. Other test
sessions on the same machine can wait for that lock. When the lock is
released, ``scripts/testbed-start.sh`` has brought every daemon back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import PROJECT_ROOT, Testbed

DISRUPT_LOCK_NAME = ".disrupt.lock"


@contextlib.contextmanager
def disrupt_lock(testbed: Testbed) -> Iterator[None]:
    """Hold the testbed's exclusive disruption lock; restore every daemon when leaving."""
    with (testbed.directory / DISRUPT_LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            restore_testbed()
            fcntl.flock(handle, fcntl.LOCK_UN)


def restore_testbed() -> None:
    """Start whatever testbed daemon is down (the start script adopts running ones)."""
    result = subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "testbed-start.sh")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"testbed-start.sh failed:\n{result.stdout}\n{result.stderr}"


def daemon_pid(testbed: Testbed, name: str) -> int:
    """Return the pid of a testbed daemon from its pid file under ``<testbed>/run``."""
    return int((testbed.directory / "run" / f"{name}.pid").read_text().split()[0])


def stop_daemon(testbed: Testbed, name: str, timeout_s: float = 30.0) -> None:
    """Send SIGTERM to a testbed daemon and wait until its process is gone."""
    pid = daemon_pid(testbed, name)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"{name} (pid {pid}) still runs after SIGTERM"
        time.sleep(0.05)


def remote(testbed: Testbed, command: str, check: bool = True) -> str:
    """Run a shell command as the testbed user over OpenSSH; return its output."""
    result = subprocess.run(testbed.ssh_command(command), capture_output=True, text=True,
                            check=check, timeout=60)
    return result.stdout


def slurm_jobs_named(fragment: str) -> list[tuple[str, str]]:
    """Return ``(job id, job name)`` of every job whose name contains ``fragment``.

    Reads the controller's queue (every state it still keeps) and accounting,
    so that a job that has already ended is counted too.
    """
    queue = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%j"],
                           capture_output=True, text=True, check=True).stdout
    accounting = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-a", "-S", "now-1days", "-o", "JobID,JobName"],
        capture_output=True, text=True, check=True).stdout
    jobs = set()
    for line in (queue + accounting).splitlines():
        job_id, _, name = line.strip().partition("|")
        if fragment in name:
            jobs.add((job_id, name))
    return sorted(jobs)
