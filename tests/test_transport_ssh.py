"""SSHTransport against the testbed's sshd: pooling, channel cap, drops, resume and host keys.

The behaviour that SSH shares with the local transport is tested in
test_transport_local.py. Tests that cut the connection kill the sshd processes
that serve it, which needs root because sshd runs as root.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from ssh_support import cut_connections, own_local_ports, ssh_config

from wrfbatch.config import ClusterConfig, SSHConfig
from wrfbatch.errors import (
    ConnectionLostError,
    HostKeyError,
    SSHAuthenticationError,
)
from wrfbatch.transports import (
    LocalTransport,
    SSHTransport,
    close_transports,
    make_transport,
)

MiB = 1024 * 1024
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="cutting a connection kills sshd processes, which needs root"
)


@pytest.fixture
def transport(testbed) -> Iterator[SSHTransport]:
    # Transfers take the paramiko SFTP path here, whose connection these tests can cut;
    # test_transport_bulk.py covers transfers through the OpenSSH program.
    with SSHTransport(ssh_config(testbed), ssh_program=None) as shared:
        yield shared


@pytest.fixture
def remote_dir(testbed, transport: SSHTransport) -> Iterator[str]:
    """A scratch directory in the testbed user's home, which is also on this machine."""
    path = f"{testbed.remote_home}/wrfbatch-tests/{uuid.uuid4().hex[:12]}"
    transport.make_dirs(path)
    yield path
    transport.remove_tree(path)


def wire_bytes(port: int) -> dict[str, int]:
    """Return the kernel's byte counters of this process's one connection to ``port``."""
    result = subprocess.run(["ss", "-tnipH", "state", "established", f"( dport = :{port} )"],
                            capture_output=True, text=True, check=True)
    blocks = result.stdout.split("users:")
    mine = [block for block in blocks[1:] if f"pid={os.getpid()}," in block]
    assert len(mine) == 1, result.stdout
    return {key: int(value) for key, value in re.findall(r"(bytes_\w+):(\d+)", mine[0])}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def count_processes(argv: list[str]) -> int:
    """Count processes on this machine whose command line is exactly ``argv``."""
    wanted = "\0".join(argv) + "\0"
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                count += (entry / "cmdline").read_text() == wanted
            except OSError:
                continue
    return count


class Sampler:
    """Samples values in a thread while a block runs; keeps every sample per name."""

    def __init__(self, probes: dict[str, Callable[[], int]], interval_s: float = 0.03) -> None:
        self.probes = probes
        self.interval_s = interval_s
        self.samples: dict[str, list[int]] = {name: [] for name in probes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, probe in self.probes.items():
                self.samples[name].append(probe())
            time.sleep(self.interval_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def run_in_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` in ``count`` threads at once; return results or exceptions."""
    results: list[object] = [None] * count

    def target(index: int) -> None:
        try:
            results[index] = work(index)
        except Exception as exc:  # collected so that the test can show it
            results[index] = exc

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


# -- pooling and the channel cap ----------------------------------------------------------


@pytest.mark.cluster
def test_threads_share_one_connection(testbed, transport: SSHTransport) -> None:
    argv = ["sleep", "0.317"]
    probes = {
        "connections": lambda: len(own_local_ports(testbed.ssh_port)),
        "sleeps": lambda: count_processes(argv),
    }
    with Sampler(probes) as sampler:
        results = run_in_threads(30, lambda i: transport.run(argv, timeout_s=60))
    failures = [r for r in results if isinstance(r, Exception)]
    assert failures == []
    assert max(sampler.samples["connections"]) == 1
    assert max(sampler.samples["sleeps"]) <= transport.config.max_channels
    assert max(sampler.samples["sleeps"]) >= 2  # the commands did run concurrently


@pytest.mark.cluster
def test_quick_commands_keep_connection(
    testbed, transport: SSHTransport, caplog: pytest.LogCaptureFixture
) -> None:
    # Commands that exit at once race their end of file against the server's close:
    # sent in the wrong order, sshd drops the connection and every thread reconnects.
    transport.run(["true"])
    connection = transport._client
    with caplog.at_level("WARNING", logger="wrfbatch.transports.ssh"):
        results = run_in_threads(8, lambda i: [transport.run(["true"]) for _ in range(60)])
    assert [r for r in results if isinstance(r, Exception)] == []
    # Refused channel opens (sshd's MaxSessions) are retried and logged by paramiko only.
    assert [r.message for r in caplog.records if r.name.startswith("wrfbatch")] == []
    assert transport._client is connection


@pytest.mark.cluster
def test_channel_cap_limits_commands(testbed) -> None:
    argv = ["sleep", "0.219"]
    with SSHTransport(ssh_config(testbed, max_channels=3)) as capped:
        with Sampler({"sleeps": lambda: count_processes(argv)}) as sampler:
            results = run_in_threads(12, lambda i: capped.run(argv, timeout_s=60))
    assert [r for r in results if isinstance(r, Exception)] == []
    assert max(sampler.samples["sleeps"]) <= 3
    assert max(sampler.samples["sleeps"]) >= 2


@pytest.mark.cluster
def test_mixed_sftp_and_commands(transport: SSHTransport, remote_dir: str) -> None:
    path = f"{remote_dir}/state.txt"
    transport.write_text(path, "RUNNING")

    def work(index: int) -> object:
        if index % 2:
            return transport.read_text(path)
        return transport.run(["sleep", "0.1"]).exit_code

    results = run_in_threads(40, work)
    assert [r for r in results if isinstance(r, Exception)] == []
    assert results.count("RUNNING") == 20


@pytest.mark.cluster
def test_cipher_prefers_aes_gcm(transport: SSHTransport) -> None:
    transport.run("true")
    assert transport.cipher is not None
    assert transport.cipher.startswith("aes")
    assert "-gcm@" in transport.cipher


@pytest.mark.cluster
def test_keepalive_sent_when_idle(testbed) -> None:
    with SSHTransport(ssh_config(testbed, keepalive_interval_s=1)) as idle:
        idle.run("true")
        time.sleep(0.5)  # lets the replies to the command's channel close go out first
        before = wire_bytes(testbed.ssh_port)["bytes_sent"]
        time.sleep(2.5)
        after = wire_bytes(testbed.ssh_port)["bytes_sent"]
    assert after > before


# -- drops and reconnects -----------------------------------------------------------------


@needs_root
@pytest.mark.cluster
def test_run_reconnects_after_cut(testbed, transport: SSHTransport) -> None:
    transport.run("true")
    cut_connections(testbed.ssh_port)
    assert transport.run("echo back").stdout == "back\n"
    assert len(own_local_ports(testbed.ssh_port)) == 1


def _cut_during_command(
    testbed, transport: SSHTransport, remote_dir: str, idempotent: bool
) -> tuple[object, int]:
    """Run a 2 s command, cut the connection once it started; return result and start count."""
    log = Path(remote_dir) / "starts.log"
    command = f"echo started >> {log}; sleep 2; echo done"
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.extend(
        run_in_threads(1, lambda i: transport.run(command, idempotent=idempotent))))
    worker.start()
    deadline = time.monotonic() + 10
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    cut_connections(testbed.ssh_port)
    worker.join(30)
    return outcome[0], len(log.read_text().splitlines())


@needs_root
@pytest.mark.cluster
def test_interrupted_command_not_rerun(testbed, transport: SSHTransport, remote_dir: str) -> None:
    result, starts = _cut_during_command(testbed, transport, remote_dir, idempotent=False)
    assert isinstance(result, ConnectionLostError)
    assert result.retryable
    assert starts == 1


@needs_root
@pytest.mark.cluster
def test_idempotent_command_rerun(testbed, transport: SSHTransport, remote_dir: str) -> None:
    result, starts = _cut_during_command(testbed, transport, remote_dir, idempotent=True)
    assert getattr(result, "stdout", None) == "done\n"
    assert starts == 2


# -- transfers ----------------------------------------------------------------------------


def _partial_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.part"))


@needs_root
@pytest.mark.cluster
def test_upload_resumes_after_cut(
    testbed, transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    source = tmp_path / "wrfinput_d01"
    size = 40 * MiB
    sha256 = random_file(source, size)
    kept: list[int] = []

    def cut_once(done: int, total: int) -> None:
        if not kept and done >= 16 * MiB:
            cut_connections(testbed.ssh_port)
            kept.append(_partial_files(Path(remote_dir))[0].stat().st_size)

    result = transport.upload(source, f"{remote_dir}/wrfinput_d01", progress=cut_once)
    assert kept[0] > 0
    assert result.bytes_moved == size - kept[0]
    assert wire_bytes(testbed.ssh_port)["bytes_acked"] < result.bytes_moved + MiB
    assert result.sha256 == sha256
    assert sha256_of(Path(remote_dir) / "wrfinput_d01") == sha256
    assert _partial_files(Path(remote_dir)) == []


@needs_root
@pytest.mark.cluster
def test_download_resumes_after_cut(
    testbed, transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    size = 40 * MiB
    sha256 = random_file(Path(remote_dir) / "wrfout_d01", size)
    os.chown(Path(remote_dir) / "wrfout_d01", *_owner(remote_dir))
    target = tmp_path / "out" / "wrfout_d01"
    cut: list[bool] = []

    def cut_once(done: int, total: int) -> None:
        if not cut and done >= 16 * MiB:
            cut_connections(testbed.ssh_port)
            cut.append(True)

    result = transport.download(f"{remote_dir}/wrfout_d01", target, progress=cut_once)
    # Data that arrived before the cut is still written, so the resumed part is smaller
    # than the 24 MiB still missing when the cut happened.
    assert result.bytes_moved <= size - 16 * MiB
    assert wire_bytes(testbed.ssh_port)["bytes_received"] < result.bytes_moved + MiB
    assert sha256_of(target) == sha256
    assert _partial_files(target.parent) == []


def _owner(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_uid, info.st_gid


@pytest.mark.cluster
def test_upload_partial_name_hidden(
    transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    source = tmp_path / "met_em.d01.2024-01-01_00:00:00.nc"
    random_file(source, 8 * MiB)
    destination = f"{remote_dir}/{source.name}"
    seen: list[tuple[bool, int]] = []

    def look(done: int, total: int) -> None:
        if done >= 4 * MiB and not seen:
            seen.append((transport.exists(destination), len(_partial_files(Path(remote_dir)))))

    transport.upload(source, destination, progress=look)
    assert seen == [(False, 1)]
    assert transport.exists(destination)


@pytest.mark.cluster
def test_upload_resumes_left_partial(
    transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    source = tmp_path / "wrfbdy_d01"
    sha256 = random_file(source, 3 * MiB)
    # An earlier try that stopped after 1 MiB left this partial file.
    partial = f"{remote_dir}/.wrfbdy_d01.{3 * MiB}-{int(source.stat().st_mtime)}.part"
    transport.write_bytes(partial, source.read_bytes()[: 1 * MiB])
    result = transport.upload(source, f"{remote_dir}/wrfbdy_d01")
    assert result.bytes_moved == 2 * MiB
    assert sha256_of(Path(remote_dir) / "wrfbdy_d01") == sha256


@pytest.mark.cluster
def test_upload_restarts_corrupt_partial(
    transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    source = tmp_path / "wrfbdy_d01"
    sha256 = random_file(source, 3 * MiB)
    partial = f"{remote_dir}/.wrfbdy_d01.{3 * MiB}-{int(source.stat().st_mtime)}.part"
    transport.write_bytes(partial, b"\0" * MiB)
    result = transport.upload(source, f"{remote_dir}/wrfbdy_d01")
    assert result.bytes_moved == 3 * MiB
    assert sha256_of(Path(remote_dir) / "wrfbdy_d01") == sha256


@pytest.mark.cluster
def test_transfers_without_remote_sha256sum(
    transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    # Takes the path used when the cluster has neither sha256sum nor shasum.
    transport._remote_hasher_missing = True
    source = tmp_path / "namelist.input"
    sha256 = random_file(source, 300000)
    transport.upload(source, f"{remote_dir}/namelist.input")
    again = transport.upload(source, f"{remote_dir}/namelist.input")
    back = transport.download(f"{remote_dir}/namelist.input", tmp_path / "back")
    assert again.skipped
    assert back.sha256 == sha256
    assert sha256_of(tmp_path / "back") == sha256


# -- host keys and authentication ---------------------------------------------------------


def _generate_key(directory: Path) -> Path:
    key = directory / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.mark.cluster
def test_unknown_host_key_rejected(testbed, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    with SSHTransport(ssh_config(testbed, known_hosts_file=known_hosts)) as transport:
        with pytest.raises(HostKeyError) as caught:
            transport.run("true")
    message = str(caught.value)
    assert testbed.ssh_host in message
    assert str(testbed.ssh_port) in message
    assert str(known_hosts) in message
    assert "SHA256:" in message


@pytest.mark.cluster
def test_changed_host_key_rejected(testbed, tmp_path: Path) -> None:
    other = _generate_key(tmp_path)
    key_type, key_data = Path(f"{other}.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{testbed.ssh_host}]:{testbed.ssh_port} {key_type} {key_data}\n")
    with SSHTransport(ssh_config(testbed, known_hosts_file=known_hosts)) as transport:
        with pytest.raises(HostKeyError) as caught:
            transport.run("true")
    message = str(caught.value)
    assert testbed.ssh_host in message
    assert f"port {testbed.ssh_port}" in message
    assert str(known_hosts) in message
    assert "replace the line" in message
    assert isinstance(caught.value.__cause__, paramiko.BadHostKeyException)


@pytest.mark.cluster
def test_missing_known_hosts_rejected(testbed, tmp_path: Path) -> None:
    known_hosts = tmp_path / "absent_known_hosts"
    with SSHTransport(ssh_config(testbed, known_hosts_file=known_hosts)) as transport:
        with pytest.raises(HostKeyError, match="absent_known_hosts"):
            transport.exists("/tmp")


def test_invalid_known_hosts_rejected(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("[127.0.0.1]:2222 ssh-ed25519 AAAA-not-base64\n")
    config = SSHConfig(host="127.0.0.1", port=2222, user="nobody", key_file=_generate_key(tmp_path),
                       known_hosts_file=known_hosts, connect_timeout_s=2)
    with SSHTransport(config) as transport, pytest.raises(HostKeyError, match="invalid line"):
        transport.run("true")


@pytest.mark.cluster
def test_wrong_key_rejected(testbed, tmp_path: Path) -> None:
    with SSHTransport(ssh_config(testbed, key_file=_generate_key(tmp_path))) as transport:
        with pytest.raises(SSHAuthenticationError) as caught:
            transport.run("true")
    assert "other_key" in str(caught.value)
    assert not caught.value.retryable


@pytest.mark.cluster
def test_wrong_user_rejected(testbed) -> None:
    with SSHTransport(ssh_config(testbed, user="nosuchuser")) as transport:
        with pytest.raises(SSHAuthenticationError, match="nosuchuser"):
            transport.run("true")


@pytest.mark.cluster
def test_missing_key_file_rejected(testbed, tmp_path: Path) -> None:
    with SSHTransport(ssh_config(testbed, key_file=tmp_path / "no_key")) as transport:
        with pytest.raises(SSHAuthenticationError, match="no_key"):
            transport.run("true")


def test_unreachable_port_retryable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    config = SSHConfig(host="127.0.0.1", port=port, user="nobody", key_file=_generate_key(tmp_path),
                       known_hosts_file=known_hosts, connect_timeout_s=2)
    with SSHTransport(config) as transport, pytest.raises(ConnectionLostError) as caught:
        transport.run("true")
    assert caught.value.retryable
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert caught.value.__cause__ is not None


# -- the shared registry ------------------------------------------------------------------


def _cluster(port: int = 2222, transport: str = "ssh") -> ClusterConfig:
    ssh = SSHConfig(host="127.0.0.1", port=port, user="wrfuser", key_file="/k",
                    known_hosts_file="/kh")
    if transport == "local":
        return ClusterConfig(transport="local", scheduler="local", work_root="/scratch/wrf")
    return ClusterConfig(transport="ssh", ssh=ssh, work_root="/scratch/wrf")


def test_make_transport_local() -> None:
    assert isinstance(make_transport(_cluster(transport="local")), LocalTransport)


def test_make_transport_shared_per_name() -> None:
    try:
        first = make_transport(_cluster(), "hpc")
        assert make_transport(_cluster(), "hpc") is first
        assert make_transport(_cluster(), "other") is not first
    finally:
        close_transports()


def test_make_transport_new_on_change() -> None:
    try:
        first = make_transport(_cluster(), "hpc")
        second = make_transport(_cluster(port=2223), "hpc")
        assert second is not first
        assert second.config.port == 2223
    finally:
        close_transports()
