"""Hostile input: each is rejected with a 4xx that explains why, and nothing lands outside.

Upload names, namelist strings, configured Slurm and environment values and
oversized bodies go through the real app (in-process, local cluster with
stand-in WRF). After each request the test lists every file under the test's
directory and checks that only the run's own directories changed.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import (
    add_user,
    demo_inputs,
    local_installs,  # noqa: F401 - fixture
    make_settings,
)

from wrfbatch.config import ClusterConfig, Settings
from wrfbatch.errors import ConfigError, HostKeyError
from wrfbatch.runs import RunManager
from wrfbatch.service import create_app

BOUNDARY = "hostile-boundary-7d1f"
MARKER = "pwned-by-hostile-input"


class Client:
    """The app's test client with one user's token, and the file tree of the test."""

    def __init__(self, client: TestClient, token: str, root: Path, settings: Settings) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.root = root
        self.settings = settings

    def create_run(self) -> str:
        response = self.client.post("/v1/wrf", headers=self.headers, data={"version": "3.9"})
        assert response.status_code == 201, response.text
        run_id: str = response.json()["id"]
        return run_id

    def upload_raw(self, run_id: str, disposition: bytes, content: bytes = b"x") -> Any:
        """POST a multipart body built by hand, so the file name is sent byte for byte."""
        body = (f"--{BOUNDARY}\r\n".encode() + b"Content-Disposition: form-data; name=\"file\"; "
                + disposition + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
                + content + f"\r\n--{BOUNDARY}--\r\n".encode())
        headers = {**self.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        return self.client.post(f"/v1/wrf/{run_id}/upload", headers=headers, content=body)

    def files(self) -> set[Path]:
        return {path for path in self.root.rglob("*")}


@pytest.fixture
def api(tmp_path: Path, local_installs: dict[str, str]) -> Iterator[Client]:  # noqa: F811
    settings = make_settings(tmp_path / "data", local_installs, max_upload_bytes=1024 * 1024)
    app = create_app(settings, poll=False)
    token = add_user(app.state.context.store, "alice")
    with TestClient(app) as client:
        yield Client(client, token, tmp_path, settings)


def outside_run(paths: set[Path], root: Path, run_id: str) -> list[Path]:
    """Return the paths that are neither the run's own nor the database's."""
    allowed = [root / "data" / "uploads" / run_id, root / "data" / "cluster"]
    stray = []
    for path in paths:
        if path.name.startswith("wrfbatch.db"):
            continue
        if any(path == base or base in path.parents or path in base.parents
               for base in allowed):
            continue
        stray.append(path)
    return sorted(stray)


HOSTILE_NAMES = {
    "parent": b'filename="../escaped"',
    "parent-deep": b'filename="../../../tmp/escaped"',
    "absolute": b'filename="/tmp/escaped"',
    "nul": b'filename="name\x00.txt"',
    "newline": b'filename="name\n.txt"',
    "carriage-return": b'filename="name\r.txt"',
    "command-substitution": b'filename="$(touch ' + MARKER.encode() + b')"',
    "backticks": b'filename="`touch ' + MARKER.encode() + b'`"',
    "semicolon": b'filename="a;touch ' + MARKER.encode() + b'"',
    "pipe": b'filename="a|cat"',
    "glob": b'filename="*"',
    "dot": b'filename="."',
    "dotdot": b'filename=".."',
    "hidden": b'filename=".bashrc"',
    "dash": b'filename="-rf"',
    "backslash": b'filename="..\\\\escaped"',
    "over-long": b'filename="' + b"a" * 300 + b'"',
    "empty": b'filename=""',
}


@pytest.mark.parametrize("case", sorted(HOSTILE_NAMES))
def test_upload_name_rejected(api: Client, case: str) -> None:
    run_id = api.create_run()
    before = api.files()
    response = api.upload_raw(run_id, HOSTILE_NAMES[case])
    new_files = api.files() - before
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert "name" in error["message"] or "multipart" in error["message"]
    assert outside_run(new_files, api.root, run_id) == []
    assert not [p for p in new_files if p.is_file() and p.stat().st_size]


def test_hostile_names_write_nothing(api: Client) -> None:
    run_id = api.create_run()
    for disposition in HOSTILE_NAMES.values():
        api.upload_raw(run_id, disposition)
    found = subprocess.run(["find", "/tmp", "-maxdepth", "3", "-name", f"*{MARKER}*"],
                           capture_output=True, text=True).stdout
    assert found == ""
    assert not Path("/tmp/escaped").exists()
    assert not (api.root / "data" / "escaped").exists()
    assert not (api.root / "data" / "uploads" / "escaped").exists()


def test_multipart_over_limit_413(api: Client) -> None:
    run_id = api.create_run()
    before = api.files()
    content = os.urandom(api.settings.service.max_upload_bytes + 1)
    response = api.upload_raw(run_id, b'filename="met_em.big"', content)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]
    assert outside_run(api.files() - before, api.root, run_id) == []
    assert not (api.root / "data" / "uploads" / run_id / "met_em.big").exists()


HOSTILE_STRINGS = {
    "parent-path": "history_outname = '../../escaped_d<domain>'",
    "absolute-path": "history_outname = '/tmp/escaped_d<domain>'",
    "slash": "history_outname = 'out/wrfout_d<domain>'",
    "quote": "history_outname = 'wrf\"out'; rm -rf ~'",
    "newline": "history_outname = 'wrfout\n_d<domain>'",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_STRINGS))
def test_namelist_string_rejected(api: Client, case: str, tmp_path: Path) -> None:
    run_id = api.create_run()
    inputs = demo_inputs(tmp_path / "inputs")
    namelist = inputs[0].read_text().replace(
        "&time_control\n", f"&time_control\n {HOSTILE_STRINGS[case]}\n", 1)
    files = [("file", ("namelist.input", namelist.encode()))]
    files += [("file", (path.name, path.read_bytes())) for path in inputs[1:]]
    before = api.files()
    assert api.client.post(f"/v1/wrf/{run_id}/upload", headers=api.headers,
                           files=files).status_code == 200
    response = api.client.post(f"/v1/wrf/{run_id}/setup", headers=api.headers)
    assert 400 <= response.status_code < 500, response.text
    assert "history_outname" in response.text or "namelist" in response.text
    assert outside_run(api.files() - before, api.root, run_id) == []
    run = api.client.get(f"/v1/wrf/{run_id}", headers=api.headers).json()
    assert run["status"] == "created"


def test_unknown_cluster_name_rejected(api: Client) -> None:
    response = api.client.post("/v1/wrf", headers=api.headers,
                               data={"version": "3.9", "cluster": "debug; touch " + MARKER})
    assert response.status_code == 400
    assert "not configured" in response.json()["error"]["message"]


# --- configured values that reach batch scripts and remote commands ---


SHELL_VALUES = ["debug; touch x", "$(id)", "`id`", "a b", "a\nb", "-p", "debug|x", ""]


@pytest.mark.parametrize("field", ["partition", "account", "qos"])
@pytest.mark.parametrize("value", SHELL_VALUES)
def test_slurm_config_value_rejected(field: str, value: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=field):
        ClusterConfig.model_validate({"transport": "local", "scheduler": "local",
                                      "work_root": str(tmp_path), field: value})


@pytest.mark.parametrize("name", ["A B", "A;B", "$(id)", "1ABC", "A=B", ""])
def test_environment_name_rejected(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="environment variable name"):
        ClusterConfig.model_validate({"transport": "local", "scheduler": "local",
                                      "work_root": str(tmp_path), "environment": {name: "1"}})


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\0b"])
def test_environment_value_rejected(value: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="newline or NUL"):
        ClusterConfig.model_validate({"transport": "local", "scheduler": "local",
                                      "work_root": str(tmp_path), "environment": {"V": value}})


def test_config_error_names_field(tmp_path: Path) -> None:
    from wrfbatch.config import load_settings

    config = tmp_path / "wrfbatch.toml"
    config.write_text(f'[clusters.c]\ntransport = "local"\nscheduler = "local"\n'
                      f'work_root = "{tmp_path}"\npartition = "debug; touch x"\n')
    with pytest.raises(ConfigError, match="partition"):
        load_settings(config, env={})


def test_environment_value_stays_literal(
    local_installs: dict[str, str], tmp_path: Path, small_namelist: str  # noqa: F811
) -> None:
    """A value with shell syntax reaches the job as text: nothing it names is run."""
    marker = tmp_path / MARKER
    hostile = f"$(touch {marker}) `touch {marker}` ; touch {marker} ' \" \\"
    settings = make_settings(tmp_path / "data", local_installs)
    cluster = settings.clusters["local"]
    settings.clusters["local"] = cluster.model_copy(update={"environment": {"HOSTILE": hostile}})
    manager = RunManager(settings)
    try:
        run = manager.create_run("alice", "3.9")
        for path in demo_inputs(tmp_path / "inputs"):
            manager.upload(run.id, path.name, io.BytesIO(path.read_bytes()))
        scripts = manager.render(run.id, 1)
        script = tmp_path / "env-check.sh"
        environment_lines = [line for line in scripts["real.sh"].splitlines()
                             if "HOSTILE" in line]
        script.write_text("\n".join(environment_lines) + '\nprintf %s "$HOSTILE"\n')
        printed = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                                 check=True).stdout
    finally:
        manager.close()
    assert environment_lines
    assert printed == hostile
    assert not marker.exists()


# --- host keys ---


@pytest.mark.cluster
def test_changed_host_key_refused(testbed_settings: Settings, tmp_path: Path) -> None:
    key = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    key_type, key_data = Path(f"{key}.pub").read_text().split()[:2]
    cluster = testbed_settings.clusters["testbed"]
    assert cluster.ssh is not None
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{cluster.ssh.host}]:{cluster.ssh.port} {key_type} {key_data}\n")
    testbed_settings.clusters["testbed"] = cluster.model_copy(update={
        "ssh": cluster.ssh.model_copy(update={"known_hosts_file": known_hosts})})
    manager = RunManager(testbed_settings)
    try:
        run = manager.create_run("alice", "3.9")
        for path in demo_inputs(tmp_path / "inputs"):
            manager.upload(run.id, path.name, io.BytesIO(path.read_bytes()))
        with pytest.raises(HostKeyError) as caught:
            manager.setup(run.id)
        status = manager.get(run.id).status
    finally:
        manager.close()
    message = str(caught.value)
    assert cluster.ssh.host in message
    assert str(known_hosts) in message
    assert status == "created"
