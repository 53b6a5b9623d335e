"""Shared fixtures: the Slurm/sshd/MPI testbed, stand-in WRF installs and ../shared facts.

Tests marked ``cluster`` use the testbed that ``scripts/testbed-start.sh``
starts; the ``testbed`` fixture starts it when it is not running (that needs
root) and skips with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
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
        """Directory on the cluster side that contains the stand-in WRF installs."""
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


# --- Databases for the store: a SQLite file, and PostgreSQL when one is configured. ---

POSTGRES_URL_ENV = "WRFBATCH_TEST_POSTGRES_URL"


def _configured_postgres_url() -> str | None:
    url = os.environ.get(POSTGRES_URL_ENV)
    env_file = TESTBED_DIR / "postgres.env"
    if not url and env_file.exists():
        url = _read_env_file(env_file).get(POSTGRES_URL_ENV)
    return url or None


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the test PostgreSQL database; skips when none is configured or reachable."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    url = _configured_postgres_url()
    if url is None:
        pytest.skip(f"no PostgreSQL for tests: set {POSTGRES_URL_ENV} or run "
                    "sudo scripts/postgres-start.sh")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.skip(f"PostgreSQL from {POSTGRES_URL_ENV} is unreachable ({exc.orig}); "
                    "run sudo scripts/postgres-start.sh")
    finally:
        engine.dispose()
    return url


@contextlib.contextmanager
def _fresh_schema(base_url: str) -> Iterator[str]:
    """Create a schema in the test PostgreSQL and yield a URL that uses it; drop it after."""
    from uuid import uuid4

    from sqlalchemy import create_engine, make_url, text

    schema = f"test_{uuid4().hex[:12]}"
    engine = create_engine(base_url)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """URL of a fresh, empty schema in the test PostgreSQL, dropped after the test."""
    with _fresh_schema(postgres_url) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database: a SQLite file, or a fresh schema in the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'wrfbatch.db'}"
        return
    with _fresh_schema(request.getfixturevalue("postgres_url")) as url:
        yield url


# ---------------------------------------------------------------------------- lifecycle settings

SMALL_NAMELIST = """\
&time_control
 start_year = 2019, start_month = 9, start_day = 4, start_hour = 12,
 end_year = 2019, end_month = 9, end_day = 4, end_hour = 18,
 interval_seconds = 10800, history_interval = 60, restart_interval = 180,
 input_from_file = .true.,
/
&domains
 time_step = 180, max_dom = 1, e_we = 50, e_sn = 45, e_vert = 30,
 num_metgrid_levels = 27, num_metgrid_soil_levels = 4, dx = 30000, dy = 30000,
/
&physics
 mp_physics = 3, ra_lw_physics = 1, ra_sw_physics = 1, sf_surface_physics = 2,
/
&namelist_quilt
 nio_tasks_per_group = 0, nio_groups = 1,
/
"""


@pytest.fixture
def small_namelist() -> str:
    """A one-domain, 6-hour namelist that every stand-in version accepts."""
    return SMALL_NAMELIST


def _local_cluster(root: Path, versions: tuple[str, ...]) -> dict:
    from wrfbatch.standin.install import install_standin

    wrf = {}
    for version in versions:
        prefix = root / "wrf" / version
        if not (prefix / "main" / "wrf.exe").exists():
            install_standin(prefix, version)
        wrf[version] = {"path": str(prefix)}
    return {
        "transport": "local", "scheduler": "local", "work_root": str(root / "cluster" / "runs"),
        "max_cores": 4, "max_walltime_min": 30,
        "launcher": {"kind": "none", "mpi_plugin": None}, "wrf": wrf,
    }


@pytest.fixture(scope="session")
def local_wrf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding stand-in WRF installs for this machine, shared by the session."""
    return tmp_path_factory.mktemp("local-wrf")


@pytest.fixture
def local_settings(tmp_path: Path, local_wrf_root: Path):
    """Settings of the embedded default kind: SQLite, local transport and local scheduler."""
    from wrfbatch.config import Settings

    cluster = _local_cluster(local_wrf_root, STANDIN_VERSIONS)
    cluster["work_root"] = str(tmp_path / "cluster" / "runs")
    return Settings.model_validate({
        "service": {"data_dir": str(tmp_path / "data"), "poll_interval_s": 0.5},
        "clusters": {"local": cluster},
    })


@pytest.fixture
def testbed_settings(testbed: Testbed, standin_installs: dict[str, str], tmp_path: Path):
    """Settings whose one cluster is the Slurm testbed over SSH, with a fresh work root."""
    from wrfbatch.config import Settings

    work_root = f"{testbed.remote_home}/runs/{tmp_path.name.lower().replace('_', '-')}"
    return Settings.model_validate({
        "service": {"data_dir": str(tmp_path / "data"), "poll_interval_s": 0.5},
        "clusters": {"testbed": {
            "transport": "ssh",
            "ssh": {"host": testbed.ssh_host, "port": testbed.ssh_port,
                    "user": testbed.ssh_user, "key_file": str(testbed.ssh_key),
                    "known_hosts_file": str(testbed.known_hosts)},
            "scheduler": "slurm", "work_root": work_root, "partition": "debug",
            "max_cores": testbed.cpus, "max_walltime_min": 10,
            "launcher": {"kind": "srun", "mpi_plugin": "pmix"},
            "environment": {"OMPI_MCA_mpi_yield_when_idle": "1",
                            "OMPI_MCA_btl_tcp_if_include": "lo",
                            "OMPI_MCA_oob_tcp_if_include": "lo"},
            "wrf": {v: {"path": p} for v, p in standin_installs.items()},
        }},
    })
