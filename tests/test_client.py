"""The cloudrun client against a live ``wrfbatch serve``: methods, errors, progress."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_support import (
    LiveServer,
    add_user,
    demo_inputs,
    free_port,
    live_server,
    local_installs,  # noqa: F401 - fixture
    make_settings,
)

from cloudrun import Cloudrun
from wrfbatch.errors import (
    AuthenticationError,
    ConflictError,
    ConnectionLostError,
    InvalidInputError,
    NamelistError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from wrfbatch.models import Run, SetupResult
from wrfbatch.store import Store


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, local_installs: dict[str, str]  # noqa: F811
) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("client")
    settings = make_settings(directory / "data", local_installs, rate_limit_requests=400)
    yield from live_server(settings, directory / "wrfbatch.toml")


@pytest.fixture(scope="module")
def tokens(server: LiveServer) -> dict[str, str]:
    with Store(server.settings.service.resolved_database_url) as store:
        return {name: add_user(store, name) for name in ("ann", "ben")}


@pytest.fixture
def api(server: LiveServer, tokens: dict[str, str]) -> Iterator[Cloudrun]:
    with Cloudrun(tokens["ann"], base_url=server.base_url) as client:
        yield client


def test_client_token_from_env(server: LiveServer, tokens: dict[str, str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDRUN_TOKEN", tokens["ann"])
    monkeypatch.setenv("CLOUDRUN_API_URL", server.base_url + "/v1")
    with Cloudrun() as client:
        assert isinstance(client.get_all_runs(), list)


def test_client_without_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDRUN_TOKEN", raising=False)
    with pytest.raises(AuthenticationError, match="CLOUDRUN_TOKEN"):
        Cloudrun()


def test_client_create_and_get(api: Cloudrun) -> None:
    run = api.create_run(model="wrf", version="3.8.1", run_name="client")
    assert isinstance(run, Run)
    assert api.get_run(run.id).run_name == "client"
    assert run.id in [r.id for r in api.get_all_runs()]


def test_client_upload_progress(api: Cloudrun, tmp_path: Path) -> None:
    run = api.create_run()
    paths = demo_inputs(tmp_path)
    calls: list[tuple[int, int]] = []
    uploaded = api.upload(run.id, paths, progress=lambda sent, total: calls.append((sent, total)),
                          setup=False)
    total = sum(path.stat().st_size for path in paths)
    assert calls[-1] == (total, total)
    assert [sent for sent, _ in calls] == sorted(sent for sent, _ in calls)
    assert {f.filename for f in uploaded.input_files} == {path.name for path in paths}
    assert uploaded.status == "created"


def test_client_upload_runs_setup(api: Cloudrun, tmp_path: Path) -> None:
    run = api.create_run()
    assert api.upload(run.id, demo_inputs(tmp_path)).status == "ready"


def test_client_setup_result(api: Cloudrun, tmp_path: Path) -> None:
    run = api.create_run()
    api.upload(run.id, demo_inputs(tmp_path), setup=False)
    result = api.setup(run.id)
    assert isinstance(result, SetupResult)
    assert result.compute_options


def test_client_lifecycle_done(api: Cloudrun, tmp_path: Path) -> None:
    run = api.create_run()
    api.upload(run.id, demo_inputs(tmp_path))
    api.start(run.id, 1)
    seen: list[str] = []
    done = api.wait(run.id, timeout_s=120, poll_interval_s=0.3,
                    callback=lambda r: seen.append(r.status))
    assert done.status == "done"
    assert done.output_files
    assert seen[-1] == "done"
    with pytest.raises(ConflictError):
        api.stop(run.id)
    assert api.delete(run.id).output_files is not None


def test_client_wait_timeout(api: Cloudrun) -> None:
    run = api.create_run()
    with pytest.raises(TimeoutError, match="still created"):
        api.wait(run.id, timeout_s=0.2, poll_interval_s=0.1)


def test_client_share(server: LiveServer, tokens: dict[str, str], api: Cloudrun) -> None:
    run = api.create_run()
    with Cloudrun(tokens["ben"], base_url=server.base_url) as ben:
        with pytest.raises(NotFoundError):
            ben.get_run(run.id)
        api.share(run.id, "ben")
        assert ben.get_run(run.id).id == run.id
        with pytest.raises(PermissionDeniedError):
            ben.delete(run.id)


def test_client_error_classes(api: Cloudrun, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="3.8.1, 3.9"):
        api.create_run(version="2.0")
    run = api.create_run()
    bad = tmp_path / "namelist.input"
    bad.write_text("&time_control\n/\n")
    with pytest.raises(NamelistError) as caught:
        api.upload(run.id, [bad])
    assert caught.value.problems


def test_client_bad_token(server: LiveServer) -> None:
    with Cloudrun("wrfb_wrong", base_url=server.base_url) as client:
        with pytest.raises(AuthenticationError, match="invalid or revoked"):
            client.get_all_runs()


def test_client_rate_limited(tmp_path: Path, local_installs: dict[str, str]) -> None:  # noqa: F811
    settings = make_settings(tmp_path / "data", local_installs, rate_limit_requests=2)
    for server in live_server(settings, tmp_path / "limited.toml"):
        with Store(settings.service.resolved_database_url) as store:
            token = add_user(store, "eve")
        with Cloudrun(token, base_url=server.base_url) as client:
            client.get_all_runs()
            client.get_all_runs()
            with pytest.raises(RateLimitError) as caught:
                client.get_all_runs()
        assert caught.value.retry_after_s >= 1


def test_client_connection_lost() -> None:
    with Cloudrun("wrfb_x", base_url=f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(ConnectionLostError, match="CLOUDRUN_API_URL"):
            client.get_all_runs()


def test_client_missing_file(api: Cloudrun, tmp_path: Path) -> None:
    run = api.create_run()
    with pytest.raises(FileNotFoundError):
        api.upload(run.id, tmp_path / "absent.nc")


def test_client_imports_stay_light() -> None:
    code = ("import sys, cloudrun; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'starlette', 'paramiko', 'sqlalchemy', 'uvicorn') "
            "or m.startswith('wrfbatch.service')]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]"



def test_download_output_file(api: Cloudrun, tmp_path: Path) -> None:
    run = api.create_run()
    api.upload(run.id, demo_inputs(tmp_path / "inputs"))
    api.start(run.id, 1)
    done = api.wait(run.id, timeout_s=120, poll_interval_s=0.3)
    output = done.output_files[0]
    path = api.download(run.id, output.filename, tmp_path)
    assert path == tmp_path / output.filename
    assert path.stat().st_size == output.size
    assert path.read_bytes()[:3] in (b"CDF", b"\x89HD")
    log = api.download(run.id, "rsl.out.0000", tmp_path / "rsl.txt")
    assert "SUCCESS COMPLETE WRF" in log.read_text()
    # A destination that ends with a slash is a directory, created when missing.
    inside = api.download(run.id, output.filename, f"{tmp_path}/out/")
    assert inside == tmp_path / "out" / output.filename
    assert inside.stat().st_size == output.size


def test_download_unknown_file_rejected(api: Cloudrun, tmp_path: Path) -> None:
    run = api.create_run()
    with pytest.raises(NotFoundError, match="not an output file"):
        api.download(run.id, "namelist.input", tmp_path)
    with pytest.raises(InvalidInputError):
        api.download(run.id, "a;b", tmp_path)
    assert list(tmp_path.iterdir()) == []
