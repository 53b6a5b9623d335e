"""The wrfbatch command line: tokens, check, render, validate, runs and the demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from service_support import (
    demo_inputs,
    local_installs,  # noqa: F401 - fixture
    make_settings,
    settings_toml,
    unreachable_cluster,
)

from wrfbatch.cli import main
from wrfbatch.config import Settings
from wrfbatch.runs import RunManager
from wrfbatch.store import Store


@pytest.fixture
def settings(tmp_path: Path, local_installs: dict[str, str]) -> Settings:  # noqa: F811
    return make_settings(tmp_path / "data", local_installs)


@pytest.fixture
def config(tmp_path: Path, settings: Settings) -> str:
    path = tmp_path / "wrfbatch.toml"
    path.write_text(settings_toml(settings))
    return str(path)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def ready_run(settings: Settings, directory: Path) -> str:
    """Create a run of user ann with uploaded inputs, set up, and return its id."""
    manager = RunManager(settings)
    try:
        run = manager.create_run("ann", "3.9")
        for path in demo_inputs(directory):
            with path.open("rb") as handle:
                manager.upload(run.id, path.name, handle)
        manager.setup(run.id)
        return run.id
    finally:
        manager.close()


def test_token_create_prints_token(capsys: pytest.CaptureFixture[str], config: str,
                                   settings: Settings) -> None:
    status, out, _ = run_cli(capsys, "--config", config, "token", "create", "ann", "--admin")
    assert status == 0
    token = out.strip()
    with Store(settings.service.resolved_database_url) as store:
        user = store.find_user_by_token(token)
    assert user is not None
    assert user.is_admin


def test_token_list_hides_tokens(capsys: pytest.CaptureFixture[str], config: str) -> None:
    _, token, _ = run_cli(capsys, "--config", config, "token", "create", "ann", "--label", "lab")
    status, out, _ = run_cli(capsys, "--config", config, "token", "list")
    assert status == 0
    assert "lab" in out
    assert token.strip() not in out


def test_token_revoke_blocks_token(capsys: pytest.CaptureFixture[str], config: str,
                                   settings: Settings) -> None:
    _, out, _ = run_cli(capsys, "--config", config, "token", "create", "ann")
    with Store(settings.service.resolved_database_url) as store:
        token_id = store.list_tokens("ann")[0].id
    status, _, _ = run_cli(capsys, "--config", config, "token", "revoke", str(token_id))
    assert status == 0
    with Store(settings.service.resolved_database_url) as store:
        assert store.find_user_by_token(out.strip()) is None


def test_token_revoke_unknown(capsys: pytest.CaptureFixture[str], config: str) -> None:
    status, _, err = run_cli(capsys, "--config", config, "token", "revoke", "999")
    assert status == 1
    assert "token 999 not found" in err


def test_check_local_ok(capsys: pytest.CaptureFixture[str], config: str) -> None:
    status, out, _ = run_cli(capsys, "--config", config, "check")
    assert status == 0, out
    assert "FAILED" not in out
    assert "WRF 3.9 install" in out


def test_check_unreachable_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                 settings: Settings) -> None:
    down = Settings(service=settings.service,
                    clusters={"down": unreachable_cluster(tmp_path / "ssh")})
    path = tmp_path / "down.toml"
    path.write_text(settings_toml(down))
    status, out, _ = run_cli(capsys, "--config", str(path), "check")
    assert status == 1
    assert "FAILED" in out


def test_validate_valid_namelist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    namelist = demo_inputs(tmp_path)[0]
    status, out, _ = run_cli(capsys, "validate", str(namelist), "--version", "3.9")
    assert status == 0
    assert "valid" in out


def test_validate_invalid_namelist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    namelist = tmp_path / "namelist.input"
    namelist.write_text("&time_control\n run_hours = 1\n/\n")
    status, out, _ = run_cli(capsys, "validate", str(namelist), "--version", "3.9")
    assert status == 1
    assert out.strip().splitlines()
    assert all(line.startswith(str(namelist)) for line in out.strip().splitlines())


def test_validate_bad_version(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    namelist = demo_inputs(tmp_path)[0]
    status, out, _ = run_cli(capsys, "validate", str(namelist), "--version", "three")
    assert status == 1
    assert "three" in out


def test_render_prints_scripts(capsys: pytest.CaptureFixture[str], config: str,
                               settings: Settings, tmp_path: Path) -> None:
    run_id = ready_run(settings, tmp_path / "inputs")
    status, out, _ = run_cli(capsys, "--config", config, "render", run_id, "--cores", "1")
    assert status == 0
    assert "# ===== namelist.input =====" in out
    assert "# ===== wrf.sh =====" in out


def test_render_needs_cores(capsys: pytest.CaptureFixture[str], config: str,
                            settings: Settings, tmp_path: Path) -> None:
    run_id = ready_run(settings, tmp_path / "inputs")
    status, _, err = run_cli(capsys, "--config", config, "render", run_id)
    assert status == 1
    assert "--cores" in err


def test_runs_list_and_show(capsys: pytest.CaptureFixture[str], config: str,
                            settings: Settings, tmp_path: Path) -> None:
    run_id = ready_run(settings, tmp_path / "inputs")
    status, out, _ = run_cli(capsys, "--config", config, "runs", "list")
    assert status == 0
    assert run_id in out
    assert "ready" in out
    status, out, _ = run_cli(capsys, "--config", config, "runs", "show", run_id)
    assert status == 0
    assert "namelist.input" in out


def test_runs_watch_timeout(capsys: pytest.CaptureFixture[str], config: str,
                            settings: Settings, tmp_path: Path) -> None:
    run_id = ready_run(settings, tmp_path / "inputs")
    status, out, err = run_cli(capsys, "--config", config, "runs", "watch", run_id,
                               "--interval", "0.1", "--timeout", "0.3")
    assert status == 1
    assert "0.0% ready" in out
    assert "still ready" in err


def test_runs_show_unknown(capsys: pytest.CaptureFixture[str], config: str) -> None:
    status, _, err = run_cli(capsys, "--config", config, "runs", "show", "abcdef123456")
    assert status == 1
    assert "not found" in err


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run_cli(capsys, "--config", str(tmp_path / "absent.toml"), "check")
    assert status == 1
    assert "not found" in err


def test_demo_ends_done(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("WRFBATCH_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    result = subprocess.run([sys.executable, "-m", "wrfbatch.cli", "demo", "--timeout", "120"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is done" in result.stdout
    assert "wrfout_d01_2019-01-01_03:00:00" in result.stdout
    assert (tmp_path / "xdg" / "wrfbatch" / "wrf" / "3.9" / "main" / "wrf.exe").exists()


def test_validate_lists_missing_met_em(tmp_path: Path) -> None:
    from conftest import SMALL_NAMELIST

    namelist = tmp_path / "namelist.input"
    namelist.write_text(SMALL_NAMELIST)
    (tmp_path / "met").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "wrfbatch.cli", "validate", "--version", "3.9",
         "--met-em", str(tmp_path / "met"), str(namelist)],
        capture_output=True, text=True)
    assert result.returncode == 1
    assert "missing met_em file met_em.d01.2019-09-04_15:00:00.nc" in result.stdout
