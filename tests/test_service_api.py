"""The Cloudrun endpoints, auth matrix and error statuses, on the real run manager.

The app runs in-process (Starlette's TestClient) over the embedded local
cluster with stand-in WRF installs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import (
    FINAL,
    add_user,
    demo_inputs,
    local_installs,  # noqa: F401 - fixture
    make_settings,
    unreachable_cluster,
)

from wrfbatch.config import Settings
from wrfbatch.service import create_app
from wrfbatch.store import Store


@dataclass
class Api:
    """A test client of the app and the tokens of its users."""

    client: TestClient
    store: Store
    tokens: dict[str, str]
    settings: Settings

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def call(self, method: str, path: str, user: str = "alice", **kwargs: Any) -> Any:
        headers = {**self.headers(user), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def create_run(self, user: str = "alice", version: str = "3.9") -> str:
        response = self.call("POST", "/v1/wrf", user, data={"version": version})
        assert response.status_code == 201, response.text
        run_id: str = response.json()["id"]
        return run_id

    def upload(self, run_id: str, paths: list[Path], user: str = "alice") -> Any:
        files = [("file", (path.name, path.read_bytes())) for path in paths]
        return self.call("POST", f"/v1/wrf/{run_id}/upload", user, files=files)

    def ready_run(self, tmp_path: Path, user: str = "alice") -> str:
        run_id = self.create_run(user)
        assert self.upload(run_id, demo_inputs(tmp_path / run_id), user).status_code == 200
        assert self.call("POST", f"/v1/wrf/{run_id}/setup", user).status_code == 200
        return run_id

    def wait(self, run_id: str, states: set[str], timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            run: dict[str, Any] = self.call("GET", f"/v1/wrf/{run_id}").json()
            if run["status"] in states or time.monotonic() > deadline:
                return run
            time.sleep(0.2)


def open_api(settings: Settings, **app_options: Any) -> Iterator[Api]:
    app = create_app(settings, **app_options)
    store = app.state.context.store
    tokens = {name: add_user(store, name) for name in ("alice", "bob", "carol")}
    tokens["admin"] = add_user(store, "admin", is_admin=True)
    with TestClient(app) as client:
        yield Api(client, store, tokens, settings)


@pytest.fixture
def api(tmp_path: Path, local_installs: dict[str, str]) -> Iterator[Api]:  # noqa: F811
    yield from open_api(make_settings(tmp_path / "data", local_installs))


# --- endpoints ---


def test_create_run_form(api: Api) -> None:
    response = api.call("POST", "/v1/wrf", data={"version": "3.9", "run_name": "alps"})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "created"
    assert body["model"]["version"] == "3.9"
    assert body["run_name"] == "alps"
    assert body["owner"] == "alice"


def test_create_run_json(api: Api) -> None:
    response = api.call("POST", "/v1/wrf", json={"version": "3.8.1", "model": "WRF"})
    assert response.status_code == 201
    assert response.json()["model"]["version"] == "3.8.1"


def test_create_run_bad_version(api: Api) -> None:
    response = api.call("POST", "/v1/wrf", data={"version": "3.7"})
    assert response.status_code == 400
    assert "3.8.1, 3.9" in response.json()["error"]["message"]


def test_create_run_missing_version(api: Api) -> None:
    response = api.call("POST", "/v1/wrf", data={"run_name": "x"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert "version" in error["message"]


def test_create_run_unknown_model(api: Api) -> None:
    response = api.call("POST", "/v1/wrf", data={"version": "3.9", "model": "mm5"})
    assert response.status_code == 422
    assert "model" in response.json()["error"]["message"]


def test_create_run_unknown_cluster(api: Api) -> None:
    response = api.call("POST", "/v1/wrf", data={"version": "3.9", "cluster": "nope"})
    assert response.status_code == 400
    assert "local" in response.json()["error"]["message"]


def test_list_runs_own(api: Api) -> None:
    mine = api.create_run("alice")
    api.create_run("bob")
    response = api.call("GET", "/v1/wrf")
    assert response.status_code == 200
    assert [run["id"] for run in response.json()] == [mine]


def test_list_runs_bad_limit(api: Api) -> None:
    response = api.call("GET", "/v1/wrf", params={"limit": "0"})
    assert response.status_code == 422
    assert "limit" in response.json()["error"]["message"]


def test_get_run_fields(api: Api) -> None:
    run_id = api.create_run()
    body = api.call("GET", f"/v1/wrf/{run_id}").json()
    for field in ("id", "run_name", "status", "model", "cores", "input_files", "output_files",
                  "output_size", "disk_usage", "percent_complete", "remaining_time",
                  "time_created", "time_started", "time_stopped"):
        assert field in body, field


def test_upload_lists_files(api: Api, tmp_path: Path) -> None:
    run_id = api.create_run()
    paths = demo_inputs(tmp_path / "inputs")
    response = api.upload(run_id, paths)
    assert response.status_code == 200
    uploaded = {f["filename"]: f["size"] for f in response.json()["input_files"]}
    assert uploaded == {path.name: path.stat().st_size for path in paths}


def test_upload_without_multipart(api: Api) -> None:
    run_id = api.create_run()
    response = api.call("POST", f"/v1/wrf/{run_id}/upload", content=b"x",
                        headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    assert "multipart/form-data" in response.json()["error"]["message"]


def test_upload_bad_file_name(api: Api) -> None:
    run_id = api.create_run()
    response = api.call("POST", f"/v1/wrf/{run_id}/upload",
                        files=[("file", (".hidden", b"x"))])
    assert response.status_code == 400
    assert ".hidden" in response.json()["error"]["message"]


def test_setup_returns_options(api: Api, tmp_path: Path) -> None:
    run_id = api.create_run()
    api.upload(run_id, demo_inputs(tmp_path / "inputs"))
    response = api.call("POST", f"/v1/wrf/{run_id}/setup")
    assert response.status_code == 200
    body = response.json()
    assert body["run"]["status"] == "ready"
    assert body["missing_input_files"] == []
    assert "namelist.input" not in body["required_input_files"]
    assert body["compute_options"][0]["cores"] == 1


def test_setup_reports_missing(api: Api, tmp_path: Path) -> None:
    run_id = api.create_run()
    namelist = demo_inputs(tmp_path / "inputs")[0]
    api.upload(run_id, [namelist])
    body = api.call("POST", f"/v1/wrf/{run_id}/setup").json()
    assert body["run"]["status"] == "created"
    assert len(body["missing_input_files"]) == 2


def test_setup_invalid_namelist(api: Api, tmp_path: Path) -> None:
    run_id = api.create_run()
    bad = tmp_path / "namelist.input"
    bad.write_text("&time_control\n run_hours = 1\n/\n")
    api.upload(run_id, [bad])
    response = api.call("POST", f"/v1/wrf/{run_id}/setup")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_namelist"
    assert error["problems"]


def test_start_not_ready(api: Api) -> None:
    run_id = api.create_run()
    response = api.call("POST", f"/v1/wrf/{run_id}/start", data={"cores": "1"})
    assert response.status_code == 409
    assert "setup" in response.json()["error"]["message"]


def test_start_bad_cores(api: Api, tmp_path: Path) -> None:
    run_id = api.ready_run(tmp_path)
    response = api.call("POST", f"/v1/wrf/{run_id}/start", data={"cores": "many"})
    assert response.status_code == 422
    assert "cores" in response.json()["error"]["message"]


def test_start_cores_over_limit(api: Api, tmp_path: Path) -> None:
    run_id = api.ready_run(tmp_path)
    response = api.call("POST", f"/v1/wrf/{run_id}/start", json={"cores": 4096})
    assert response.status_code == 400
    assert "4096" in response.json()["error"]["message"]


def test_lifecycle_to_done(api: Api, tmp_path: Path) -> None:
    run_id = api.ready_run(tmp_path)
    started = api.call("POST", f"/v1/wrf/{run_id}/start", params={"cores": "1"})
    assert started.status_code == 200
    assert started.json()["status"] in ("starting", "active")
    run = api.wait(run_id, FINAL)
    assert run["status"] == "done", run
    assert run["percent_complete"] == 100
    assert any(f["filename"].startswith("wrfout_d01") for f in run["output_files"])
    assert run["output_size"] > 0


def test_stop_running_run(api: Api, tmp_path: Path) -> None:
    run_id = api.create_run()
    paths = demo_inputs(tmp_path / "inputs")
    slow = tmp_path / "standin.json"
    slow.write_text('{"wrf": {"pace_s_per_model_hour": 30}}')
    api.upload(run_id, [*paths, slow])
    api.call("POST", f"/v1/wrf/{run_id}/setup")
    api.call("POST", f"/v1/wrf/{run_id}/start", data={"cores": "1"})
    response = api.call("POST", f"/v1/wrf/{run_id}/stop")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "stopped"


def test_stop_created_run(api: Api) -> None:
    run_id = api.create_run()
    response = api.call("POST", f"/v1/wrf/{run_id}/stop")
    assert response.status_code == 409


def test_delete_keeps_record(api: Api, tmp_path: Path) -> None:
    run_id = api.create_run()
    api.upload(run_id, demo_inputs(tmp_path / "inputs"))
    response = api.call("DELETE", f"/v1/wrf/{run_id}")
    assert response.status_code == 200
    assert api.call("GET", f"/v1/wrf/{run_id}").status_code == 200


def test_openapi_lists_endpoints(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert set(paths) == {"/v1/wrf", "/v1/wrf/{run_id}", "/v1/wrf/{run_id}/upload",
                          "/v1/wrf/{run_id}/setup", "/v1/wrf/{run_id}/start",
                          "/v1/wrf/{run_id}/stop", "/v1/wrf/{run_id}/share",
                          "/v1/wrf/{run_id}/files/{filename}"}


def test_openapi_documents_form_body(api: Api) -> None:
    create = api.client.get("/openapi.json").json()["paths"]["/v1/wrf"]["post"]
    content = create["requestBody"]["content"]
    assert "version" in content["multipart/form-data"]["schema"]["properties"]
    assert "application/json" in content


# --- auth matrix ---


def test_auth_missing_token(api: Api) -> None:
    response = api.client.get("/v1/wrf")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthenticated"


def test_auth_bad_token(api: Api) -> None:
    response = api.client.get("/v1/wrf", headers={"Authorization": "Bearer wrfb_nonsense"})
    assert response.status_code == 401
    assert "invalid or revoked" in response.json()["error"]["message"]


def test_auth_wrong_scheme(api: Api) -> None:
    token = api.tokens["alice"]
    response = api.client.get("/v1/wrf", headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 401


def test_auth_revoked_token(api: Api) -> None:
    token = api.store.create_token("alice", label="to revoke")
    token_id = api.store.list_tokens("alice")[-1].id
    api.store.revoke_token(token_id)
    response = api.client.get("/v1/wrf", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_auth_other_users_run(api: Api) -> None:
    run_id = api.create_run("alice")
    response = api.call("GET", f"/v1/wrf/{run_id}", "bob")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        api.call("GET", "/v1/wrf/000000000000", "bob").json()["error"]["message"]
        .replace("000000000000", run_id))


def test_auth_other_users_delete(api: Api) -> None:
    run_id = api.create_run("alice")
    assert api.call("DELETE", f"/v1/wrf/{run_id}", "bob").status_code == 404
    assert api.call("GET", f"/v1/wrf/{run_id}").json()["deleted"] is False


def test_auth_shared_run_readable(api: Api) -> None:
    run_id = api.create_run("alice")
    shared = api.call("POST", f"/v1/wrf/{run_id}/share", data={"user": "carol"})
    assert shared.status_code == 200
    assert api.call("GET", f"/v1/wrf/{run_id}", "carol").status_code == 200
    assert [run["id"] for run in api.call("GET", "/v1/wrf", "carol").json()] == [run_id]


def test_auth_shared_run_read_only(api: Api) -> None:
    run_id = api.create_run("alice")
    api.call("POST", f"/v1/wrf/{run_id}/share", json={"user": "carol"})
    response = api.call("POST", f"/v1/wrf/{run_id}/setup", "carol")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_auth_share_unknown_user(api: Api) -> None:
    run_id = api.create_run("alice")
    response = api.call("POST", f"/v1/wrf/{run_id}/share", data={"user": "nobody"})
    assert response.status_code == 404
    assert "nobody" in response.json()["error"]["message"]


def test_auth_admin_sees_all(api: Api) -> None:
    runs = {api.create_run("alice"), api.create_run("bob")}
    listed = {run["id"] for run in api.call("GET", "/v1/wrf", "admin").json()}
    assert listed == runs
    for run_id in runs:
        assert api.call("GET", f"/v1/wrf/{run_id}", "admin").status_code == 200


def test_auth_admin_may_delete(api: Api) -> None:
    run_id = api.create_run("bob")
    assert api.call("DELETE", f"/v1/wrf/{run_id}", "admin").status_code == 200


# --- other statuses ---


def test_unknown_run_404(api: Api) -> None:
    response = api.call("GET", "/v1/wrf/abcdef123456")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_malformed_run_id_400(api: Api) -> None:
    response = api.call("GET", "/v1/wrf/NOT-AN-ID")
    assert response.status_code == 400
    assert "run id" in response.json()["error"]["message"]


def test_unknown_path_404(api: Api) -> None:
    response = api.call("GET", "/v2/runs")
    assert response.status_code == 404
    assert "/v1/wrf" in response.json()["error"]["message"]


def test_wrong_method_405(api: Api) -> None:
    response = api.call("PUT", "/v1/wrf")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_upload_over_limit_413(
    tmp_path: Path, local_installs: dict[str, str]  # noqa: F811
) -> None:
    settings = make_settings(tmp_path / "data", local_installs, max_upload_bytes=4096)
    for api in open_api(settings):
        run_id = api.create_run()
        big = tmp_path / "met_em.d01.2019-01-01_00:00:00.nc"
        big.write_bytes(b"\0" * 200_000)
        response = api.upload(run_id, [big])
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        files = api.call("GET", f"/v1/wrf/{run_id}").json()["input_files"]
        assert files == []


def test_rate_limit_429(tmp_path: Path, local_installs: dict[str, str]) -> None:  # noqa: F811
    settings = make_settings(tmp_path / "data", local_installs, rate_limit_requests=3)
    for api in open_api(settings):
        statuses = [api.call("GET", "/v1/wrf").status_code for _ in range(3)]
        response = api.call("GET", "/v1/wrf")
        assert statuses == [200, 200, 200]
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert api.call("GET", "/v1/wrf", "bob").status_code == 200


def test_rate_limit_headers(api: Api) -> None:
    response = api.call("GET", "/v1/wrf")
    assert response.headers["X-RateLimit-Limit"] == "1200"
    assert response.headers["X-RateLimit-Remaining"] == "1199"
    assert int(response.headers["X-RateLimit-Reset"]) <= 60


def test_unhandled_error_500(
    tmp_path: Path, local_installs: dict[str, str], caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    app = create_app(make_settings(tmp_path / "data", local_installs), poll=False)

    def broken() -> None:
        raise RuntimeError("secret internal detail")

    app.add_api_route("/v1/broken", broken)
    with TestClient(app) as client, caplog.at_level(logging.ERROR):
        response = client.get("/v1/broken")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret" not in response.text
    assert "secret internal detail" in caplog.text
    assert "Traceback" in caplog.text


def test_unreachable_cluster_503(
    tmp_path: Path, local_installs: dict[str, str]  # noqa: F811
) -> None:
    settings = make_settings(tmp_path / "data", local_installs)
    clusters = {**settings.clusters, "down": unreachable_cluster(tmp_path / "ssh")}
    settings = Settings(service=settings.service, clusters=clusters)
    for api in open_api(settings, poll=False):
        created = api.call("POST", "/v1/wrf", data={"version": "3.9", "cluster": "down"})
        assert created.status_code == 201
        response = api.call("DELETE", f"/v1/wrf/{created.json()['id']}")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "cluster_unavailable"
        assert int(response.headers["Retry-After"]) > 0


def test_request_log_line(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    run_id = api.create_run()
    with caplog.at_level(logging.INFO, logger="wrfbatch.service.requests"):
        api.call("GET", f"/v1/wrf/{run_id}")
    lines = [r.getMessage() for r in caplog.records if r.name == "wrfbatch.service.requests"]
    assert f"path=/v1/wrf/{run_id} status=200" in lines[-1]
    assert "user=alice" in lines[-1]
    assert f"run_id={run_id}" in lines[-1]
    assert api.tokens["alice"] not in caplog.text
