"""Load: 50 concurrent clients run 100 full lifecycles on the Slurm testbed through the API.

Each client (its own user and token) runs two lifecycles with the Python
client (create, upload, setup, start, wait) and lists and reads runs while
it waits. The stand-in WRF runs at 0.1 s per model hour on one core, so
the time goes to the service, SSH and Slurm, not to the model.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fault_support import slurm_jobs_named
from service_support import LiveServer, add_user, demo_inputs

from cloudrun import Cloudrun
from wrfbatch.config import Settings
from wrfbatch.store import Store

# Alone on the 2-core test machine it takes about 115 s: the 200 jobs share the testbed
# node's 4 CPU slots. The timeout leaves room for a machine that other work slows down.
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.load, pytest.mark.timeout(600)]

CLIENTS = 50
RUNS_PER_CLIENT = 2
STANDIN = {"pace_s_per_model_hour": 0.1}


class StatusRecorder(httpx.HTTPTransport):
    """An HTTP transport that keeps the status of every response it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


def run_client(server: LiveServer, token: str, inputs: list[str]) -> tuple[list[str], list[int]]:
    """Run this client's lifecycles; return its run ids and every status it received."""
    recorder = StatusRecorder()
    run_ids = []
    with Cloudrun(token=token, base_url=server.base_url, timeout_s=300,
                  transport=recorder) as api:
        for _ in range(RUNS_PER_CLIENT):
            run = api.create_run(model="wrf", version="3.9")
            run_ids.append(run.id)
            api.upload(run.id, inputs)
            setup = api.setup(run.id)
            assert setup.run.status == "ready", setup
            api.start(run.id, 1)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            listed = {run.id: run.status for run in api.get_all_runs()}
            if all(listed.get(run_id) in ("done", "error", "stopped") for run_id in run_ids):
                break
            for run_id in run_ids:
                api.get_run(run_id)
            time.sleep(2)
    return run_ids, recorder.statuses


def test_fifty_clients_hundred_runs(testbed_settings: Settings, tmp_path: Path) -> None:
    settings = testbed_settings.model_copy(update={"service": testbed_settings.service.model_copy(
        update={"poll_interval_s": 1.0})})
    inputs = [str(path) for path in demo_inputs(tmp_path / "inputs")]
    (tmp_path / "inputs" / "standin.json").write_text(json.dumps(STANDIN))
    inputs.append(str(tmp_path / "inputs" / "standin.json"))
    server = LiveServer(settings, tmp_path / "wrfbatch.toml")
    with Store(server.settings.service.resolved_database_url) as store:
        tokens = [add_user(store, f"user{index:02d}") for index in range(CLIENTS)]
        admin = add_user(store, "admin", is_admin=True)
    server.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(lambda token: run_client(server, token, inputs), tokens))
        with Cloudrun(token=admin, base_url=server.base_url) as api:
            listed = api.get_all_runs(limit=1000)
            runs = [api.get_run(run.id) for run in listed]
    finally:
        server.stop()
    run_ids = sorted(run_id for ids, _ in results for run_id in ids)
    statuses = [status for _, received in results for status in received]
    server_errors = re.findall(r"request method=\S+ path=\S+ status=5\d\d", server.log())
    assert len(run_ids) == CLIENTS * RUNS_PER_CLIENT
    assert [status for status in statuses if status >= 500] == []
    assert server_errors == []
    assert sorted(run.id for run in runs) == run_ids
    assert {run.status for run in runs} == {"done"}, [r.error for r in runs if r.error]
    slurm_names = [name for _, name in slurm_jobs_named("")]
    for run in runs:
        assert sorted(job.stage for job in run.jobs) == ["real", "wrf"], run.id
        assert len([name for name in slurm_names if run.id in name]) == 2, run.id
