"""Shared fixtures: the Slurm/sshd/MPI testbed, stand-in WRF installs and ../shared facts.

Tests marked ``cluster`` use the testbed that ``scripts/testbed-start.sh``
starts; the ``testbed`` fixture starts it when it is not running (that needs
root) and skips with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("WRFBATCH_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
TESTBED_DIR = Path(os.environ.get("TESTBED_DIR", "/tmp/testbed"))
STANDIN_VERSIONS = ("3.8.1", "3.9")
# Debian's python3 has mpi4py and netCDF4 from apt (scripts/testbed-start.sh installs them).
CLUSTER_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class Testbed:
    """Connection details of the running testbed, read from its testbed.env file."""

    directory: Path
    ssh_host: str
    ssh_port: int
    ssh_user: str
    ssh_key: Path
    known_hosts: Path
    remote_home: str
    slurm_conf: Path
    cpus: int
    partitions: tuple[str, ...]
    slurmdbd: bool

    @property
    def wrf_root(self) -> str:
        """Directory on the cluster side that holds the stand-in WRF installs."""
        return f"{self.remote_home}/wrf"

    def ssh_command(self, remote_command: str) -> list[str]:
        """Return an OpenSSH command line that runs ``remote_command`` as the testbed user."""
        return [
            "ssh", "-p", str(self.ssh_port), "-i", str(self.ssh_key),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
            f"{self.ssh_user}@{self.ssh_host}", remote_command,
        ]


def pytest_configure(config: pytest.Config) -> None:
    # Slurm clients without a config look for a controller in DNS: never let a test do that.
    os.environ.setdefault("SLURM_CONF", str(TESTBED_DIR / "etc" / "slurm.conf"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only WRF facts folder; tests that need it skip when it is absent."""
    if not (SHARED_DIR / "wrf").is_dir():
        pytest.skip(f"WRF facts folder {SHARED_DIR}/wrf is absent; set WRFBATCH_SHARED_DIR")
    return SHARED_DIR


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _testbed_running() -> bool:
    status = PROJECT_ROOT / "scripts" / "testbed-status.sh"
    if not status.exists():
        return (TESTBED_DIR / "testbed.env").exists()
    result = subprocess.run(["bash", str(status), "--quiet"], capture_output=True, text=True)
    return result.returncode == 0


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    """The running testbed, started here when needed (root only)."""
    if not _testbed_running():
        if os.geteuid() != 0:
            pytest.skip("testbed not running and starting it needs root: "
                        "run sudo scripts/testbed-start.sh")
        start = subprocess.run(
            ["bash", str(PROJECT_ROOT / "scripts" / "testbed-start.sh")],
            capture_output=True, text=True, timeout=900,
        )
        if start.returncode != 0:
            pytest.fail(f"scripts/testbed-start.sh failed:\n{start.stdout}\n{start.stderr}")
    env = _read_env_file(TESTBED_DIR / "testbed.env")
    return Testbed(
        directory=TESTBED_DIR,
        ssh_host=env["TESTBED_SSH_HOST"],
        ssh_port=int(env["TESTBED_SSH_PORT"]),
        ssh_user=env["TESTBED_SSH_USER"],
        ssh_key=Path(env["TESTBED_SSH_KEY"]),
        known_hosts=Path(env["TESTBED_SSH_KNOWN_HOSTS"]),
        remote_home=env["TESTBED_REMOTE_HOME"],
        slurm_conf=Path(env["TESTBED_SLURM_CONF"]),
        cpus=int(env["TESTBED_SLURM_CPUS"]),
        partitions=tuple(env["TESTBED_SLURM_PARTITIONS"].split(",")),
        slurmdbd=env.get("TESTBED_SLURMDBD") == "1",
    )


@pytest.fixture(scope="session")
def standin_installs(testbed: Testbed) -> dict[str, str]:
    """Stand-in WRF installs on the cluster side, owned by the testbed user: version -> path."""
    installs = {}
    for version in STANDIN_VERSIONS:
        prefix = f"{testbed.wrf_root}/{version}"
        subprocess.run(
            [sys.executable, "-m", "wrfbatch.standin", "install", "--version", version,
             "--prefix", prefix, "--python", CLUSTER_PYTHON],
            check=True, capture_output=True, text=True,
        )
        installs[version] = prefix
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", f"{testbed.ssh_user}:", testbed.wrf_root], check=True)
    return installs


@pytest.fixture
def mpirun_env() -> dict[str, str]:
    """Environment for running mpirun directly in a test (as root, on loopback only)."""
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun not installed: run scripts/testbed-start.sh to install Open MPI")
    env = dict(os.environ)
    env.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_btl_tcp_if_include="lo",
        OMPI_MCA_oob_tcp_if_include="lo",
        OMPI_MCA_mpi_yield_when_idle="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
    )
    return env
