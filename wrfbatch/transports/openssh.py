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
A batch upload without a progress callback runs OpenSSH's ``sftp`` program
instead (:func:`sftp_batch`), on one connection of its own for the batch.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shlex
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


def find_sftp_program(ssh_program: str) -> str | None:
    """Return the OpenSSH ``sftp`` program installed beside ``ssh_program``, or on PATH."""
    beside = Path(ssh_program).with_name("sftp")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("sftp")


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
        options = ["-F", "/dev/null", "-T", "-x", "-p", str(config.port), "-l", config.user,
                   "-i", str(config.key_file)]
        for key, value in self._settings().items():
            options += ["-o", f"{key}={value}"]
        return options

    def sftp_command(self, sftp_program: str) -> list[str]:
        """Return the argument list that runs ``sftp_program`` in batch mode (commands on
        its stdin) on a connection of its own, with the same key and host key rules.

        Not through the master: on the 2-core benchmark machine, starting a master
        for an sftp batch cost 0.16 s before the first byte moved.
        """
        config = self.config
        options = ["-F", "/dev/null", "-P", str(config.port), "-i", str(config.key_file),
                   "-S", self.program, "-o", f"User={config.user}"]
        for key, value in self._settings(shared=False).items():
            options += ["-o", f"{key}={value}"]
        return [sftp_program, "-q", "-B", str(SFTP_WRITE_BYTES), "-b", "-", *options,
                config.host]

    def _settings(self, shared: bool = True) -> dict[str, str]:
        """Return the ``-o`` settings; ``shared`` adds those of the master connection."""
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
        }
        if shared:
            settings["ControlPath"] = self.control_path
        return settings

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


# Bytes per sftp write request. With 64 KiB, the 24-file set took a median of 1.47 s
# (6 rounds) on the benchmark machine. sftp's default of 32 KiB took 1.79 s, 128 KiB took
# 1.64 s, and scp took 1.79 s. OpenSSH's server accepts writes up to 256 KiB and announces
# its limit, which sftp then respects.
# NOTE: a server that accepts only 32 KiB writes and announces no limit would fail them.
SFTP_WRITE_BYTES = 64 * 1024
# Paths that sftp's batch parser takes as they are: absolute (no option or "~" reading), no
# quote, backslash, space or glob character (put expands globs in both of its paths).
_SFTP_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._+,:=@%/-]*$")


@dataclass
class SftpPut:
    """One file of an sftp batch: the local file, its partial file on the cluster, and
    whether the partial file's bytes are kept (sftp's reput appends the rest)."""

    local: Path
    partial: str
    resume: bool


def sftp_batch_usable(paths: list[str]) -> bool:
    """Return whether every path can be written into an sftp batch without quoting."""
    return all(_SFTP_PLAIN_PATH.match(path) for path in paths)


def sftp_batch(link: OpenSSHLink, sftp_program: str, puts: list[SftpPut]) -> StreamResult:
    """Upload ``puts`` with OpenSSH's sftp program on a connection of its own. The caller
    checks the sources and renames the partial files; ``link`` need not be open.

    sftp moves the bytes in C with up to 64 write requests in flight, as scp
    does (scp speaks the SFTP protocol since OpenSSH 9.0), and the cluster's
    sshd writes them itself when it serves SFTP in-process (internal-sftp).
    Measured on the 2-core benchmark machine, where internal-sftp serves the
    testbed, a 24-file set moved through one shell session (sshd, a pipe and
    a process writing each file) took 15 to 25 % longer than scp. sftp stops
    at the first command that fails; ``bytes_moved`` is not counted (0).
    """
    commands = "".join(f"{'reput' if put.resume else 'put'} {put.local} {put.partial}\n"
                       for put in puts)
    assert sftp_batch_usable([str(put.local) for put in puts] + [put.partial for put in puts])
    process = subprocess.Popen(link.sftp_command(sftp_program), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    readers, stdout, stderr = _start_readers(process, with_stdout=True)
    assert process.stdin is not None
    try:
        process.stdin.write(commands.encode())
        process.stdin.close()
    except BrokenPipeError:
        logger.debug("sftp exited before it read its commands")
    return _finish(process, readers, 0, stdout, stderr)


# The cluster's side of a batch upload, run by sh. Its arguments are the partial and final
# path of each file in turn. Per file, the stream carries a line "offset length size", then
# ``length`` bytes for the partial file from ``offset`` on, then a line "commit" or "abort"
# (the sender's verdict after it checked that the source did not change). On commit the
# script checks the partial file's size, renames it and prints "ok N" for file N.
# GNU head -c reads no byte past its count from a pipe. Other heads may read ahead and so
# swallow the next file's header, which is why the script exits when head is not GNU head.
BATCH_RECEIVER = r"""
fail() { printf 'wrfbatch-receive: %s\n' "$*" >&2; exit 1; }
head --version 2>/dev/null | grep -q GNU || { echo 'wrfbatch-receive: no GNU head' >&2; exit 3; }
n=0
while [ "$#" -ge 2 ]; do
    partial=$1 final=$2
    shift 2
    read -r offset length size || fail "the stream ended before file $n"
    if [ "$offset" -eq 0 ]; then
        : > "$partial" || fail "cannot create $partial"
    fi
    head -c "$length" >> "$partial" || fail "writing $partial failed"
    read -r verdict || fail "the stream ended inside file $n"
    if [ "$verdict" = commit ]; then
        have=$(wc -c < "$partial") || fail "cannot read the size of $partial"
        if [ "$have" -ne "$size" ]; then
            rm -f -- "$partial"
            fail "$partial has $have bytes, expected $size"
        fi
        chmod 644 -- "$partial" && mv -f -- "$partial" "$final" || fail "cannot rename $partial"
        echo "ok $n"
    else
        rm -f -- "$partial"
    fi
    n=$((n + 1))
done
"""
# Exit status of BATCH_RECEIVER on a cluster without GNU head.
BATCH_RECEIVER_UNSUPPORTED = 3


@dataclass
class OutgoingFile:
    """One file of a batch stream: what to send, and the callbacks that follow it."""

    path: Path
    partial: str
    final: str
    offset: int
    size: int
    # None when the caller knows the file's SHA-256: the bytes are then not read twice.
    consume: Callable[[memoryview], None] | None
    sent: Callable[[int], None]
    # Called after the bytes went out: True commits the file on the cluster, False drops it.
    unchanged: Callable[[], bool]


@dataclass
class BatchStreamResult:
    """Outcome of a batch stream: which files the cluster renamed into place, and why it
    stopped when it did not take them all."""

    committed: set[int]
    bytes_moved: dict[int, int]
    exit_code: int
    stderr: str


def batch_receiver_command(files: list[OutgoingFile]) -> str:
    """Return the cluster's command that receives ``files`` in one session."""
    paths = [path for item in files for path in (item.partial, item.final)]
    return " ".join(["sh", "-c", shlex.quote(BATCH_RECEIVER), "wrfbatch-receive",
                     *map(shlex.quote, paths)])


def stream_files(link: OpenSSHLink, files: list[OutgoingFile]) -> BatchStreamResult:
    """Send ``files`` one after another through one session running :data:`BATCH_RECEIVER`.

    Per file, this costs one header and one verdict line in the stream, where
    a session per file cost an ssh process start and several SFTP round trips.
    The bytes move as in :func:`stream_from_file`: the kernel copies them into
    ssh's pipe, and a thread hashes them from the page cache meanwhile.
    """
    process = subprocess.Popen(link.command(batch_receiver_command(files)),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    readers, stdout, stderr = _start_readers(process, with_stdout=True)
    assert process.stdin is not None
    _enlarge_pipe(process.stdin)
    pipe = process.stdin.fileno()
    moved: dict[int, int] = {}
    try:
        for index, item in enumerate(files):
            moved[index] = _send_one(pipe, item)
            if moved[index] < item.size - item.offset:
                break  # the file shrank: closing the stream stops the receiver inside it
    except BrokenPipeError:
        logger.debug("the batch receiver stopped reading after %d files", len(moved))
    except BaseException:
        _stop(process)  # a callback raised: no ssh process may outlive the call
        raise
    finally:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    result = _finish(process, readers, sum(moved.values()), stdout, stderr)
    committed = {int(line.split()[1]) for line in result.stdout.splitlines()
                 if line.startswith("ok ")}
    return BatchStreamResult(committed, moved, result.exit_code, result.stderr)


def _send_one(pipe: int, item: OutgoingFile) -> int:
    """Write one file's header, bytes and verdict into the batch stream; return its bytes."""
    _write_all(pipe, f"{item.offset} {item.size - item.offset} {item.size}\n".encode())
    consume = item.consume
    with (_FileFollower(item.path, item.offset, consume) if consume else
          contextlib.nullcontext() as follower, item.path.open("rb", buffering=0) as source):
        def advance(position: int) -> None:
            if follower is not None:
                follower.advance(position)
            item.sent(position)

        moved = _send_file(source.fileno(), pipe, item.offset, advance, end=item.size)
    if moved == item.size - item.offset:
        _write_all(pipe, b"commit\n" if item.unchanged() else b"abort\n")
    return moved


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


def _write_all(pipe: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(pipe, view):]


def _send_file(
    source: int, pipe: int, offset: int, advance: Callable[[int], None],
    end: int | None = None,
) -> int:
    """Copy the file ``source`` from ``offset`` into ``pipe`` until its end, or until the
    position ``end`` when given; return the bytes copied."""
    position = offset
    use_sendfile = True
    while end is None or position < end:
        piece = _COPY_BYTES if end is None else min(_COPY_BYTES, end - position)
        if use_sendfile:
            try:
                count = os.sendfile(pipe, source, position, piece)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                use_sendfile = False  # a system whose sendfile takes no pipe: copy here
                continue
        else:
            count = os.write(pipe, os.pread(source, piece, position))
        if count == 0:
            break
        position += count
        advance(position)
    return position - offset


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
