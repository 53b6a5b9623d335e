"""The spec's curl and Python examples, and streaming uploads, against ``wrfbatch serve``.

The server runs as a subprocess on a free loopback port over the embedded
local cluster with stand-in WRF installs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_support import (
    LiveServer,
    add_user,
    demo_inputs,
    live_server,
    local_installs,  # noqa: F401 - fixture
    make_settings,
)

from wrfbatch.store import Store

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, local_installs: dict[str, str]  # noqa: F811
) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("live")
    settings = make_settings(directory / "data", local_installs, max_upload_bytes=256 * 1024**2)
    yield from live_server(settings, directory / "wrfbatch.toml")


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    with Store(server.settings.service.resolved_database_url) as store:
        return add_user(store, "scientist")


def curl(*args: str) -> dict | list:
    """Run curl; return the JSON body. ``-f`` is left out so error bodies are returned."""
    result = subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- the spec's curl examples, with only the base URL changed ---


def test_curl_examples_lifecycle(server: LiveServer, token: str, tmp_path: Path) -> None:
    url = server.base_url
    auth = ["-H", f"Authorization: Bearer {token}"]
    created = curl("-X", "POST", f"{url}/v1/wrf", *auth, "-F", "version=3.9")
    run_id = created["id"]
    assert created["status"] == "created"
    assert run_id in [run["id"] for run in curl(f"{url}/v1/wrf", *auth)]
    assert curl(f"{url}/v1/wrf/{run_id}", *auth)["id"] == run_id
    uploads = [arg for path in demo_inputs(tmp_path) for arg in ("-F", f"file=@{path}")]
    uploaded = curl("-X", "POST", f"{url}/v1/wrf/{run_id}/upload", *auth, *uploads)
    assert len(uploaded["input_files"]) == 3
    setup = curl("-X", "POST", f"{url}/v1/wrf/{run_id}/setup", *auth)
    assert setup["run"]["status"] == "ready"
    cores = str(setup["compute_options"][0]["cores"])
    started = curl("-X", "POST", f"{url}/v1/wrf/{run_id}/start", *auth, "-F", f"cores={cores}")
    # The service's poller may see the short stand-in run end before start returns.
    assert started["status"] in ("starting", "active", "done")
    stopped = curl("-X", "POST", f"{url}/v1/wrf/{run_id}/stop", *auth)
    # A run that already ended cannot be stopped: the service returns 409 conflict.
    assert stopped.get("status") == "stopped" or stopped["error"]["code"] == "conflict"
    deleted = curl("-X", "DELETE", f"{url}/v1/wrf/{run_id}", *auth)
    assert deleted["deleted"] is True


def test_curl_without_token(server: LiveServer) -> None:
    body = curl(f"{server.base_url}/v1/wrf")
    assert body["error"]["code"] == "unauthenticated"


# --- the spec's Python examples ---


def test_python_examples_run(server: LiveServer, token: str, tmp_path: Path) -> None:
    inputs = [str(path) for path in demo_inputs(tmp_path / "inputs")]
    script = textwrap.dedent(f"""
        import os
        from cloudrun import Cloudrun

        api = Cloudrun(token = os.environ['CLOUDRUN_TOKEN'])
        token = os.environ['CLOUDRUN_TOKEN']

        api = Cloudrun(token)
        run = api.create_run(model = 'wrf', version = '3.9')
        id = run.id

        api = Cloudrun(token)
        runs = api.get_all_runs()

        api = Cloudrun(token)
        run = api.get_run(id)

        api.upload(id, {inputs!r})
        options = api.setup(id).compute_options
        api.start(id, options[0].cores)
        run = api.wait(id, timeout_s=120, poll_interval_s=0.5)
        print(run.status, len(run.output_files), id in [r.id for r in runs])
    """)
    env = {**os.environ, "CLOUDRUN_TOKEN": token, "CLOUDRUN_API_URL": server.base_url}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    status, outputs, listed = result.stdout.split()
    assert status == "done"
    assert int(outputs) > 0
    assert listed == "True"


# --- streaming uploads ---


def test_upload_memory_stays_flat(server: LiveServer, token: str, tmp_path: Path) -> None:
    size_bytes = 160 * 1024**2
    big = tmp_path / "met_em.d01.big.nc"
    with big.open("wb") as handle:
        handle.truncate(size_bytes)
    headers = {"Authorization": f"Bearer {token}"}
    run_id = httpx.post(f"{server.base_url}/v1/wrf", data={"version": "3.9"},
                        headers=headers).json()["id"]
    before_kib = server.rss_peak_kib()
    uploaded = curl("-X", "POST", f"{server.base_url}/v1/wrf/{run_id}/upload",
                    "-H", f"Authorization: Bearer {token}", "-F", f"file=@{big}")
    growth_kib = server.rss_peak_kib() - before_kib
    assert uploaded["input_files"][0]["size"] == size_bytes
    assert growth_kib < 40 * 1024, f"peak RSS grew by {growth_kib} KiB"


def test_upload_chunked_over_limit(server: LiveServer, token: str) -> None:
    limit = server.settings.service.max_upload_bytes
    run_id = httpx.post(f"{server.base_url}/v1/wrf", data={"version": "3.9"},
                        headers={"Authorization": f"Bearer {token}"}).json()["id"]
    boundary = "b0undary"

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
               "filename=\"huge.bin\"\r\n\r\n").encode()
        chunk = b"\0" * 1024**2
        for _ in range(limit // len(chunk) + 2):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        response = httpx.post(
            f"{server.base_url}/v1/wrf/{run_id}/upload", content=body(), timeout=60,
            headers={"Authorization": f"Bearer {token}",
                     "Content-Type": f"multipart/form-data; boundary={boundary}"})
    except (httpx.WriteError, httpx.RemoteProtocolError):
        response = None  # the server may close the connection while the body is still sent
    if response is not None:
        assert response.status_code == 413
    run = httpx.get(f"{server.base_url}/v1/wrf/{run_id}",
                    headers={"Authorization": f"Bearer {token}"}).json()
    assert run["input_files"] == []


def test_upload_declared_over_limit(server: LiveServer, token: str) -> None:
    run_id = httpx.post(f"{server.base_url}/v1/wrf", data={"version": "3.9"},
                        headers={"Authorization": f"Bearer {token}"}).json()["id"]
    result = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{server.base_url}/v1/wrf/{run_id}/upload",
         "-H", f"Authorization: Bearer {token}",
         "-H", "Content-Type: multipart/form-data; boundary=x",
         "-H", f"Content-Length: {10 * 1024**3}", "--data-binary", "--x--",
         "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=30)
    assert result.stdout.rstrip().endswith("413")


def test_request_log_has_no_token(server: LiveServer, token: str) -> None:
    httpx.get(f"{server.base_url}/v1/wrf", headers={"Authorization": f"Bearer {token}"})
    log = server.log()
    assert "path=/v1/wrf status=200" in log
    assert token not in log
