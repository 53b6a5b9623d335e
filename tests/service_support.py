"""Helpers of the service, client and CLI tests: settings, stand-in installs, live servers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from wrfbatch.cli.demo import write_inputs
from wrfbatch.config import ClusterConfig, ServiceConfig, Settings, WrfInstallConfig
from wrfbatch.config import embedded_cluster
from wrfbatch.standin import install_standin
from wrfbatch.store import Store

VERSIONS = ("3.8.1", "3.9")
FINAL = {"done", "error", "stopped"}


@pytest.fixture(scope="session")
def local_installs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Stand-in WRF installs on this machine, shared by the tests: version -> path."""
    root = tmp_path_factory.mktemp("wrf")
    return {version: str(install_standin(root / version, version)) for version in VERSIONS}


def make_settings(data_dir: Path, installs: dict[str, str], **service: Any) -> Settings:
    """Return settings of the embedded local cluster with the given WRF installs."""
    service.setdefault("poll_interval_s", 0.2)
    service.setdefault("poll_max_backoff_s", 1.0)
    cluster = embedded_cluster(data_dir).model_copy(update={
        "wrf": {version: WrfInstallConfig(path=path) for version, path in installs.items()},
    })
    return Settings(service=ServiceConfig(data_dir=data_dir, **service),
                    clusters={"local": cluster})


def unreachable_cluster(key_dir: Path) -> ClusterConfig:
    """Return an SSH cluster whose address is a closed loopback port."""
    key_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_dir / "key")],
                   check=True, capture_output=True)
    (key_dir / "known_hosts").write_text("")
    return ClusterConfig.model_validate({
        "transport": "ssh",
        "ssh": {"host": "127.0.0.1", "port": free_port(), "user": "nobody",
                "key_file": str(key_dir / "key"),
                "known_hosts_file": str(key_dir / "known_hosts"), "connect_timeout_s": 2},
        "scheduler": "slurm",
        "work_root": "/tmp/wrfbatch-unreachable",
        "wrf": {"3.9": {"path": "/opt/wrf/3.9"}},
    })


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def add_user(store: Store, name: str, is_admin: bool = False) -> str:
    """Create a user and return a new token of it."""
    store.create_user(name, is_admin=is_admin)
    return store.create_token(name, label="test")


def demo_inputs(directory: Path, version: str = "3.9") -> list[Path]:
    """Write a small valid namelist.input and its met_em files."""
    return write_inputs(directory, version)


def _toml_value(value: Any) -> str:
    """Render a JSON-like value as TOML; JSON strings, numbers and booleans are valid TOML."""
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(key)} = {_toml_value(item)}" for key, item in value.items())
        return "{ " + items + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(value)


def settings_toml(settings: Settings) -> str:
    """Render settings as the TOML configuration file that ``wrfbatch --config`` reads."""
    data = settings.model_dump(mode="json", exclude_none=True)
    lines = ["[service]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in data["service"].items()]
    lines += ["", "[clusters]"]
    lines += [f"{name} = {_toml_value(value)}" for name, value in data["clusters"].items()]
    return "\n".join(lines) + "\n"


class LiveServer:
    """``wrfbatch serve`` in a subprocess on a free loopback port."""

    def __init__(self, settings: Settings, config_path: Path, log_level: str = "INFO") -> None:
        self.port = free_port()
        self.log_level = log_level
        settings = settings.model_copy(update={
            "service": settings.service.model_copy(update={"port": self.port})})
        config_path.write_text(settings_toml(settings))
        self.config_path = config_path
        self.settings = settings
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = config_path.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        env = {**os.environ, "WRFBATCH_CONFIG": str(self.config_path)}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wrfbatch.cli", "--log-level", self.log_level, "serve"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()}")
            try:
                httpx.get(f"{self.base_url}/openapi.json", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"server did not start in {timeout_s} s: {self.log_path.read_text()}")

    def rss_peak_kib(self) -> int:
        """Return the server process's peak resident memory (VmHWM) in KiB."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("VmHWM missing from /proc status")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def live_server(settings: Settings, config_path: Path) -> Iterator[LiveServer]:
    """Start a live server, yield it, and stop it afterwards (for fixtures)."""
    server = LiveServer(settings, config_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
