"""The run lifecycle over SSH through the testbed's Slurm, with MPI and the stand-in WRF."""

from __future__ import annotations

import io
import shlex
import subprocess
import time

import pytest

from lifecycle import FINAL, upload_inputs, wait_for
from ssh_support import cut_connections, own_local_ports
from wrfbatch.config import Settings
from wrfbatch.errors import SubmitError
from wrfbatch.runs import RunManager

pytestmark = pytest.mark.cluster


def make_manager(settings: Settings) -> RunManager:
    return RunManager(settings)


@pytest.fixture
def manager(testbed_settings):
    manager = make_manager(testbed_settings)
    yield manager
    manager.close()


def ready_run(manager, namelist, tmp_path, version="3.9", standin=None, **met_em) -> str:
    run = manager.create_run("alice", version)
    upload_inputs(manager, run.id, namelist, tmp_path / "inputs", standin, **met_em)
    assert manager.setup(run.id).run.status == "ready"
    return run.id


def remote(testbed, command: str) -> str:
    return subprocess.run(testbed.ssh_command(command), capture_output=True, text=True,
                          check=True).stdout


def test_staging_records_upload_digest(manager, testbed, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path)
    files = manager.store.get_run(run_id).input_files
    assert all(file.staged for file in files)
    run_dir = manager.clusters.get().run_dir(run_id)
    namelist = next(file for file in files if file.filename == "namelist.input")
    staged = remote(testbed, f"sha256sum {shlex.quote(run_dir)}/namelist.input").split()[0]
    assert staged == namelist.sha256


def test_changed_upload_hashed_again(manager, testbed, small_namelist, tmp_path):
    run = manager.create_run("alice", "3.9")
    upload_inputs(manager, run.id, small_namelist, tmp_path / "inputs")
    extra = manager.upload(run.id, "wrflowinp_d01", io.BytesIO(b"a" * 4096))
    # Changed on the service's disk after the upload: same size, other bytes, later time.
    stored = manager.uploads.path(run.id, "wrflowinp_d01")
    time.sleep(0.01)
    stored.write_bytes(b"b" * 4096)
    manager.setup(run.id)
    record = next(f for f in manager.store.get_run(run.id).input_files
                  if f.filename == extra.filename)
    run_dir = manager.clusters.get().run_dir(run.id)
    staged = remote(testbed, f"sha256sum {shlex.quote(run_dir)}/wrflowinp_d01").split()[0]
    assert record.staged_sha256 == staged
    assert not record.staged


@pytest.mark.parametrize("version", ["3.8.1", "3.9"])
def test_lifecycle_done_with_mpi(manager, testbed, small_namelist, tmp_path, version):
    run_id = ready_run(manager, small_namelist, tmp_path, version)
    manager.start(run_id, 4)
    run = wait_for(manager, run_id, FINAL, timeout_s=240)
    assert run.status == "done", run.error
    assert {job.state for job in run.jobs} == {"COMPLETED"}
    assert run.percent_complete == 100.0
    run_dir = manager.clusters.get().run_dir(run_id)
    listing = remote(testbed, f"ls {shlex.quote(run_dir)} {shlex.quote(run_dir)}/logs/real")
    for rank in range(4):
        assert f"rsl.out.000{rank}" in listing
    assert "wrfrst_d01_2019-09-04_18:00:00" in {f.filename for f in run.output_files}


def test_progress_while_active(manager, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path, standin={"pace_s_per_model_hour": 4})
    manager.start(run_id, 2)
    run = wait_for(manager, run_id, {"active"}, timeout_s=120)
    for _ in range(60):
        time.sleep(1)
        manager.refresh()
        run = manager.get(run_id)
        if run.percent_complete and 0 < run.percent_complete < 100:
            break
    assert 0 < (run.percent_complete or 0) < 100
    assert run.stage == "wrf"
    manager.stop(run_id)


def test_stop_active_cancels_jobs(manager, testbed, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path, standin={"pace_s_per_model_hour": 60})
    manager.start(run_id, 2)
    wait_for(manager, run_id, {"active"}, timeout_s=120)
    stopped = manager.stop(run_id)
    assert stopped.status == "stopped"
    job_ids = [job.job_id for job in stopped.jobs]
    queue = remote(testbed, "squeue -h -t PD,R -o %i")
    assert not set(job_ids) & set(queue.split())


def test_delete_pending_run(manager, testbed, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path)
    # A job that takes every CPU of the node keeps the run's jobs pending.
    blocker = subprocess.run(
        ["sbatch", "--parsable", "-n", str(testbed.cpus), "-J", "test-blocker", "-t", "5",
         "-o", "/dev/null", "--wrap", "sleep 120"],
        capture_output=True, text=True, check=True).stdout.strip()
    try:
        manager.start(run_id, 2)
        manager.refresh()
        assert {job.state for job in manager.get(run_id).jobs} == {"PENDING"}
        run_dir = manager.clusters.get().run_dir(run_id)
        deleted = manager.delete(run_id)
    finally:
        subprocess.run(["scancel", blocker], check=True)
    assert deleted.deleted
    assert remote(testbed, f"test -e {shlex.quote(run_dir)} && echo present || echo gone") \
        .strip() == "gone"
    queue = remote(testbed, "squeue -h -t PD,R -o %j")
    assert run_id not in queue


def test_failing_real_stage(manager, testbed, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path)
    # Setup checked the inputs, so break the staged copy behind its back.
    run_dir = manager.clusters.get().run_dir(run_id)
    remote(testbed, f"rm {shlex.quote(run_dir)}/met_em.d01.2019-09-04_15:00:00.nc")
    manager.start(run_id, 2)
    run = wait_for(manager, run_id, FINAL, timeout_s=120)
    assert run.status == "error"
    assert run.error is not None
    assert run.error.code == "missing_input"
    assert run.jobs[-1].state == "CANCELLED"


def test_rejected_sbatch_keeps_run_ready(testbed_settings, small_namelist, tmp_path):
    testbed_settings.clusters["testbed"].partition = "nosuchpartition"
    manager = make_manager(testbed_settings)
    try:
        run_id = ready_run(manager, small_namelist, tmp_path)
        with pytest.raises(SubmitError, match="partition"):
            manager.start(run_id, 2)
        assert manager.get(run_id).status == "ready"
    finally:
        manager.close()


@pytest.mark.slow
def test_time_limit_reported(testbed_settings, small_namelist, tmp_path):
    testbed_settings.clusters["testbed"].max_walltime_min = 1
    manager = make_manager(testbed_settings)
    try:
        run_id = ready_run(manager, small_namelist, tmp_path, standin={"hang": True})
        manager.start(run_id, 1)
        run = wait_for(manager, run_id, FINAL, timeout_s=240, interval_s=3)
        assert run.status == "error"
        assert run.error is not None
        assert run.error.code == "time_limit"
    finally:
        manager.close()


def test_refresh_after_connection_cut(manager, testbed, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path, standin={"pace_s_per_model_hour": 2})
    manager.start(run_id, 2)
    wait_for(manager, run_id, {"active"}, timeout_s=120)
    cut_connections(testbed.ssh_port)
    run = wait_for(manager, run_id, FINAL, timeout_s=180)
    assert run.status == "done", run.error
    assert len(own_local_ports(testbed.ssh_port)) == 1


def test_upload_while_active_conflicts(manager, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path, standin={"pace_s_per_model_hour": 60})
    manager.start(run_id, 1)
    with pytest.raises(Exception, match="stop the run first"):
        manager.upload(run_id, "late.txt", io.BytesIO(b"x"))
    manager.stop(run_id)


def test_reconcile_finds_jobs_by_name(manager, testbed, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path, standin={"pace_s_per_model_hour": 1})
    started = manager.start(run_id, 1)
    submitted = sorted(job.job_id for job in started.jobs)
    # As if the service died after sbatch but before saving the ids.
    for job in manager.store.jobs_for_run(run_id):
        manager.store.update_job(job.id, {"job_id": None})
    manager.store.update_run(run_id, {"status": "starting"})
    restarted = make_manager(manager.settings)
    try:
        restarted.reconcile()
        assert sorted(job.job_id for job in restarted.get(run_id).jobs) == submitted
        names = remote(testbed, "squeue -h -t all -o %j").split()
        assert len([name for name in names if run_id in name]) == 2
        run = wait_for(restarted, run_id, FINAL, timeout_s=180)
        assert run.status == "done", run.error
    finally:
        restarted.close()
