"""SSH reuse: 100 small commands over the pooled connection against a new connection each.

The baseline opens a new paramiko connection per command (key exchange,
authentication, one channel), which is what a client without a pool pays. The
pooled figure runs the same commands from 8 threads on one SSHTransport, and
the benchmark counts this process's established connections to sshd meanwhile
(with ``ss``) to show that polling never uses more than one.
"""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

from wrfbatch.transports.ssh import SSHTransport

from .common import Figure, no_disruption, ssh_config, testbed_env, timed

COMMANDS = 100
THREADS = 8


def run(quick: bool) -> list[Figure]:
    config = ssh_config(testbed_env())
    count = 20 if quick else COMMANDS
    with no_disruption():
        fresh = timed(lambda: [_fresh_connection_command(config) for _ in range(count)])
        with SSHTransport(config) as transport:
            transport.run(["true"])  # connect first: the pool exists before polling starts
            seen: list[int] = []
            stop = threading.Event()
            watcher = threading.Thread(target=_watch_connections,
                                       args=(config.port, seen, stop), daemon=True)
            watcher.start()
            with ThreadPoolExecutor(THREADS) as pool:
                pooled = timed(lambda: list(pool.map(
                    lambda _: transport.run(["true"], idempotent=True), range(count))))
            stop.set()
            watcher.join()
    ratio = fresh / pooled
    return [
        Figure(f"{count} commands, new connection each", fresh, "s", "", None),
        Figure(f"{count} commands, pooled connection ({THREADS} threads)", pooled, "s", "",
               None),
        Figure("new connection / pooled time", ratio, "x", ">= 5", ratio >= 5),
        Figure("max connections of this process while polling", max(seen, default=0), "",
               "<= 1", max(seen, default=0) <= 1),
    ]


def _fresh_connection_command(config: object) -> None:
    with SSHTransport(config, ssh_program=None) as transport:  # type: ignore[arg-type]
        transport.run(["true"])


def _watch_connections(port: int, seen: list[int], stop: threading.Event) -> None:
    """Record how many established connections this process has to ``port``, every 20 ms."""
    while not stop.wait(0.02):
        lines = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{port} )"],
                               capture_output=True, text=True, check=True).stdout.splitlines()
        seen.append(sum(f"pid={os.getpid()}," in line for line in lines))
