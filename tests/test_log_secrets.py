"""No secret in any log line: API token, SSH private key or database password.

A full run goes through ``wrfbatch serve`` at DEBUG on the Slurm testbed,
with its store in PostgreSQL (whose URL carries a password), driven by the
Python client while this process also logs at DEBUG. Then every captured
line (the server's log, including its per-request access lines, and the
client's) is searched for the secrets. The key's path may appear; the key's
text must not.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from service_support import LiveServer, add_user, demo_inputs
from sqlalchemy import make_url

from cloudrun import Cloudrun
from wrfbatch.config import Settings
from wrfbatch.store import Store

pytestmark = pytest.mark.cluster


def key_fragments(key_file: Path) -> list[str]:
    """Return pieces of the private key's base64 body, each long enough to be unique."""
    body = "".join(line for line in key_file.read_text().splitlines()
                   if line and not line.startswith("-----"))
    return [body[start:start + 24] for start in range(0, len(body) - 24, 24)]


def test_full_run_logs_no_secret(testbed_settings: Settings, postgres_schema_url: str,
                                 tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = testbed_settings.model_copy(update={"service": testbed_settings.service.model_copy(
        update={"database_url": postgres_schema_url})})
    password = make_url(postgres_schema_url).password
    assert password
    server = LiveServer(settings, tmp_path / "wrfbatch.toml", log_level="DEBUG")
    with Store(postgres_schema_url) as store:
        token = add_user(store, "scientist")
    server.start()
    try:
        with Cloudrun(token=token, base_url=server.base_url) as api:
            run = api.create_run(model="wrf", version="3.9")
            api.upload(run.id, [str(p) for p in demo_inputs(tmp_path / "inputs")])
            api.start(run.id, 1)
            run = api.wait(run.id, timeout_s=240, poll_interval_s=1)
            api.get_all_runs()
        assert run.status == "done", run
    finally:
        server.stop()
    server_log = server.log()
    logs = {"server": server_log, "client": caplog.text}
    cluster = settings.clusters["testbed"]
    assert cluster.ssh is not None
    assert f"request method=POST path=/v1/wrf/{run.id}/start status=200" in server_log
    assert "DEBUG" in server_log
    for where, text_ in logs.items():
        assert token not in text_, f"API token in the {where} log"
        assert token[-16:] not in text_, f"part of the API token in the {where} log"
        assert password not in text_, f"database password in the {where} log"
        for fragment in key_fragments(cluster.ssh.key_file):
            assert fragment not in text_, f"SSH private key text in the {where} log"
