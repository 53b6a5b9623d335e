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
# stream_from_file and stream_into_file read what ssh has written in pieces of this size, and waits this long
# when it has caught up with ssh.
_FOLLOW_READ_BYTES = 1024 * 1024
_FOLLOW_POLL_S = 0.005
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
    consume: Callable[[bytes], None],
) -> StreamResult:
    """Run ``remote_command`` with the file ``path`` from ``offset`` on as its stdin, and pass
    each stretch of the file to ``consume`` once ssh has read it.

    ssh reads the file itself (OpenSSH hands the descriptor on to the master
    connection), so no byte passes through this process on its way out. This
    process reads the same bytes again from the page cache for ``consume``
    (the caller hashes them) on another CPU meanwhile, following the shared
    file offset, so progress tracks what ssh has read. ``bytes_moved`` is that
    offset's advance: the bytes ssh read, some of which may not have reached
    the cluster when the connection failed.
    """
    with path.open("rb", buffering=0) as source:
        source.seek(offset)
        process = subprocess.Popen(link.command(remote_command), stdin=source,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        readers, stdout, stderr = _start_readers(process, with_stdout=True)
        done = offset
        with path.open("rb") as follower:
            follower.seek(offset)
            while True:
                exited = process.poll() is not None
                # The child's stdin shares this descriptor's offset: it is how far ssh has read.
                sent = os.lseek(source.fileno(), 0, os.SEEK_CUR)
                while done < sent and (chunk := follower.read(min(_FOLLOW_READ_BYTES,
                                                                  sent - done))):
                    consume(chunk)
                    done += len(chunk)
                if exited:
                    break
                time.sleep(_FOLLOW_POLL_S)
    return _finish(process, readers, done - offset, stdout, stderr)


def stream_into_file(
    link: OpenSSHLink, remote_command: str, path: Path, offset: int,
    consume: Callable[[bytes], None],
) -> StreamResult:
    """Append ``remote_command``'s stdout to the file ``path``, whose first ``offset`` bytes
    are kept, and pass each new stretch of the file to ``consume`` while ssh writes it.

    ssh writes into the file itself, so no byte passes through this process on
    its way to the disk. This process reads the new bytes back from the page
    cache for ``consume`` (the caller hashes them) on another CPU meanwhile:
    when it copied the bytes from a pipe instead, 1 GiB took 3.7 to 4.7 s to
    download against 1.9 to 2.1 s for scp on the 2-core benchmark machine.
    ``bytes_moved`` counts every byte the command wrote, so output beyond the
    expected size (a file that grew) shows up in the caller's size check.
    """
    with path.open("ab") as target:
        process = subprocess.Popen(link.command(remote_command), stdin=subprocess.DEVNULL,
                                   stdout=target, stderr=subprocess.PIPE)
    readers, stdout, stderr = _start_readers(process, with_stdout=False)
    moved = 0
    with path.open("rb") as follower:
        follower.seek(offset)
        while True:
            exited = process.poll() is not None
            # Read until the end of what is written so far; after ssh exits, that is all.
            while chunk := follower.read(_FOLLOW_READ_BYTES):
                consume(chunk)
                moved += len(chunk)
            if exited:
                break
            time.sleep(_FOLLOW_POLL_S)
    return _finish(process, readers, moved, stdout, stderr)


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
