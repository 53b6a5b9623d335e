"""Helpers for tests that cut this process's SSH connections to the testbed for real."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from wrfbatch.config import SSHConfig


def established(port: int, extra: str = "") -> list[str]:
    """Return ``ss`` lines of established TCP connections to or from ``port``."""
    where = f"( dport = :{port} {extra})" if extra else f"( dport = :{port} )"
    result = subprocess.run(["ss", "-tnpH", "state", "established", where],
                            capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def own_local_ports(port: int) -> list[int]:
    """Return the local ports of this process's connections to ``port``."""
    mine = [line for line in established(port) if f"pid={os.getpid()}," in line]
    return [int(line.split()[2].rsplit(":", 1)[1]) for line in mine]


def cut_connections(port: int) -> None:
    """Kill the sshd processes that serve this process's connections to ``port``."""
    pids: set[int] = set()
    for local_port in own_local_ports(port):
        where = f"( sport = :{port} and dport = :{local_port} )"
        result = subprocess.run(["ss", "-tnpH", "state", "established", where],
                                capture_output=True, text=True, check=True)
        pids.update(int(pid) for pid in re.findall(r"pid=(\d+)", result.stdout))
    assert pids, "no sshd process found for this process's connection"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # it may exit with the other one
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(map(is_running, pids)) and time.monotonic() < deadline:
        time.sleep(0.02)


def is_running(pid: int) -> bool:
    """Return whether a process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def ssh_config(testbed, **overrides: object) -> SSHConfig:
    """Return SSH settings for the testbed user, with ``overrides`` applied."""
    values: dict[str, object] = dict(
        host=testbed.ssh_host, port=testbed.ssh_port, user=testbed.ssh_user,
        key_file=testbed.ssh_key, known_hosts_file=testbed.known_hosts,
    )
    values.update(overrides)
    return SSHConfig(**values)
