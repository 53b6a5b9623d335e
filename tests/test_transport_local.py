"""The Transport contract, checked on LocalTransport and on SSHTransport against the testbed.

Every test here runs twice: with the local transport on a temporary directory,
and with the SSH transport on a directory in the testbed user's home (marker
``cluster``). Tests of what only SSH has (pooling, reconnects, host keys) are
in test_transport_ssh.py.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wrfbatch.config import SSHConfig
from wrfbatch.errors import (
    ConnectionLostError,
    InvalidInputError,
    RemoteCommandError,
    TransferError,
)
from wrfbatch.transports import LocalTransport, SSHTransport, Transport

HOSTILE_ARGUMENTS = [
    "two words",
    "single ' quote",
    'double " quote',
    "semi; colon",
    "$(touch /tmp/wrfbatch-injected)",
    "`id`",
    "new\nline",
    "back\\slash",
    "*",
    "-n",
    "",
]


@dataclass
class Side:
    """A transport and a scratch directory on the side that it reaches."""

    transport: Transport
    root: str

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))


@pytest.fixture(scope="module")
def ssh_transport(request: pytest.FixtureRequest) -> Iterator[SSHTransport]:
    testbed = request.getfixturevalue("testbed")
    config = SSHConfig(
        host=testbed.ssh_host, port=testbed.ssh_port, user=testbed.ssh_user,
        key_file=testbed.ssh_key, known_hosts_file=testbed.known_hosts,
    )
    with SSHTransport(config) as transport:
        yield transport


@pytest.fixture(params=["local", pytest.param("ssh", marks=pytest.mark.cluster)])
def side(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Side]:
    if request.param == "local":
        yield Side(LocalTransport(), str(tmp_path / "remote"))
        return
    transport = request.getfixturevalue("ssh_transport")
    home = request.getfixturevalue("testbed").remote_home
    root = f"{home}/wrfbatch-tests/{uuid.uuid4().hex[:12]}"
    transport.make_dirs(root)
    yield Side(transport, root)
    transport.remove_tree(root)


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their SHA-256."""
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


# -- commands ---------------------------------------------------------------------------


def test_run_exit_code_zero(side: Side) -> None:
    result = side.transport.run("echo hello")
    assert result.exit_code == 0
    assert result.stdout == "hello\n"
    assert result.stderr == ""


def test_run_nonzero_unchecked(side: Side) -> None:
    result = side.transport.run("echo oops >&2; exit 3", check=False)
    assert result.exit_code == 3
    assert result.stderr == "oops\n"


def test_run_check_raises_with_stderr(side: Side) -> None:
    command = "for i in $(seq 1 30); do echo line$i >&2; done; exit 7"
    with pytest.raises(RemoteCommandError) as caught:
        side.transport.run(command)
    assert caught.value.exit_code == 7
    assert caught.value.command == command
    assert "line30" in str(caught.value)
    assert "line1\n" not in str(caught.value)  # only the end of stderr
    assert side.transport.host in str(caught.value)


def test_run_hostile_arguments_verbatim(side: Side) -> None:
    result = side.transport.run(["printf", "%s\\0", *HOSTILE_ARGUMENTS])
    assert result.stdout.split("\0")[:-1] == HOSTILE_ARGUMENTS
    assert not side.transport.exists("/tmp/wrfbatch-injected")


def test_run_stdin_bytes(side: Side) -> None:
    data = bytes(range(256)) * 4
    result = side.transport.run("od -An -v -tx1 | tr -d ' \\n'", stdin=data)
    assert result.stdout == data.hex()


def test_run_large_stderr_and_stdout(side: Side) -> None:
    # 4 MiB on stderr before 4 MiB on stdout: a reader that drains stdout first deadlocks.
    command = ("head -c 4194304 /dev/zero | tr '\\0' e >&2; "
               "head -c 4194304 /dev/zero | tr '\\0' o")
    result = side.transport.run(command, timeout_s=60)
    assert result.stdout == "o" * 4194304
    assert result.stderr == "e" * 4194304


def test_run_large_stdin_echoed(side: Side) -> None:
    data = os.urandom(6 * 1024 * 1024)
    result = side.transport.run("cat | sha256sum", stdin=data, timeout_s=60)
    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_run_large_stdin_unread(side: Side) -> None:
    result = side.transport.run("exit 0", stdin=os.urandom(4 * 1024 * 1024), timeout_s=30)
    assert result.exit_code == 0


def test_run_timeout_raises(side: Side) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectionLostError, match="timed out"):
        side.transport.run("sleep 10; echo late", timeout_s=0.5)
    assert time.monotonic() - started < 5


def test_run_timeout_with_child(side: Side) -> None:
    # The shell's child keeps the output open after the shell itself is killed.
    started = time.monotonic()
    with pytest.raises(ConnectionLostError):
        side.transport.run("sleep 10 | cat", timeout_s=0.5)
    assert time.monotonic() - started < 5


def test_run_detached_returns_at_once(side: Side) -> None:
    started = time.monotonic()
    side.transport.run("nohup sleep 5 >/dev/null 2>&1 &")
    assert time.monotonic() - started < 3


# -- small files -------------------------------------------------------------------------


def test_write_read_roundtrip(side: Side) -> None:
    path = side.path("a", "b", "data.bin")
    data = os.urandom(70000)
    side.transport.write_bytes(path, data)
    assert side.transport.read_bytes(path) == data


def test_read_bytes_max(side: Side) -> None:
    path = side.path("data.txt")
    side.transport.write_text(path, "0123456789")
    assert side.transport.read_bytes(path, max_bytes=4) == b"0123"


def test_read_missing_raises(side: Side) -> None:
    with pytest.raises(TransferError, match="missing.txt"):
        side.transport.read_bytes(side.path("missing.txt"))


def test_write_bytes_mode(side: Side) -> None:
    path = side.path("script.sh")
    side.transport.write_text(path, "#!/bin/sh\necho ran\n", mode=0o755)
    assert side.transport.run(path).stdout == "ran\n"


def test_write_bytes_replaces_atomically(side: Side) -> None:
    path = side.path("state.json")
    side.transport.write_text(path, "old")
    side.transport.write_text(path, "new")
    assert side.transport.read_text(path) == "new"
    assert [f.name for f in side.transport.list_dir(side.root)] == ["state.json"]


def test_list_dir_regular_files(side: Side) -> None:
    side.transport.write_text(side.path("b.txt"), "bb")
    side.transport.write_text(side.path("a.txt"), "a")
    side.transport.make_dirs(side.path("subdir"))
    side.transport.run(["ln", "-s", side.path("a.txt"), side.path("link.txt")])
    listing = side.transport.list_dir(side.root)
    assert [f.name for f in listing] == ["a.txt", "b.txt"]
    assert [f.size_bytes for f in listing] == [1, 2]
    assert all(f.mtime > 0 for f in listing)


def test_list_dir_missing_empty(side: Side) -> None:
    assert side.transport.list_dir(side.path("absent")) == []


def test_exists_file_and_missing(side: Side) -> None:
    side.transport.write_text(side.path("here.txt"), "x")
    assert side.transport.exists(side.path("here.txt"))
    assert not side.transport.exists(side.path("gone.txt"))


def test_make_dirs_nested_twice(side: Side) -> None:
    path = side.path("x", "y", "z")
    side.transport.make_dirs(path)
    side.transport.make_dirs(path)
    assert side.transport.run(["test", "-d", path], check=False).exit_code == 0


def test_remove_tree_and_missing(side: Side) -> None:
    path = side.path("tree")
    side.transport.write_text(f"{path}/deep/file.txt", "x")
    side.transport.remove_tree(path)
    assert not side.transport.exists(path)
    side.transport.remove_tree(path)


@pytest.mark.parametrize("path", ["/", "//", "/home", "/home/", "relative/dir", "/a/../b"])
def test_remove_tree_rejects_path(side: Side, path: str) -> None:
    with pytest.raises(InvalidInputError):
        side.transport.remove_tree(path)


def test_remove_tree_quotes_path(side: Side) -> None:
    keep = side.path("keep.txt")
    side.transport.write_text(keep, "x")
    side.transport.remove_tree(side.path("no such; rm -f keep.txt"))
    assert side.transport.exists(keep)


# -- transfers ---------------------------------------------------------------------------


def test_upload_download_roundtrip(side: Side, tmp_path: Path) -> None:
    source = tmp_path / "met_em.d01.nc"
    sha256 = random_file(source, 3 * 1024 * 1024 + 17)
    uploaded = side.transport.upload(source, side.path("in", "met_em.d01.nc"))
    back = tmp_path / "back" / "met_em.d01.nc"
    downloaded = side.transport.download(side.path("in", "met_em.d01.nc"), back)
    assert uploaded.sha256 == sha256
    assert uploaded.bytes_moved == source.stat().st_size
    assert downloaded.sha256 == sha256
    assert hashlib.sha256(back.read_bytes()).hexdigest() == sha256


def test_upload_empty_file(side: Side, tmp_path: Path) -> None:
    source = tmp_path / "empty"
    source.write_bytes(b"")
    result = side.transport.upload(source, side.path("empty"))
    assert result.size_bytes == 0
    assert side.transport.read_bytes(side.path("empty")) == b""


def test_upload_skips_identical(side: Side, tmp_path: Path) -> None:
    source = tmp_path / "wrfinput_d01"
    random_file(source, 200000)
    side.transport.upload(source, side.path("wrfinput_d01"))
    again = side.transport.upload(source, side.path("wrfinput_d01"))
    assert again.skipped
    assert again.bytes_moved == 0


def test_upload_replaces_same_size(side: Side, tmp_path: Path) -> None:
    source = tmp_path / "namelist.input"
    source.write_bytes(b"a" * 1000)
    side.transport.upload(source, side.path("namelist.input"))
    source.write_bytes(b"b" * 1000)
    result = side.transport.upload(source, side.path("namelist.input"))
    assert not result.skipped
    assert side.transport.read_bytes(side.path("namelist.input")) == b"b" * 1000


def test_download_skips_identical(side: Side, tmp_path: Path) -> None:
    side.transport.write_bytes(side.path("wrfout"), b"x" * 5000)
    side.transport.download(side.path("wrfout"), tmp_path / "wrfout")
    again = side.transport.download(side.path("wrfout"), tmp_path / "wrfout")
    assert again.skipped
    assert again.bytes_moved == 0


def test_upload_progress_reaches_total(side: Side, tmp_path: Path) -> None:
    source = tmp_path / "big"
    random_file(source, 2 * 1024 * 1024 + 5)
    calls: list[tuple[int, int]] = []
    side.transport.upload(source, side.path("big"), progress=lambda d, t: calls.append((d, t)))
    done = [d for d, _ in calls]
    assert calls[-1] == (source.stat().st_size, source.stat().st_size)
    assert done == sorted(done)


def test_download_missing_raises(side: Side, tmp_path: Path) -> None:
    with pytest.raises(TransferError):
        side.transport.download(side.path("absent.nc"), tmp_path / "absent.nc")
    assert not (tmp_path / "absent.nc").exists()


def test_upload_leaves_no_temporary(side: Side, tmp_path: Path) -> None:
    source = tmp_path / "wrfbdy_d01"
    random_file(source, 100000)
    side.transport.upload(source, side.path("wrfbdy_d01"))
    names = side.transport.run(["ls", "-A", side.root]).stdout.split()
    assert names == ["wrfbdy_d01"]
