"""Transfers through the OpenSSH program: batches, skip, resume after a cut, host keys."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ssh_support import established, is_running, ssh_config

from wrfbatch.errors import HostKeyError, TransferError
from wrfbatch.transports import TransferResult
from wrfbatch.transports import openssh as openssh_module
from wrfbatch.transports import ssh as ssh_module
from wrfbatch.transports.openssh import OpenSSHLink, find_ssh_program
from wrfbatch.transports.ssh import SSHTransport

MiB = 1024 * 1024

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(find_ssh_program() is None, reason="the OpenSSH ssh program is missing"),
]


@pytest.fixture
def transport(testbed) -> Iterator[SSHTransport]:
    with SSHTransport(ssh_config(testbed)) as shared:
        yield shared


@pytest.fixture
def remote_dir(testbed, transport: SSHTransport) -> Iterator[str]:
    path = f"{testbed.remote_home}/wrfbatch-tests/{uuid.uuid4().hex[:12]}"
    transport.make_dirs(path)
    yield path
    transport.remove_tree(path)


def random_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def partial_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.part"))


def own_bytes_sent(port: int) -> int:
    """Return the bytes this process (not its ssh children) sent on its connection to ``port``."""
    lines = subprocess.run(["ss", "-tnipH", "state", "established", f"( dport = :{port} )"],
                           capture_output=True, text=True, check=True).stdout
    mine = [block for block in lines.split("users:")[1:] if f"pid={os.getpid()}," in block]
    return sum(int(value) for block in mine for value in re.findall(r"bytes_acked:(\d+)", block))


def check_uploaded(
    results: list[TransferResult], sources: list[Path], digests: list[str], remote_dir: str
) -> None:
    """Check that each upload reports its source's SHA-256, that the cluster has the same
    bytes, and that no partial file is left."""
    assert [result.sha256 for result in results] == digests
    assert [sha256_of(Path(remote_dir) / path.name) for path in sources] == digests
    assert partial_files(Path(remote_dir)) == []


def child_ssh_pids() -> list[int]:
    """Return the ssh programs this process started, directly or through sftp."""
    parents: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            text = stat.read_text()
            name = text[text.index("(") + 1:text.rindex(")")]
            parents[int(stat.parent.name)] = (int(text.rsplit(")", 1)[1].split()[1]), name)

    def descends(pid: int) -> bool:
        while pid in parents and pid > 1:
            pid = parents[pid][0]
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, (_, name) in parents.items() if name == "ssh" and descends(pid)]


def cut_openssh_connections(port: int) -> None:
    """Kill the sshd processes that serve this process's ssh programs' connections."""
    children = child_ssh_pids()
    local_ports = [int(line.split()[2].rsplit(":", 1)[1]) for line in established(port)
                   if any(f"pid={pid}," in line for pid in children)]
    servers: set[int] = set()
    for local_port in local_ports:
        where = f"( sport = :{port} and dport = :{local_port} )"
        lines = subprocess.run(["ss", "-tnpH", "state", "established", where],
                               capture_output=True, text=True, check=True).stdout
        servers.update(int(pid) for pid in re.findall(r"pid=(\d+)", lines))
    assert servers, "no sshd process found for the ssh program's connection"
    for pid in servers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(map(is_running, servers)) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_batch_round_trip(
    testbed, transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    sources = [tmp_path / f"met_em.d01.{hour:02d}.nc" for hour in range(5)]
    digests = [random_file(path, (hour + 1) * 300_000) for hour, path in enumerate(sources)]
    seen: list[tuple[int, int]] = []
    before = own_bytes_sent(testbed.ssh_port)
    uploaded = transport.upload_many(
        [(path, f"{remote_dir}/{path.name}") for path in sources],
        progress=lambda done, total: seen.append((done, total)),
    )
    back = transport.download_many(
        [(f"{remote_dir}/{path.name}", tmp_path / "back" / path.name) for path in sources]
    )
    assert [result.sha256 for result in uploaded] == digests
    assert [result.sha256 for result in back] == digests
    assert [sha256_of(tmp_path / "back" / path.name) for path in sources] == digests
    assert seen[-1] == (sum(path.stat().st_size for path in sources),) * 2
    # The content went through the ssh program, not this process's paramiko connection.
    assert own_bytes_sent(testbed.ssh_port) - before < 1 * MiB
    assert partial_files(Path(remote_dir)) == []
    assert partial_files(tmp_path / "back") == []


def test_upload_again_skipped(transport: SSHTransport, remote_dir: str, tmp_path: Path) -> None:
    source = tmp_path / "wrfinput_d01"
    random_file(source, 2 * MiB)
    transport.upload(source, f"{remote_dir}/wrfinput_d01")
    again = transport.upload(source, f"{remote_dir}/wrfinput_d01")
    assert again.skipped
    assert again.bytes_moved == 0


def test_download_again_skipped(
    transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    source = tmp_path / "wrfout_d01"
    random_file(source, 2 * MiB)
    transport.upload(source, f"{remote_dir}/wrfout_d01")
    transport.download(f"{remote_dir}/wrfout_d01", tmp_path / "back")
    again = transport.download(f"{remote_dir}/wrfout_d01", tmp_path / "back")
    assert again.skipped


def test_upload_resumes_left_partial(
    transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    source = tmp_path / "wrfbdy_d01"
    sha256 = random_file(source, 3 * MiB)
    partial = f"{remote_dir}/.wrfbdy_d01.{3 * MiB}-{int(source.stat().st_mtime)}.part"
    transport.write_bytes(partial, source.read_bytes()[: 1 * MiB])
    result = transport.upload(source, f"{remote_dir}/wrfbdy_d01")
    assert result.bytes_moved == 2 * MiB
    assert sha256_of(Path(remote_dir) / "wrfbdy_d01") == sha256


@pytest.mark.skipif(os.geteuid() != 0, reason="cutting a connection kills sshd, which needs root")
def test_upload_resumes_after_cut(
    testbed, transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    source = tmp_path / "wrfinput_d01"
    size = 40 * MiB
    sha256 = random_file(source, size)
    cut: list[bool] = []

    def cut_once(done: int, total: int) -> None:
        if not cut and done >= 16 * MiB:
            cut_openssh_connections(testbed.ssh_port)
            cut.append(True)

    result = transport.upload(source, f"{remote_dir}/wrfinput_d01", progress=cut_once)
    assert cut
    # Bytes that reached the partial file before the cut are not sent again.
    assert result.bytes_moved < size - 8 * MiB
    assert sha256_of(Path(remote_dir) / "wrfinput_d01") == sha256
    assert partial_files(Path(remote_dir)) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="cutting a connection kills sshd, which needs root")
def test_download_resumes_after_cut(
    testbed, transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    source = tmp_path / "wrfout_d01"
    size = 40 * MiB
    sha256 = random_file(source, size)
    transport.upload(source, f"{remote_dir}/wrfout_d01")
    cut: list[bool] = []

    def cut_once(done: int, total: int) -> None:
        if not cut and done >= 16 * MiB:
            cut_openssh_connections(testbed.ssh_port)
            cut.append(True)

    target = tmp_path / "back" / "wrfout_d01"
    result = transport.download(f"{remote_dir}/wrfout_d01", target, progress=cut_once)
    assert cut
    assert result.bytes_moved <= size - 16 * MiB
    assert sha256_of(target) == sha256
    assert partial_files(target.parent) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="cutting a connection kills sshd, which needs root")
def test_batch_upload_resumes_after_cut(
    testbed, transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    sources = [tmp_path / f"met_em.d01.{hour:02d}.nc" for hour in range(6)]
    digests = [random_file(path, 8 * MiB) for path in sources]
    cut: list[bool] = []
    lock = threading.Lock()

    def cut_once(done: int, total: int) -> None:
        # The batch's streams report from their own threads.
        with lock:
            if not cut and done >= 28 * MiB:
                cut_openssh_connections(testbed.ssh_port)
                cut.append(True)

    results = transport.upload_many([(path, f"{remote_dir}/{path.name}") for path in sources],
                                    progress=cut_once)
    assert cut
    # Each result counts the bytes of its last try: the partial files of the files that were
    # on their way at the cut were resumed, not sent again from the start.
    moved = [result.bytes_moved for result in results]
    assert sum(moved) <= 48 * MiB - 1 * MiB, moved
    check_uploaded(results, sources, digests, remote_dir)


@pytest.mark.skipif(os.geteuid() != 0, reason="cutting a connection kills sshd, which needs root")
def test_sftp_batch_resumes_after_cut(
    testbed, transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    # Without a progress callback the batch goes through sftp: the cut is timed by the
    # partial files' growth on the cluster (the same file system here).
    assert transport.sftp_program is not None
    sources = [tmp_path / f"met_em.d01.{hour:02d}.nc" for hour in range(6)]
    digests = [random_file(path, 8 * MiB) for path in sources]
    cut = threading.Event()

    def cut_when_started() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            arrived = sum(path.stat().st_size for path in partial_files(Path(remote_dir)))
            if arrived >= 12 * MiB:
                cut_openssh_connections(testbed.ssh_port)
                cut.set()
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=cut_when_started)
    watcher.start()
    try:
        results = transport.upload_many(
            [(path, f"{remote_dir}/{path.name}") for path in sources])
    finally:
        watcher.join()
    assert cut.is_set()
    moved = [result.bytes_moved for result in results]
    assert sum(moved) <= 48 * MiB - 1 * MiB, moved
    check_uploaded(results, sources, digests, remote_dir)


def test_known_digests_not_hashed_again(
    transport: SSHTransport, remote_dir: str, tmp_path: Path, monkeypatch
) -> None:
    sources = [tmp_path / f"met_em.d01.{hour:02d}.nc" for hour in range(3)]
    digests = [random_file(path, 300_000) for path in sources]
    monkeypatch.setattr(ssh_module, "_hash_remainders", _fail_if_called)
    monkeypatch.setattr(ssh_module, "_file_sha256", _fail_if_called)
    results = transport.upload_many([(path, f"{remote_dir}/{path.name}") for path in sources],
                                    sha256=digests)
    check_uploaded(results, sources, digests, remote_dir)
    again = transport.upload_many([(path, f"{remote_dir}/{path.name}") for path in sources],
                                  sha256=digests)
    assert all(result.skipped for result in again)


def _fail_if_called(*args: object) -> None:
    raise AssertionError("a file with a known SHA-256 was hashed again")


def test_batch_split_into_commands(
    transport: SSHTransport, remote_dir: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(ssh_module, "_MAX_COMMAND_PATH_CHARS", 400)
    sources = [tmp_path / f"met_em.d01.{hour:02d}.nc" for hour in range(7)]
    digests = [random_file(path, 100_000 + hour) for hour, path in enumerate(sources)]
    files = [(path, f"{remote_dir}/{path.name}") for path in sources]
    assert len(ssh_module._command_chunks(files)) > 2
    results = transport.upload_many(files)
    check_uploaded(results, sources, digests, remote_dir)


def test_batch_receiver_missing_falls_back(
    transport: SSHTransport, remote_dir: str, tmp_path: Path, monkeypatch
) -> None:
    # A cluster whose head is not GNU head: the receiver exits with its "unsupported" status.
    monkeypatch.setattr(openssh_module, "BATCH_RECEIVER",
                        f"exit {openssh_module.BATCH_RECEIVER_UNSUPPORTED}")
    sources = [tmp_path / f"met_em.d01.{hour:02d}.nc" for hour in range(3)]
    digests = [random_file(path, 200_000) for path in sources]
    # A progress callback sends the batch through the receiver rather than sftp.
    results = transport.upload_many([(path, f"{remote_dir}/{path.name}") for path in sources],
                                    progress=lambda done, total: None)
    check_uploaded(results, sources, digests, remote_dir)
    assert transport._batch_receiver_missing


def test_sftp_missing_falls_back(
    transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    # A cluster whose sshd serves no SFTP: sftp fails as OpenSSH's does there.
    fake = tmp_path / "sftp"
    fake.write_text("#!/bin/sh\ncat >/dev/null\n"
                    "echo 'subsystem request failed on channel 0' >&2\nexit 255\n")
    fake.chmod(0o755)
    transport.sftp_program = str(fake)
    sources = [tmp_path / f"met_em.d01.{hour:02d}.nc" for hour in range(3)]
    digests = [random_file(path, 200_000) for path in sources]
    results = transport.upload_many([(path, f"{remote_dir}/{path.name}") for path in sources])
    check_uploaded(results, sources, digests, remote_dir)
    assert transport._sftp_missing


def test_verified_round_trip(testbed, tmp_path: Path) -> None:
    config = ssh_config(testbed, verify_remote_sha256=True)
    sources = [tmp_path / f"met_em.d01.{hour:02d}.nc" for hour in range(3)]
    digests = [random_file(path, (hour + 1) * 200_000) for hour, path in enumerate(sources)]
    remote = f"{testbed.remote_home}/wrfbatch-tests/{uuid.uuid4().hex[:12]}"
    with SSHTransport(config) as verified:
        try:
            uploaded = verified.upload_many([(path, f"{remote}/{path.name}") for path in sources])
            back = verified.download_many(
                [(f"{remote}/{path.name}", tmp_path / "back" / path.name) for path in sources])
            remote_digests = [sha256_of(Path(remote) / path.name) for path in sources]
        finally:
            verified.remove_tree(remote)
    assert [result.sha256 for result in uploaded] == digests
    assert remote_digests == digests
    assert [result.sha256 for result in back] == digests
    assert [sha256_of(tmp_path / "back" / path.name) for path in sources] == digests


def test_verified_upload_resumes(testbed, remote_dir: str, tmp_path: Path) -> None:
    source = tmp_path / "wrfbdy_d01"
    sha256 = random_file(source, 3 * MiB)
    partial = f"{remote_dir}/.wrfbdy_d01.{3 * MiB}-{int(source.stat().st_mtime)}.part"
    with SSHTransport(ssh_config(testbed, verify_remote_sha256=True)) as verified:
        verified.write_bytes(partial, source.read_bytes()[: 1 * MiB])
        result = verified.upload(source, f"{remote_dir}/wrfbdy_d01")
    assert result.bytes_moved == 2 * MiB
    assert result.sha256 == sha256
    assert sha256_of(Path(remote_dir) / "wrfbdy_d01") == sha256


def test_unverified_download_resumes(
    transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    source = tmp_path / "wrfout_d01"
    sha256 = random_file(source, 3 * MiB)
    transport.upload(source, f"{remote_dir}/wrfout_d01")
    target = tmp_path / "back" / "wrfout_d01"
    target.parent.mkdir()
    mtime = int((Path(remote_dir) / "wrfout_d01").stat().st_mtime)
    (target.parent / f".wrfout_d01.{3 * MiB}-{mtime}.part").write_bytes(
        source.read_bytes()[: 1 * MiB])
    result = transport.download(f"{remote_dir}/wrfout_d01", target)
    assert result.bytes_moved == 2 * MiB
    assert result.sha256 == sha256
    assert sha256_of(target) == sha256


def test_unverified_partial_mismatch_restarts(
    transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    source = tmp_path / "wrfbdy_d01"
    sha256 = random_file(source, 2 * MiB)
    partial = f"{remote_dir}/.wrfbdy_d01.{2 * MiB}-{int(source.stat().st_mtime)}.part"
    transport.write_bytes(partial, os.urandom(1 * MiB))
    result = transport.upload(source, f"{remote_dir}/wrfbdy_d01")
    assert result.bytes_moved == 2 * MiB
    assert sha256_of(Path(remote_dir) / "wrfbdy_d01") == sha256


def test_upload_source_changed_rejected(
    transport: SSHTransport, remote_dir: str, tmp_path: Path
) -> None:
    source = tmp_path / "wrfinput_d01"
    random_file(source, 8 * MiB)
    changed: list[bool] = []

    def append_once(done: int, total: int) -> None:
        if not changed:
            with source.open("ab") as handle:
                handle.write(b"more")
            changed.append(True)

    with pytest.raises(TransferError, match="changed"):
        transport.upload(source, f"{remote_dir}/wrfinput_d01", progress=append_once)
    assert not (Path(remote_dir) / "wrfinput_d01").exists()


def test_link_rejects_unknown_host(testbed, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    program = find_ssh_program()
    assert program is not None
    with pytest.raises(HostKeyError, match="host key"):
        with OpenSSHLink(ssh_config(testbed, known_hosts_file=empty), program):
            pass


def test_link_closes_master(testbed) -> None:
    program = find_ssh_program()
    assert program is not None
    with OpenSSHLink(ssh_config(testbed), program) as link:
        socket_path = Path(link.control_path)
        assert socket_path.exists()
    assert not socket_path.exists()
    assert child_ssh_pids() == []
