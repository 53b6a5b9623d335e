"""A real wrfbatch service for the API benchmarks: ``wrfbatch serve`` in a subprocess.

The service runs on the embedded default cluster (local scheduler, stand-in
WRF installs under the data directory) on a free loopback port, configured
through ``WRFBATCH_SERVICE__*`` environment variables only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServiceProcess:
    """``python -m wrfbatch.cli serve`` with ``data_dir`` as its data directory."""

    def __init__(self, data_dir: Path, **service: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "service.log"
        self._environment = {
            **os.environ,
            "WRFBATCH_SERVICE__DATA_DIR": str(data_dir),
            **{f"WRFBATCH_SERVICE__{key.upper()}": value for key, value in service.items()},
        }
        self._environment.pop("WRFBATCH_CONFIG", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the service and wait until it responds to HTTP requests."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wrfbatch.cli", "--log-level", "INFO", "serve",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=self._environment,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited at start; see {self.log_path}")
            try:
                httpx.get(f"{self.base_url}/openapi.json", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"the service did not respond within {START_TIMEOUT_S} s; "
                           f"see {self.log_path}")

    def memory_kib(self) -> dict[str, int]:
        """Return the service's VmRSS and VmHWM (peak resident memory) in KiB."""
        assert self.process is not None, "the service is not running"
        values = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return values

    def cpu_s(self) -> float:
        """Return the CPU time (user and system) that the service process has used, in s.

        Job processes of the local scheduler are not included: their supervisors
        detach from the service, so their time never reaches its counters.
        """
        assert self.process is not None, "the service is not running"
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # Fields 14 and 15 of proc(5), utime and stime, in clock ticks.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
