"""Faults on the Slurm testbed: cut connections, stopped daemons, a killed service and job.

Each test disrupts real components. Tests that stop or restart a daemon, fill
a disk or replace a command hold the testbed's disruption lock and restore
the testbed before they release it (see ``fault_support``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from fault_support import disrupt_lock, slurm_jobs_named, stop_daemon
from lifecycle import FINAL, upload_inputs, wait_for
from service_support import LiveServer, add_user, demo_inputs
from ssh_support import cut_connections

from wrfbatch.config import Settings
from wrfbatch.errors import TransportError
from wrfbatch.runs import RunManager
from wrfbatch.service import create_app
from wrfbatch.service.poller import Poller
from wrfbatch.store import Store

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(os.geteuid() != 0, reason="the faults need root: they signal daemons"),
]

MiB = 1024 * 1024
# Order in which a run's states may follow each other without a fault.
STATE_ORDER = ["ready", "starting", "active", "done"]


@pytest.fixture
def manager(testbed_settings: Settings) -> Iterator[RunManager]:
    manager = RunManager(testbed_settings)
    yield manager
    manager.close()


def ready_run(manager: RunManager, namelist: str, directory: Path,
              standin: dict | None = None) -> str:
    run = manager.create_run("alice", "3.9")
    upload_inputs(manager, run.id, namelist, directory / run.id, standin)
    assert manager.setup(run.id).run.status == "ready"
    return run.id


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class StateRecorder:
    """Records every distinct state a run passes through, sampled from the store in a thread."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.states: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            state = self.store.get_run(self.run_id).status.value
            if not self.states or self.states[-1] != state:
                self.states.append(state)
            time.sleep(0.05)

    def __enter__(self) -> StateRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)


# ---------------------------------------------------------------------- SSH faults


def test_staging_resumes_after_cut(manager, testbed, small_namelist, tmp_path):
    run = manager.create_run("alice", "3.9")
    upload_inputs(manager, run.id, small_namelist, tmp_path / "inputs")
    big = tmp_path / "inputs" / "wrflowinp_d01"
    big.write_bytes(os.urandom(48 * MiB))
    with big.open("rb") as handle:
        manager.upload(run.id, big.name, handle)
    run_dir = Path(manager.clusters.get().run_dir(run.id))
    cut_at: list[int] = []

    def cut_when_partial_grows() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            partial = [p for p in run_dir.glob(".wrflowinp_d01.*.part")
                       if p.stat().st_size > 8 * MiB]
            if partial:
                cut_at.append(partial[0].stat().st_size)
                cut_connections(testbed.ssh_port)
                return
            time.sleep(0.01)

    cutter = threading.Thread(target=cut_when_partial_grows)
    cutter.start()
    setup = manager.setup(run.id)
    cutter.join()
    assert cut_at, "the upload ended before the connection could be cut"
    assert setup.run.status == "ready"
    staged = {f.filename: f for f in manager.store.get_run(run.id).input_files}
    assert staged["wrflowinp_d01"].staged_sha256 == file_sha256(big)
    assert file_sha256(run_dir / "wrflowinp_d01") == file_sha256(big)
    assert list(run_dir.glob(".*.part")) == []


def test_sshd_restart_while_polling(manager, testbed, small_namelist, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="wrfbatch.service.poller")
    run_id = ready_run(manager, small_namelist, tmp_path, {"pace_s_per_model_hour": 2})
    poller = Poller(manager.refresh, manager.store, ["testbed"], interval_s=0.3,
                    max_backoff_s=2.0)
    manager.start(run_id, 1)
    with StateRecorder(manager.store, run_id) as recorder:
        poller.start()
        try:
            wait_for(manager, run_id, {"active"}, timeout_s=120)
            with disrupt_lock(testbed):
                stop_daemon(testbed, "sshd")
                cut_connections(testbed.ssh_port)
                time.sleep(4)
            run = poll_until(manager, run_id, FINAL, timeout_s=180)
        finally:
            poller.stop()
    delays = [float(r.getMessage().split("next try in ")[1].split(" s")[0])
              for r in caplog.records if "next try in" in r.getMessage()]
    assert len(delays) >= 2, caplog.text
    assert delays[1] > delays[0]
    assert max(delays) <= 2.0
    assert run.status == "done", run.error
    assert recorder.states == STATE_ORDER[1:] or recorder.states == ["active", "done"]


def poll_until(manager: RunManager, run_id: str, states: set[str], timeout_s: float):
    """Wait for a state that a background poller sets (this test does not refresh)."""
    deadline = time.monotonic() + timeout_s
    while (run := manager.get(run_id)).status not in states:
        assert time.monotonic() < deadline, f"run {run_id} still {run.status}"
        time.sleep(0.3)
    return run


# ---------------------------------------------------------------------- Slurm faults


def test_controller_down_start_503(testbed_settings, testbed, small_namelist, tmp_path):
    app = create_app(testbed_settings, poll=False)
    manager: RunManager = app.state.context.manager
    headers = {"Authorization": f"Bearer {add_user(manager.store, 'alice')}"}
    run_id = ready_run(manager, small_namelist, tmp_path)
    with TestClient(app) as client:
        with disrupt_lock(testbed):
            stop_daemon(testbed, "slurmctld")
            refused = client.post(f"/v1/wrf/{run_id}/start", headers=headers,
                                  json={"cores": 1})
            during = client.get(f"/v1/wrf/{run_id}", headers=headers).json()
        started = client.post(f"/v1/wrf/{run_id}/start", headers=headers, json={"cores": 1})
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "scheduler_unavailable"
    assert during["status"] == "ready"
    assert started.status_code == 200, started.text
    assert len(slurm_jobs_named(run_id)) == 2
    manager.stop(run_id)


SBATCH_WRAPPER = """#!/bin/sh
# Test double installed by test_faults.py: submits, then stalls once for one test's scripts.
/usr/bin/sbatch "$@"
status=$?
case "$*" in
  *{marker}*) if [ ! -e {flag} ]; then touch {flag}; sleep 20; fi ;;
esac
exit $status
"""



@pytest.fixture
def stalling_sbatch(testbed, tmp_path: Path) -> Iterator[Path]:
    """Put an sbatch that stalls after submitting first in the SSH session's PATH.

    sbatch runs in the service's SSH session, whose PATH starts with
    /usr/local/bin. The wrapper stalls only for batch scripts under this
    test's work root, and only once; every other caller gets plain sbatch.
    Yields the flag file that the wrapper creates when it has submitted.
    """
    wrapper = Path("/usr/local/bin/sbatch")
    assert not wrapper.exists(), f"{wrapper} exists already; remove it first"
    flag = Path(f"/tmp/wrfbatch-sbatch-stalled-{tmp_path.name.lower()}")
    marker = f"/runs/{tmp_path.name.lower().replace('_', '-')}/"
    with disrupt_lock(testbed):
        wrapper.write_text(SBATCH_WRAPPER.format(marker=marker, flag=shlex.quote(str(flag))))
        wrapper.chmod(0o755)
        try:
            yield flag
        finally:
            wrapper.unlink()
            flag.unlink(missing_ok=True)


def test_service_killed_after_sbatch(testbed_settings, stalling_sbatch, tmp_path):
    first = LiveServer(testbed_settings, tmp_path / "first.toml")
    first.start()
    try:
        with Store(first.settings.service.resolved_database_url) as store:
            token = add_user(store, "alice")
        api = httpx.Client(base_url=first.base_url, timeout=120,
                           headers={"Authorization": f"Bearer {token}"})
        run_id = api.post("/v1/wrf", data={"version": "3.9"}).json()["id"]
        files = [("file", (p.name, p.read_bytes())) for p in demo_inputs(tmp_path / "in")]
        assert api.post(f"/v1/wrf/{run_id}/upload", files=files).status_code == 200
        setup = api.post(f"/v1/wrf/{run_id}/setup").json()
        assert setup.get("run", {}).get("status") == "ready", setup
        start = threading.Thread(target=lambda: _post_quietly(api, f"/v1/wrf/{run_id}/start"))
        start.start()
        _wait_for_file(stalling_sbatch, timeout_s=60)
        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        start.join(30)
    finally:
        first.stop()
    with Store(first.settings.service.resolved_database_url) as store:
        assert store.get_run(run_id).status.value == "starting"
        assert [job.job_id for job in store.jobs_for_run(run_id)] == [None]
    second = LiveServer(testbed_settings, tmp_path / "second.toml")
    second.start()
    try:
        api = httpx.Client(base_url=second.base_url, timeout=60,
                           headers={"Authorization": f"Bearer {token}"})
        run = _wait_api(api, run_id, FINAL, timeout_s=240)
    finally:
        second.stop()
    assert run["status"] == "done", run
    assert [job["stage"] for job in run["jobs"]] == ["real", "wrf"]
    assert len(slurm_jobs_named(run_id)) == 2


def _post_quietly(api: httpx.Client, path: str) -> None:
    """POST and ignore the failure: the server is killed while it handles the request."""
    try:
        api.post(path, json={"cores": 1})
    except httpx.HTTPError:
        pass


def _wait_for_file(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear: sbatch never ran"
        time.sleep(0.05)


def _wait_api(api: httpx.Client, run_id: str, states: set[str], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while (run := api.get(f"/v1/wrf/{run_id}").json())["status"] not in states:
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}: {run}"
        time.sleep(0.5)
    return run


def test_killed_compute_job_errors(manager, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path, {"pace_s_per_model_hour": 10})
    manager.start(run_id, 1)
    run_dir = manager.clusters.get().run_dir(run_id)
    killed = _kill_ranks(run_dir, "wrf.exe", timeout_s=120)
    assert killed, f"no wrf.exe rank ran in {run_dir}"
    run = wait_for(manager, run_id, FINAL, timeout_s=120)
    assert run.status == "error"
    assert run.error is not None
    assert run.error.message


def _kill_ranks(run_dir: str, program: str, timeout_s: float) -> list[int]:
    """SIGKILL the ranks of ``program`` in ``run_dir`` once they have begun time steps.

    Only the ranks are matched: matching any command line that names the
    program would also catch the job's srun, or the ln and readlink that link
    the program, and killing only those may leave the ranks running to the end.
    """
    deadline = time.monotonic() + timeout_s
    log = Path(run_dir) / "rsl.error.0000"
    while time.monotonic() < deadline:
        pids = [pid for pid in _processes_in(run_dir) if _is_rank(pid, program)]
        if pids and log.is_file() and b"Timing for main" in log.read_bytes():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            return pids
        time.sleep(0.2)
    return []


def _processes_in(directory: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd") == directory:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _is_rank(pid: int, program: str) -> bool:
    """Return whether the process runs ``program`` itself, or the interpreter of the
    stand-in's script with it (srun passes the program as an absolute path)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    except OSError:
        return False
    names = [os.path.basename(arg).decode(errors="replace") for arg in argv]
    return bool(names) and names[-1] == program and (
        names[0] == program or names[0].startswith("python"))


@pytest.fixture
def tiny_work_root(testbed, testbed_settings: Settings) -> Iterator[Settings]:
    """Make the cluster's work root a 1 MiB tmpfs owned by the testbed user."""
    work_root = Path(testbed_settings.clusters["testbed"].work_root)
    with disrupt_lock(testbed):
        work_root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs",
                        str(work_root)], check=True)
        try:
            subprocess.run(["chown", f"{testbed.ssh_user}:", str(work_root)], check=True)
            yield testbed_settings
        finally:
            subprocess.run(["umount", "-l", str(work_root)], check=True)


def test_disk_full_staging_errors(tiny_work_root, small_namelist, tmp_path):
    manager = RunManager(tiny_work_root)
    try:
        run = manager.create_run("alice", "3.9")
        upload_inputs(manager, run.id, small_namelist, tmp_path / "inputs")
        big = tmp_path / "wrflowinp_d01"
        big.write_bytes(os.urandom(2 * MiB))
        with big.open("rb") as handle:
            manager.upload(run.id, big.name, handle)
        with pytest.raises(TransportError) as caught:
            manager.setup(run.id)
        stored = manager.get(run.id)
    finally:
        manager.close()
    assert "space" in str(caught.value).lower()
    assert stored.status == "error"
    assert stored.error is not None
    assert "space" in stored.error.message.lower()


def test_vanished_job_errors(manager, testbed, small_namelist, tmp_path):
    run_id = ready_run(manager, small_namelist, tmp_path)
    started = manager.start(run_id, 1)
    subprocess.run(["scancel", *(job.job_id for job in started.jobs)], check=True)
    # As if the controller lost the jobs: ids it never issued, submitted long ago.
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    for offset, job in enumerate(manager.store.jobs_for_run(run_id)):
        manager.store.update_job(job.id, {"job_id": str(60_000_000 + offset),
                                          "time_submitted": long_ago})
    manager.refresh()
    run = manager.get(run_id)
    assert run.status == "error"
    assert run.error is not None
    assert run.error.code == "vanished"
    assert "without a state file" in run.error.message


# ---------------------------------------------------------------------- two service processes


class RecordingRefresh:
    """A manager's refresh that records when it ran, to check that pollers never overlap."""

    def __init__(self, manager: RunManager, name: str, log: list[tuple[str, float, float]]):
        self.manager = manager
        self.name = name
        self.log = log

    def __call__(self, cluster: str) -> None:
        started = time.monotonic()
        try:
            self.manager.refresh(cluster)
        finally:
            self.log.append((self.name, started, time.monotonic()))


def test_two_services_one_poller(testbed_settings, postgres_schema_url, small_namelist,
                                 tmp_path):
    settings = testbed_settings.model_copy(update={"service": testbed_settings.service.model_copy(
        update={"database_url": postgres_schema_url})})
    managers = [RunManager(settings), RunManager(settings)]
    log: list[tuple[str, float, float]] = []
    pollers = [Poller(RecordingRefresh(m, f"service-{i}", log), m.store, ["testbed"],
                      interval_s=0.2, max_backoff_s=1.0) for i, m in enumerate(managers)]
    try:
        run_ids = [ready_run(managers[i % 2], small_namelist, tmp_path,
                             {"pace_s_per_model_hour": 0.5}) for i in range(4)]
        for poller in pollers:
            poller.start()
        for index, run_id in enumerate(run_ids):
            managers[index % 2].start(run_id, 1)
        time.sleep(2)
        first_holder = managers[0].store.lease_holder("testbed")
        holder_index = [p.holder for p in pollers].index(first_holder)
        pollers[holder_index].stop()
        runs = [poll_until(managers[1 - holder_index], run_id, FINAL, timeout_s=240)
                for run_id in run_ids]
    finally:
        for poller in pollers:
            poller.stop()
        for manager in managers:
            manager.close()
    spans = list(log)
    overlaps = [(a, b) for a in spans for b in spans
                if a[0] != b[0] and a[1] < b[1] < a[2]]
    assert overlaps == []
    assert {name for name, _, _ in spans} == {"service-0", "service-1"}
    assert [run.status for run in runs] == ["done"] * 4
    for run in runs:
        assert run.percent_complete == 100.0
        assert [job.state for job in run.jobs] == ["COMPLETED", "COMPLETED"]
        assert len(slurm_jobs_named(run.id)) == 2
