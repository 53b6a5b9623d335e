"""The run lifecycle on the embedded default: local transport, local scheduler, stand-in WRF."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from lifecycle import FINAL, upload_inputs, wait_for
from wrfbatch.errors import ConflictError, InvalidInputError, NotFoundError, PayloadTooLargeError
from wrfbatch.runs import RunManager


@pytest.fixture
def manager(local_settings):
    manager = RunManager(local_settings)
    yield manager
    manager.close()


def ready_run(manager: RunManager, namelist: str, tmp_path: Path, version: str = "3.9",
              standin: dict | None = None, **met_em_options: int) -> str:
    run = manager.create_run("alice", version)
    upload_inputs(manager, run.id, namelist, tmp_path / "inputs", standin, **met_em_options)
    result = manager.setup(run.id)
    assert result.missing_input_files == []
    assert result.run.status == "ready"
    return run.id


@pytest.mark.parametrize("version", ["3.8.1", "3.9"])
def test_lifecycle_to_done(manager, small_namelist, tmp_path, version):
    run_id = ready_run(manager, small_namelist, tmp_path, version)
    started = manager.start(run_id, 1)
    assert started.status in ("starting", "active")
    run = wait_for(manager, run_id, FINAL)
    assert run.status == "done", run.error
    assert run.percent_complete == 100.0
    names = {f.filename for f in run.output_files}
    assert "wrfout_d01_2019-09-04_12:00:00" in names  # frames_per_outfile defaults to 10
    assert "wrfrst_d01_2019-09-04_18:00:00" in names
    assert "wrfinput_d01" in names
    assert run.output_size > 0


def test_setup_lists_missing_met_em(manager, small_namelist, tmp_path):
    run = manager.create_run("alice", "3.9")
    manager.upload(run.id, "namelist.input", io.BytesIO(small_namelist.encode()))
    result = manager.setup(run.id)
    assert result.run.status == "created"
    assert "met_em.d01.2019-09-04_15:00:00.nc" in result.missing_input_files
    assert len(result.required_input_files) == 3


def test_setup_offers_valid_cores(manager, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path)
    cores = [option.cores for option in manager.setup(run_id).compute_options]
    assert cores == [1, 2, 3, 4]


def test_start_before_setup_conflicts(manager, small_namelist):
    run = manager.create_run("alice", "3.9")
    with pytest.raises(ConflictError, match="setup"):
        manager.start(run.id, 1)


def test_unknown_version_lists_valid(manager):
    with pytest.raises(InvalidInputError, match="3.8.1, 3.9"):
        manager.create_run("alice", "4.9")


def test_unknown_run_not_found(manager):
    with pytest.raises(NotFoundError):
        manager.get("0123456789ab")


def test_invalid_cores_rejected(manager, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path)
    with pytest.raises(InvalidInputError, match="exceeds"):
        manager.start(run_id, 64)
    assert manager.get(run_id).status == "ready"


def test_upload_over_limit_keeps_old_file(manager, small_namelist):
    run = manager.create_run("alice", "3.9")
    manager.upload(run.id, "namelist.input", io.BytesIO(small_namelist.encode()))
    with pytest.raises(PayloadTooLargeError):
        manager.upload(run.id, "namelist.input", io.BytesIO(b"x" * 100), max_bytes=10)
    assert manager.uploads.path(run.id, "namelist.input").read_text() == small_namelist


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "a\nb", ".hidden", "x" * 300, ""])
def test_hostile_upload_names_rejected(manager, name):
    run = manager.create_run("alice", "3.9")
    with pytest.raises(InvalidInputError):
        manager.upload(run.id, name, io.BytesIO(b"data"))


def test_stop_while_active_keeps_files(manager, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path,
                       standin={"pace_s_per_model_hour": 20})
    manager.start(run_id, 1)
    wait_for(manager, run_id, {"active"})
    with pytest.raises(ConflictError, match="stop the run first"):
        manager.upload(run_id, "extra.txt", io.BytesIO(b"x"))
    stopped = manager.stop(run_id)
    assert stopped.status == "stopped"
    assert all(job.state in ("CANCELLED", "COMPLETED") for job in stopped.jobs)
    handle = manager.clusters.get("local")
    assert Path(handle.run_dir(run_id), "namelist.input").exists()
    with pytest.raises(ConflictError):
        manager.stop(run_id)


def test_delete_removes_files_keeps_metadata(manager, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path,
                       standin={"pace_s_per_model_hour": 20})
    manager.start(run_id, 1)
    deleted = manager.delete(run_id)
    assert deleted.deleted
    assert deleted.status == "stopped"
    handle = manager.clusters.get("local")
    assert not Path(handle.run_dir(run_id)).exists()
    assert not manager.uploads.run_dir(run_id).exists()
    assert manager.get(run_id).id == run_id


def test_failing_real_stage_names_cause(manager, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path)
    # Setup checked the inputs, so break the staged copy behind its back.
    run_dir = Path(manager.clusters.get("local").run_dir(run_id))
    (run_dir / "met_em.d01.2019-09-04_15:00:00.nc").unlink()
    manager.start(run_id, 1)
    run = wait_for(manager, run_id, FINAL)
    assert run.status == "error"
    assert run.error is not None
    assert run.error.code == "missing_input"
    assert run.error.message.startswith("real stage failed")
    assert "met_em.d01.2019-09-04_15:00:00.nc" in run.error.message
    assert run.stage == "real"
    assert [job.state for job in run.jobs] == ["FAILED", "CANCELLED"]


def test_crash_classified_cfl(manager, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path, standin={"cfl": True})
    manager.start(run_id, 1)
    run = wait_for(manager, run_id, FINAL)
    assert run.status == "error"
    assert run.error is not None
    assert run.error.code == "cfl"


def test_second_attempt_after_error(manager, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path, standin={"cfl": True})
    manager.start(run_id, 1)
    wait_for(manager, run_id, FINAL)
    manager.upload(run_id, "standin.json", io.BytesIO(b"{}"))
    assert manager.setup(run_id).run.status == "ready"
    manager.start(run_id, 1)
    run = wait_for(manager, run_id, FINAL)
    assert run.status == "done", run.error
    assert {job.attempt for job in run.jobs} == {2}
