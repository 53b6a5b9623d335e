"""Loading settings from TOML and the environment, and rejecting invalid ones at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from wrfbatch.config import load_settings
from wrfbatch.errors import ConfigError

CLUSTER = """
[clusters.hpc]
transport = "ssh"
work_root = "/scratch/wrf"
partition = "debug"
max_cores = 64
[clusters.hpc.ssh]
host = "login.example.org"
user = "wrfsvc"
key_file = "/etc/wrfbatch/id_ed25519"
known_hosts_file = "/etc/wrfbatch/known_hosts"
[clusters.hpc.wrf."3.9"]
path = "/opt/wrf/WRF-3.9"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wrfbatch.toml"
    path.write_text(text)
    return path


def test_toml_cluster_loaded(tmp_path):
    settings = load_settings(write(tmp_path, CLUSTER), env={})
    name, cluster = settings.cluster()
    assert name == "hpc"
    assert cluster.partition == "debug"
    assert cluster.wrf["3.9"].path == "/opt/wrf/WRF-3.9"
    assert cluster.ssh is not None
    assert cluster.ssh.port == 22


def test_environment_overrides_file(tmp_path):
    env = {"WRFBATCH_CLUSTERS__HPC__PARTITION": "long", "WRFBATCH_SERVICE__PORT": "9000"}
    settings = load_settings(write(tmp_path, CLUSTER), env=env)
    assert settings.clusters["hpc"].partition == "long"
    assert settings.service.port == 9000


def test_config_path_from_environment(tmp_path):
    path = write(tmp_path, CLUSTER)
    assert list(load_settings(env={"WRFBATCH_CONFIG": str(path)}).clusters) == ["hpc"]


def test_embedded_default_without_file():
    settings = load_settings(env={})
    name, cluster = settings.cluster()
    assert name == "local"
    assert cluster.scheduler == "local"
    assert cluster.transport == "local"
    assert set(cluster.wrf) == {"3.8.1", "3.9"}


@pytest.mark.parametrize(("text", "key", "value"), [
    (CLUSTER.replace('"debug"', '"de;bug"'), "clusters.hpc.partition", "'de;bug'"),
    (CLUSTER.replace("max_cores = 64", "max_cores = 0"), "clusters.hpc.max_cores", "0"),
    (CLUSTER.replace('"/scratch/wrf"', '"scratch"'), "clusters.hpc.work_root", "'scratch'"),
    (CLUSTER + "bogus = 1\n", "clusters.hpc.wrf.3.9.bogus", "1"),
    (CLUSTER.replace('wrf."3.9"', 'wrf."three"'), "clusters.hpc.wrf", ""),
    (CLUSTER.replace('"login.example.org"', '"host; rm -rf /"'), "clusters.hpc.ssh.host", ""),
])
def test_invalid_setting_named(tmp_path, text, key, value):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env={})
    message = str(caught.value)
    assert key in message
    assert value in message


def test_environment_value_with_newline_rejected(tmp_path):
    text = CLUSTER + '[clusters.hpc.environment]\nX = "a\\nb"\n'
    with pytest.raises(ConfigError, match="newline"):
        load_settings(write(tmp_path, text), env={})


def test_ssh_transport_needs_ssh_table(tmp_path):
    text = '[clusters.hpc]\ntransport = "ssh"\nwork_root = "/scratch"\n'
    with pytest.raises(ConfigError, match=r"\[ssh\] table"):
        load_settings(write(tmp_path, text), env={})


def test_local_scheduler_needs_local_transport(tmp_path):
    text = CLUSTER.replace('transport = "ssh"', 'transport = "ssh"\nscheduler = "local"')
    with pytest.raises(ConfigError, match="needs transport 'local'"):
        load_settings(write(tmp_path, text), env={})


def test_unknown_default_cluster_rejected(tmp_path):
    text = '[service]\ndefault_cluster = "nope"\n' + CLUSTER
    with pytest.raises(ConfigError, match="'nope' is not one of"):
        load_settings(write(tmp_path, text), env={})


def test_missing_file_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml", env={})


def test_invalid_toml_named(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[clusters\n"), env={})


def test_misspelt_key_suggests_nearest(tmp_path):
    text = CLUSTER.replace('user = "wrfsvc"', 'user = "wrfsvc"\nportt = 22')
    with pytest.raises(ConfigError, match="clusters.hpc.ssh.portt = 22: unknown key; did you "
                                          "mean 'port'"):
        load_settings(write(tmp_path, text), env={})
