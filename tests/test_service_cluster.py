"""The spec's curl commands and Python client through the Slurm testbed over SSH, to ``done``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_support import LiveServer, add_user, demo_inputs, live_server

from wrfbatch.config import Settings
from wrfbatch.store import Store

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]


@pytest.fixture
def cluster_server(testbed_settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    yield from live_server(testbed_settings, tmp_path / "wrfbatch.toml")


@pytest.fixture
def cluster_token(cluster_server: LiveServer) -> str:
    with Store(cluster_server.settings.service.resolved_database_url) as store:
        return add_user(store, "scientist")


def curl(*args: str) -> Any:
    result = subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_done(url: str, auth: list[str], run_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        run: dict[str, Any] = curl(f"{url}/v1/wrf/{run_id}", *auth)
        if run["status"] in ("done", "error", "stopped") or time.monotonic() > deadline:
            return run
        time.sleep(1)


def test_curl_lifecycle_testbed(cluster_server: LiveServer, cluster_token: str,
                                tmp_path: Path) -> None:
    url = cluster_server.base_url
    auth = ["-H", f"Authorization: Bearer {cluster_token}"]
    run_id = curl("-X", "POST", f"{url}/v1/wrf", *auth, "-F", "version=3.9")["id"]
    uploads = [arg for path in demo_inputs(tmp_path) for arg in ("-F", f"file=@{path}")]
    curl("-X", "POST", f"{url}/v1/wrf/{run_id}/upload", *auth, *uploads)
    setup = curl("-X", "POST", f"{url}/v1/wrf/{run_id}/setup", *auth)
    assert setup["run"]["status"] == "ready", setup
    cores = str(setup["compute_options"][-1]["cores"])
    started = curl("-X", "POST", f"{url}/v1/wrf/{run_id}/start", *auth, "-F", f"cores={cores}")
    assert started["status"] in ("starting", "active"), started
    assert [job["job_id"] for job in started["jobs"]]
    run = wait_done(url, auth, run_id)
    assert run["status"] == "done", run
    assert any(f["filename"].startswith("wrfout_d01") for f in run["output_files"])
    assert run["cores"] == int(cores)


def test_python_client_testbed(cluster_server: LiveServer, cluster_token: str,
                               tmp_path: Path) -> None:
    inputs = [str(path) for path in demo_inputs(tmp_path)]
    script = textwrap.dedent(f"""
        import os
        from cloudrun import Cloudrun

        api = Cloudrun(token = os.environ['CLOUDRUN_TOKEN'])
        run = api.create_run(model = 'wrf', version = '3.9')
        api.upload(run.id, {inputs!r})
        api.start(run.id, 2)
        run = api.wait(run.id, timeout_s=240, poll_interval_s=1)
        print(run.status, [job.job_id for job in run.jobs])
    """)
    env = {**os.environ, "CLOUDRUN_TOKEN": cluster_token,
           "CLOUDRUN_API_URL": cluster_server.base_url}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr + cluster_server.log()[-3000:]
    assert result.stdout.split()[0] == "done", result.stdout
