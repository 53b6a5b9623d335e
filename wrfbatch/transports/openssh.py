"""File streams through the OpenSSH client program, for the SSH transport's bulk transfers.

Why a second SSH implementation. paramiko does its SSH packet work in Python:
on the benchmark machine (2 cores, AES-NI, OpenSSH 9.2, paramiko 5.1) it put
1 GiB over SFTP in 7.2 s and got it back in 12.3 s, where ``scp`` took
2.9 s with aes128-gcm. The transport therefore moves file content through
``ssh`` when that program is installed, and keeps paramiko SFTP as the
fallback. ``benchmarks/staging.py`` measures both against scp.

Security. The program gets the same rules as the paramiko connection: only
``key_file`` is offered (no agent, no ``~/.ssh`` keys, ``-F /dev/null`` so
no user configuration applies), and the host key must already be in
``known_hosts_file`` (``StrictHostKeyChecking=yes``, no global file).

Connections. One :class:`OpenSSHLink` is one master connection
(``ControlMaster``) that lives for one transfer call or one batch. Each file
is a session multiplexed over it, so a batch of files pays for one handshake
(about 0.2 s each on the benchmark machine) instead of one per file. This
connection is separate from the transport's pooled paramiko connection, which
carries commands and polling, and it is closed when the transfer call ends.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..config import SSHConfig
from ..errors import ConnectionLostError, HostKeyError, SSHAuthenticationError, TransportError

logger = logging.getLogger(__name__)

# GCM first: aes128-gcm moved 1 GiB with scp in 2.9 s on the benchmark machine (AES-NI),
# and chacha20-poly1305, OpenSSH 9.2's default, took 6.1 s. The rest keep old servers working.
CIPHERS = (
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
    "aes128-ctr,aes192-ctr,aes256-ctr"
)
# How often the master's readiness is checked while it connects.
_READY_POLL_S = 0.01
_PIPE_READ_BYTES = 64 * 1024
# Piece size of the kernel copies and of the hashing reads. The reads reuse one buffer,
# because a new 1 MiB object per piece costs page faults.
_COPY_BYTES = 1024 * 1024
# Capacity asked for the pipes that carry file content to and from ssh: the Linux maximum
# for unprivileged processes by default (/proc/sys/fs/pipe-max-size), so that ssh rarely
# waits while this process is descheduled on a busy machine.
_PIPE_CAPACITY_BYTES = 1024 * 1024
# How often the length of a file that ssh writes itself is read.
_WATCH_INTERVAL_S = 0.005
# Errors of sendfile and splice on systems where they cannot take these descriptors.
_NO_KERNEL_COPY = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}
# OpenSSH exits with 255 for its own errors (connection, host key, authentication).
SSH_ERROR_EXIT = 255


def find_ssh_program() -> str | None:
    """Return the path of the OpenSSH ``ssh`` program, or None when it is not installed."""
    return shutil.which("ssh")


class OpenSSHLink:
    """One OpenSSH master connection that carries the file streams of one batch.

    Use it as a context manager: entering connects, leaving closes the master.
    """

    def __init__(self, config: SSHConfig, program: str) -> None:
        self.config = config
        self.program = program
        self._where = f"{config.user}@{config.host}:{config.port}"
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._master: subprocess.Popen[bytes] | None = None

    @property
    def control_path(self) -> str:
        assert self._directory is not None, "the link is not open"
        # Short name: a Unix socket path is limited to about 100 bytes.
        return str(Path(self._directory.name) / "m")

    def options(self) -> list[str]:
        """Return the ``ssh`` options shared by the master and its sessions."""
        config = self.config
        settings = {
            "BatchMode": "yes",
            "IdentitiesOnly": "yes",
            "IdentityAgent": "none",
            "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(config.known_hosts_file),
            "GlobalKnownHostsFile": "/dev/null",
            "Ciphers": CIPHERS,
            "ConnectTimeout": str(max(1, round(config.connect_timeout_s))),
            "ServerAliveInterval": str(config.keepalive_interval_s),
            "ControlPath": self.control_path,
        }
        options = ["-F", "/dev/null", "-T", "-x", "-p", str(config.port), "-l", config.user,
                   "-i", str(config.key_file)]
        for key, value in settings.items():
            options += ["-o", f"{key}={value}"]
        return options

    def command(self, remote_command: str) -> list[str]:
        """Return the argument list that runs ``remote_command`` as a session of the master."""
        return [self.program, *self.options(), "-o", "ControlMaster=no", self.config.host,
                "--", remote_command]

    def __enter__(self) -> OpenSSHLink:
        self._directory = tempfile.TemporaryDirectory(prefix="wrfbatch-ssh-")
        try:
            self._start_master()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start_master(self) -> None:
        arguments = [self.program, *self.options(), "-o", "ControlMaster=yes",
                     "-o", "ControlPersist=no", "-N", self.config.host]
        self._master = subprocess.Popen(arguments, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.config.connect_timeout_s + 5
        while not self._master_ready():
            if self._master.poll() is not None:
                stderr = self._master.stderr.read() if self._master.stderr else b""
                raise self.error(stderr.decode("utf-8", "replace"), "connecting")
            if time.monotonic() > deadline:
                raise ConnectionLostError(
                    f"OpenSSH connection to {self._where} not ready within "
                    f"{self.config.connect_timeout_s + 5:.0f} s; check that the host is up",
                    self.config.host,
                )
            time.sleep(_READY_POLL_S)
        logger.debug("OpenSSH master connection to %s is up", self._where)

    def _master_ready(self) -> bool:
        if not Path(self.control_path).exists():
            return False
        check = subprocess.run(
            [self.program, "-F", "/dev/null", "-o", f"ControlPath={self.control_path}",
             "-O", "check", self.config.host],
            stdin=subprocess.DEVNULL, capture_output=True, check=False,
        )
        return check.returncode == 0

    def close(self) -> None:
        """Stop the master connection and remove its socket directory."""
        master, self._master = self._master, None
        if master is not None and master.poll() is None:
            master.terminate()
            try:
                master.wait(timeout=5)
            except subprocess.TimeoutExpired:
                master.kill()
                master.wait()
        if master is not None and master.stderr is not None:
            master.stderr.close()
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    def error(self, stderr: str, action: str) -> TransportError:
        """Translate the OpenSSH program's error output into the project's error."""
        text = " ".join(line.strip() for line in stderr.splitlines() if line.strip())
        host = self.config.host
        if "Host key verification failed" in text or "HOST IDENTIFICATION HAS CHANGED" in text:
            return HostKeyError(
                f"OpenSSH rejected the host key of {host} port {self.config.port}: it is not "
                f"in {self.config.known_hosts_file} or differs from it ({text}); check the "
                "fingerprint with the cluster's administrators", host,
            )
        if "Permission denied" in text:
            return SSHAuthenticationError(
                f"SSH authentication as {self.config.user} on {host} failed with key "
                f"{self.config.key_file}: {text}; check that its public half is in "
                "authorized_keys on the cluster", host,
            )
        return ConnectionLostError(
            f"OpenSSH connection to {self._where} failed while {action}: "
            f"{text or 'no error output'}; check that the host is reachable, then retry", host,
        )


@dataclass
class StreamResult:
    """Outcome of one file stream: bytes moved and the remote side's output."""

    bytes_moved: int
    exit_code: int
    stdout: str
    stderr: str


def stream_from_file(
    link: OpenSSHLink, remote_command: str, path: Path, offset: int,
    consume: Callable[[memoryview], None], sent: Callable[[int], None],
) -> StreamResult:
    """Feed the file ``path`` from ``offset`` on into ``remote_command``'s stdin.

    The kernel copies the file into ssh's pipe (``sendfile``), and ``sent``
    gets the file position after each piece, so progress follows what ssh has
    taken. A thread reads the same bytes again from the page cache and passes
    them to ``consume`` (the caller hashes them) on another CPU meanwhile.
    Measured on the 2-core benchmark machine: when this process copied and
    hashed each piece itself, ssh waited for it, and 1 GiB took 3.6 to 4.8 s
    against 2.2 to 2.5 s for scp.
    """
    process = subprocess.Popen(link.command(remote_command), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    readers, stdout, stderr = _start_readers(process, with_stdout=True)
    assert process.stdin is not None
    _enlarge_pipe(process.stdin)
    moved = 0
    with _FileFollower(path, offset, consume) as follower, path.open("rb", buffering=0) as source:
        def advance(position: int) -> None:
            follower.advance(position)
            sent(position)

        try:
            moved = _send_file(source.fileno(), process.stdin.fileno(), offset, advance)
            process.stdin.close()
        except BrokenPipeError:
            logger.debug("ssh stopped reading after %d bytes", moved)
        finally:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
    return _finish(process, readers, moved, stdout, stderr)


def stream_into_file(
    link: OpenSSHLink, remote_command: str, path: Path, offset: int,
    consume: Callable[[memoryview], None], written: Callable[[int], None] | None = None,
) -> StreamResult:
    """Write ``remote_command``'s stdout into the file ``path`` after its first ``offset`` bytes.

    A thread reads the new bytes back from the page cache for ``consume`` (the
    caller hashes them) on another CPU while they arrive. Without ``written``,
    ssh writes into the file itself. With ``written``, the output goes through
    a pipe that this process splices into the file. ``written`` then gets the
    file's length after each piece, before more is taken from ssh, so a
    progress callback that interrupts the transfer stops it where the file ends.
    Measured on the 2-core benchmark machine, 1 GiB against 1.6 to 2.1 s for
    scp: 3.7 to 4.7 s when this process copied and hashed each piece itself,
    2.2 to 2.4 s with the pipe, 1.6 to 1.7 s with ssh writing the file.
    ``bytes_moved`` counts every byte of the output, so output beyond the
    expected size (a file that grew) shows up in the caller's size check.
    """
    if written is None:
        return _stream_into_file_directly(link, remote_command, path, offset, consume)
    process = subprocess.Popen(link.command(remote_command), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    readers, stdout, stderr = _start_readers(process, with_stdout=False)
    assert process.stdout is not None
    _enlarge_pipe(process.stdout)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.ftruncate(descriptor, offset)
        os.lseek(descriptor, offset, os.SEEK_SET)
        with _FileFollower(path, offset, consume) as follower:
            def advance(length: int) -> None:
                follower.advance(length)
                written(length)

            moved = _receive_file(process.stdout.fileno(), descriptor, offset, advance)
    finally:
        os.close(descriptor)
        process.stdout.close()
    return _finish(process, readers, moved, stdout, stderr)


def _stream_into_file_directly(
    link: OpenSSHLink, remote_command: str, path: Path, offset: int,
    consume: Callable[[memoryview], None],
) -> StreamResult:
    """Let ssh append its stdout to ``path`` while a thread follows the file's length."""
    with path.open("ab") as target:
        process = subprocess.Popen(link.command(remote_command), stdin=subprocess.DEVNULL,
                                   stdout=target, stderr=subprocess.PIPE)
        readers, stdout, stderr = _start_readers(process, with_stdout=False)
        length = offset
        with _FileFollower(path, offset, consume) as follower:
            while True:
                exited = process.poll() is not None
                # Once ssh has exited, this length is final.
                length = os.fstat(target.fileno()).st_size
                follower.advance(length)
                if exited:
                    break
                time.sleep(_WATCH_INTERVAL_S)
    return _finish(process, readers, length - offset, stdout, stderr)


def _send_file(source: int, pipe: int, offset: int, advance: Callable[[int], None]) -> int:
    """Copy the file ``source`` from ``offset`` to its end into ``pipe``; return the bytes."""
    position = offset
    use_sendfile = True
    while True:
        if use_sendfile:
            try:
                count = os.sendfile(pipe, source, position, _COPY_BYTES)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                use_sendfile = False  # a system whose sendfile takes no pipe: copy here
                continue
        else:
            count = os.write(pipe, os.pread(source, _COPY_BYTES, position))
        if count == 0:
            return position - offset
        position += count
        advance(position)


def _receive_file(pipe: int, target: int, offset: int, advance: Callable[[int], None]) -> int:
    """Move everything from ``pipe`` to the file ``target`` at its position; return the bytes."""
    length = offset
    splice = getattr(os, "splice", None)  # Linux and Python 3.10 or later
    while True:
        if splice is not None:
            try:
                count = splice(pipe, target, _COPY_BYTES)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                splice = None
                continue
        else:
            count = os.write(target, os.read(pipe, _COPY_BYTES))
        if count == 0:
            return length - offset
        length += count
        advance(length)


def _enlarge_pipe(pipe: BinaryIO) -> None:
    """Ask for a larger pipe buffer; keep the default where the system refuses or lacks it."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if set_size is None:
        return
    try:
        fcntl.fcntl(pipe.fileno(), set_size, _PIPE_CAPACITY_BYTES)
    except OSError as exc:
        logger.debug("pipe capacity left at its default: %s", exc)


class _FileFollower:
    """A thread that reads a file up to the length that :meth:`advance` allows, behind the
    process that writes or sends it, and passes each piece to ``consume``.

    Leaving the ``with`` block waits until every allowed byte has been consumed,
    and raises the error that stopped the thread, if any.
    """

    def __init__(self, path: Path, offset: int, consume: Callable[[memoryview], None]) -> None:
        self._path = path
        self._offset = offset
        self._consume = consume
        self._limit = offset
        self._closed = False
        self._condition = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="wrfbatch-hash", daemon=True)

    def __enter__(self) -> _FileFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error

    def advance(self, limit: int) -> None:
        with self._condition:
            self._limit = limit
            self._condition.notify()

    def _next_limit(self, done: int) -> int | None:
        """Wait until bytes past ``done`` are allowed; return the limit, or None at the end."""
        with self._condition:
            while done >= self._limit and not self._closed:
                self._condition.wait()
            return self._limit if done < self._limit else None

    def _run(self) -> None:
        buffer = memoryview(bytearray(_COPY_BYTES))
        done = self._offset
        try:
            with self._path.open("rb", buffering=0) as source:
                source.seek(done)
                while (limit := self._next_limit(done)) is not None:
                    while done < limit and (count := source.readinto(
                            buffer[:min(_COPY_BYTES, limit - done)])):
                        self._consume(buffer[:count])
                        done += count
        except BaseException as exc:  # raised again in __exit__, in the caller's thread
            self._error = exc


def _start_readers(
    process: subprocess.Popen[bytes], with_stdout: bool
) -> tuple[list[threading.Thread], list[bytes], list[bytes]]:
    """Start threads that drain the process's stderr (and stdout), so a full pipe never blocks it."""
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    pipes = [(process.stderr, stderr)] + ([(process.stdout, stdout)] if with_stdout else [])
    readers = [threading.Thread(target=_drain_pipe, args=(pipe, chunks), daemon=True)
               for pipe, chunks in pipes]
    for reader in readers:
        reader.start()
    return readers, stdout, stderr


def _drain_pipe(pipe: BinaryIO | None, chunks: list[bytes]) -> None:
    if pipe is None:
        return
    with pipe:
        while chunk := pipe.read1(_PIPE_READ_BYTES):  # type: ignore[attr-defined]
            chunks.append(chunk)


def _finish(
    process: subprocess.Popen[bytes], readers: list[threading.Thread], moved: int,
    stdout: list[bytes], stderr: list[bytes],
) -> StreamResult:
    exit_code = process.wait()
    for reader in readers:
        reader.join()
    return StreamResult(moved, exit_code, b"".join(stdout).decode("utf-8", "replace"),
                        b"".join(stderr).decode("utf-8", "replace"))
