"""The stand-in WRF as a 4-rank Slurm job on the testbed, under srun (PMIx) and mpirun."""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

from _standin_support import namelist, rsl, run_dir

pytestmark = pytest.mark.cluster

JOB = """#!/bin/bash
#SBATCH --job-name=standin-{name}
#SBATCH --ntasks=4
#SBATCH --time=5
#SBATCH --output=job.out
#SBATCH --error=job.err
export OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_btl_tcp_if_include=lo
export OMPI_MCA_oob_tcp_if_include=lo
{launch} ./real.exe || exit 1
mkdir -p real-logs && cp rsl.* real-logs/
{launch} ./wrf.exe
"""


@pytest.fixture
def cluster_run_dir(testbed, standin_installs):
    if os.geteuid() != 0:
        pytest.skip("writing into the testbed user's home needs root")
    path = Path(testbed.remote_home) / "standin-tests" / uuid.uuid4().hex[:12]
    run_dir(Path(standin_installs["3.9"]), path, namelist(),
            faults={"pace_s_per_model_hour": 0.5})
    yield path
    subprocess.run(["rm", "-rf", "--", str(path)], check=False)


def _submit(testbed, path: Path, launch: str) -> subprocess.CompletedProcess:
    (path / "job.sh").write_text(JOB.format(name=path.name, launch=launch))
    subprocess.run(["chown", "-R", f"{testbed.ssh_user}:", str(path.parent)], check=True)
    remote = f"cd {shlex.quote(str(path))} && sbatch --parsable --wait job.sh"
    return subprocess.run(testbed.ssh_command(remote), capture_output=True, text=True,
                          timeout=240)


def _check_ranks(path: Path) -> None:
    for rank in range(4):
        assert f"taskid: {rank} hostname:" in rsl(path, rank=rank)
        assert (path / f"rsl.error.{rank:04d}").is_file()
        assert rsl(path, rank=rank).splitlines()[-1] == \
            "d01 2019-09-04_18:00:00 wrf: SUCCESS COMPLETE WRF"
        assert "real_em: SUCCESS COMPLETE REAL_EM INIT" in rsl(path / "real-logs", rank=rank)
    assert " Ntasks in X            2 , ntasks in Y            2" in rsl(path)
    assert (path / "wrfout_d01_2019-09-04_18:00:00").is_file()


def test_cluster_srun_pmix(testbed, cluster_run_dir):
    result = _submit(testbed, cluster_run_dir, "srun --mpi=pmix")
    assert result.returncode == 0, result.stderr + _text(cluster_run_dir / "job.err")
    _check_ranks(cluster_run_dir)


def test_cluster_mpirun(testbed, cluster_run_dir):
    result = _submit(testbed, cluster_run_dir, "mpirun -np 4")
    assert result.returncode == 0, result.stderr + _text(cluster_run_dir / "job.err")
    _check_ranks(cluster_run_dir)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""
