"""The SSH transport: commands and SFTP transfers over one paramiko connection per cluster.

Connection. One SSH connection is opened on first use and shared by every
thread (the service's poller and its request handlers). Each command and each
SFTP session is a channel on that connection, and at most ``max_channels``
channels are open at once, which must stay below the server's MaxSessions
(10 in OpenSSH's default sshd_config). Idle SFTP sessions are kept for reuse
and closed when a command needs their channel slot. Keepalive messages go out
every ``keepalive_interval_s`` seconds. AES-GCM ciphers are preferred when
the server offers them, because they move data faster than AES-CTR with HMAC.

Drops and retries. After a drop, the next operation reconnects. An operation
that the drop interrupted is tried once more on a new connection when that is
safe: reads, listings, file operations that give the same result when
repeated, uploads and downloads (which resume from their partial file),
commands that had not started, and commands that the caller marks
``idempotent=True``. Any other interrupted command raises ConnectionLostError,
because it may already have run on the cluster.

Host keys and credentials. Only ``known_hosts_file`` is read: a host missing
from it, or one that presents another key, is rejected with HostKeyError.
Only ``key_file`` is offered, never an SSH agent or keys from ``~/.ssh``.

Background processes. sshd closes a command's channel only after every
process that has the command's stdout or stderr open has exited, so
``run("cmd &")`` waits for ``cmd``. Detach a process with
``nohup cmd >/dev/null 2>&1 &``.

Transfers. File content moves through the OpenSSH ``ssh`` and ``sftp``
programs when they are installed (see :mod:`.openssh` for why and how), over
paramiko SFTP otherwise.
A file is written under a partial name in the destination directory,
``.<name>.<size>-<mtime>.part``, checked against the source's size and then
renamed into place, so the final name never has a partial file. The partial
name depends only on the destination and the source's size and modification
time, so an interrupted transfer of an unchanged source resumes from the
partial file's length once the partial file's content is verified (by SHA-256)
against the same number of bytes of the source.

Checksums. Every transfer returns the SHA-256 of the bytes that moved,
computed here while they are read or written, or given by the caller of
``upload_many`` for a file whose size and time do not change meanwhile. With ``verify_remote_sha256``
the cluster also hashes the file as it arrives (uploads) or while it is sent
(downloads), and a mismatch fails the transfer. That second hash is off by
default: the SSH cipher's authentication (AES-GCM or chacha20-poly1305) already
rejects bytes altered on the way, and on the 2-core benchmark machine, where
the ssh client and sshd share the CPUs, it made 1 GiB uploads take 3.6 to 4.8 s
and downloads 4.7 to 5.5 s against 2.2 to 2.5 s for scp
(``benchmarks/staging.py``). What it still catches is a fault on the cluster
side, such as a disk that stores other bytes than it received. The check that
skips an identical destination and the check of a partial file before a
resume hash the remote file whatever the setting.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import re
import shlex
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import paramiko

from ..config import SSHConfig
from ..errors import (
    ConnectionLostError,
    HostKeyError,
    RemoteCommandError,
    SSHAuthenticationError,
    TransferError,
    TransportError,
    WrfbatchError,
)
from .base import (
    CommandResult,
    ProgressCallback,
    RemoteFile,
    TransferResult,
    Transport,
    check_removable_path,
)
from .local import file_sha256
from .openssh import (
    BATCH_RECEIVER_UNSUPPORTED,
    SSH_ERROR_EXIT,
    OpenSSHLink,
    OutgoingFile,
    SftpPut,
    StreamResult,
    find_sftp_program,
    find_ssh_program,
    sftp_batch,
    sftp_batch_usable,
    stream_files,
    stream_from_file,
    stream_into_file,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CHUNK_BYTES = 1024 * 1024
# Idle SFTP sessions kept open for reuse; each one keeps its channel slot until evicted.
_MAX_IDLE_SFTP = 2
# How often a thread waiting for a channel slot looks for an idle SFTP session to close.
_SLOT_POLL_S = 0.1
# Locks that serialise transfers to the same destination (see SSHTransport._transfer_lock).
_TRANSFER_LOCKS = 64
# Waits before trying again to open a channel that the server refused (about 3 s in all).
_CHANNEL_RETRY_DELAYS_S = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}\b")
# Hashes stdin with OpenSSL, sha256sum (GNU coreutils) or shasum (BSD, macOS); exits 127 when
# none exists. OpenSSL comes first because it uses the CPU's SHA instructions: on the benchmark
# machine it hashed 1 GiB in about 0.7 s, and Debian 12's sha256sum (coreutils 9.1) in 4.4 s.
# "-r" makes OpenSSL print "<hex> *stdin" like sha256sum, from OpenSSL 1.0 on.
_REMOTE_HASHER = (
    "if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; "
    "elif command -v sha256sum >/dev/null 2>&1; then sha256sum; "
    "elif command -v shasum >/dev/null 2>&1; then shasum -a 256; "
    "else exit 127; fi"
)


#: Default of SSHTransport's ``ssh_program``: look the program up on PATH.
AUTO = "auto"
# Two files at a time hide each file's round trips (stat, resume check, rename) behind the
# other's data. More streams do not add throughput on one connection, because one ssh
# process encrypts them all. Two connections moved 1 GiB no faster than one on the
# 2-core benchmark machine, where the ssh client and sshd already use both cores.
DEFAULT_TRANSFER_STREAMS = 2
# Transfer batches (OpenSSH connections) of one transport that may run at once.
MAX_TRANSFER_CONNECTIONS = 2


class _UnknownHostKey(paramiko.SSHException):
    """The server's host key is not in the configured known_hosts file."""

    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"host key for {hostname} not found")
        self.hostname = hostname
        self.key = key


class _RejectUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy that keeps the rejected key, so the error can show its fingerprint."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise _UnknownHostKey(hostname, key)


class _KeyFileError(Exception):
    """The configured private key file cannot be read or parsed."""


class _GcmFirstTransport(paramiko.Transport):
    """paramiko Transport that offers AES-GCM ciphers before its other defaults."""

    _preferred_ciphers = tuple(
        sorted(paramiko.Transport._preferred_ciphers, key=lambda name: "-gcm@" not in name)
    )


@dataclass
class _Attempt:
    """Progress of one try of an operation, which decides whether trying again is safe."""

    # The SSH transport the try used; None when it failed before connecting.
    connection: paramiko.Transport | None = None
    # True once a command was sent to the server.
    started: bool = False


@dataclass
class _Output:
    """Output of a remote command, filled by reader threads."""

    stdout: list[bytes] = field(default_factory=list)
    stderr: list[bytes] = field(default_factory=list)


class SSHTransport(Transport):
    """Runs commands and moves files on a cluster over one shared SSH connection."""

    def __init__(
        self, config: SSHConfig, *, ssh_program: str | None = AUTO,
        transfer_streams: int = DEFAULT_TRANSFER_STREAMS,
    ) -> None:
        """``ssh_program`` is the OpenSSH client that moves file content: found on PATH by
        default, and None to move files over paramiko SFTP. ``transfer_streams`` files of
        a batch move at once, as sessions of one OpenSSH connection."""
        self.config = config
        self.ssh_program = find_ssh_program() if ssh_program == AUTO else ssh_program
        self.transfer_streams = max(1, transfer_streams)
        # Each transfer batch opens one OpenSSH connection of its own. sshd resets new
        # connections beyond MaxStartups (10 unauthenticated at once by default) and sites
        # block clients that open many, so concurrent batches queue for these slots.
        self._transfer_slots = threading.BoundedSemaphore(MAX_TRANSFER_CONNECTIONS)
        self.host = config.host
        self._where = f"{config.user}@{config.host}:{config.port}"
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._slots = threading.BoundedSemaphore(config.max_channels)
        self._idle_sftp: list[paramiko.SFTPClient] = []
        self._transfer_locks = [threading.Lock() for _ in range(_TRANSFER_LOCKS)]
        self._remote_hasher_missing = False
        self._batch_receiver_missing = False
        self._sftp_missing = False
        self.sftp_program = find_sftp_program(self.ssh_program) if self.ssh_program else None

    # -- connection -----------------------------------------------------------------------

    def _connection(self, attempt: _Attempt) -> paramiko.Transport:
        """Return the live SSH transport, connecting first when there is none."""
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if transport is None or not transport.is_active():
                if transport is not None:
                    logger.warning("connection to %s was lost; reconnecting", self._where)
                self._discard_locked()
                self._client = self._connect()
                transport = self._client.get_transport()
                assert transport is not None
            attempt.connection = transport
            return transport

    def _connect(self) -> paramiko.SSHClient:
        config = self.config
        if not config.known_hosts_file.is_file():
            raise HostKeyError(
                f"known_hosts file {config.known_hosts_file} for {self._where} not found; "
                "create it with the cluster's verified host key", self.host,
            )
        key = _load_key(config.key_file)
        client = paramiko.SSHClient()
        client.load_host_keys(str(config.known_hosts_file))
        client.set_missing_host_key_policy(_RejectUnknownHost())
        try:
            client.connect(
                config.host, port=config.port, username=config.user, pkey=key,
                look_for_keys=False, allow_agent=False, timeout=config.connect_timeout_s,
                banner_timeout=config.connect_timeout_s, auth_timeout=config.connect_timeout_s,
                channel_timeout=config.connect_timeout_s, transport_factory=_GcmFirstTransport,
            )
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        assert transport is not None
        if config.keepalive_interval_s:
            transport.set_keepalive(config.keepalive_interval_s)
        logger.info("connected to %s (cipher %s)", self._where, transport.remote_cipher)
        return client

    def _discard_locked(self) -> None:
        """Close the connection and the idle SFTP sessions; the caller must own ``_lock``."""
        for sftp in self._idle_sftp:
            _close_quietly(sftp)
            self._slots.release()
        self._idle_sftp.clear()
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def cipher(self) -> str | None:
        """Cipher of the open connection, such as ``aes128-gcm@openssh.com``; None when closed."""
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            return transport.remote_cipher if transport and transport.is_active() else None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                logger.info("closing the connection to %s", self._where)
            self._discard_locked()

    # -- errors and retries ---------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, action: str, attempt: _Attempt) -> Iterator[None]:
        """Translate paramiko, socket and SFTP errors into the project's errors.

        This is the one place where third-party errors become TransportError
        subclasses. ``action`` completes "... failed while <action>".
        """
        try:
            yield
        except WrfbatchError:
            raise
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(self._changed_key_message(exc), self.host) from exc
        except _UnknownHostKey as exc:
            raise HostKeyError(self._unknown_key_message(exc), self.host) from exc
        except paramiko.AuthenticationException as exc:
            raise SSHAuthenticationError(self._auth_message(exc), self.host) from exc
        except _KeyFileError as exc:
            raise SSHAuthenticationError(str(exc), self.host) from exc
        except paramiko.hostkeys.InvalidHostKey as exc:
            raise HostKeyError(
                f"known_hosts file {self.config.known_hosts_file} has an invalid line "
                f"{exc.line.strip()!r}: {exc.exc}; fix or remove that line", self.host,
            ) from exc
        except (OSError, EOFError, paramiko.SSHException, paramiko.SFTPError) as exc:
            raise self._classify(exc, action, attempt) from exc

    def _classify(self, exc: Exception, action: str, attempt: _Attempt) -> TransportError:
        """Tell a dropped or unreachable connection from a failed file operation."""
        connection = attempt.connection
        if isinstance(exc, EOFError) and connection is not None:
            # paramiko raises EOFError when a send finds the socket closed, which can be
            # before its reader thread marks the transport inactive: close it here, so
            # that the operation is retried on a new connection.
            connection.close()
        if connection is None or not connection.is_active():
            return ConnectionLostError(
                f"connection to {self._where} failed while {action}: {_describe(exc)}; "
                "check that the host is up and reachable, then retry", self.host,
            )
        if isinstance(exc, OSError) and not isinstance(exc, socket.timeout):
            return TransferError(f"{action} on {self.host} failed: {_describe(exc)}", self.host)
        return ConnectionLostError(
            f"{action} on {self._where} failed: {_describe(exc)}; retry later", self.host
        )

    def _changed_key_message(self, exc: paramiko.BadHostKeyException) -> str:
        config = self.config
        return (
            f"host key of {config.host} port {config.port} does not match the key for it in "
            f"{config.known_hosts_file}: the server sent {exc.key.get_name()} "
            f"{exc.key.fingerprint}, known_hosts expects {exc.expected_key.get_name()} "
            f"{exc.expected_key.fingerprint}. If the cluster's administrators changed the key, "
            f"check the new fingerprint with them and replace the line for {exc.hostname} in "
            f"{config.known_hosts_file}; otherwise do not connect, because another machine "
            "may be answering for the cluster"
        )

    def _unknown_key_message(self, exc: _UnknownHostKey) -> str:
        config = self.config
        return (
            f"host key of {config.host} port {config.port} ({exc.key.get_name()} "
            f"{exc.key.fingerprint}) is not in {config.known_hosts_file}; check the fingerprint "
            f"with the cluster's administrators, then add a line for {exc.hostname} to that file"
        )

    def _auth_message(self, exc: paramiko.AuthenticationException) -> str:
        config = self.config
        return (
            f"SSH authentication as {config.user} on {config.host} port {config.port} failed "
            f"with key {config.key_file}: {_describe(exc)}; check ssh.user and that the key's "
            "public half is in the user's authorized_keys on the cluster"
        )

    def _with_retry(
        self, action: str, idempotent: bool, operation: Callable[[_Attempt], T]
    ) -> T:
        """Run ``operation``, and once more after a dropped connection when that is safe."""
        attempt = _Attempt()
        try:
            with self._translated(action, attempt):
                return operation(attempt)
        except ConnectionLostError as exc:
            if not self._may_retry(attempt, idempotent):
                raise
            logger.warning("connection to %s dropped while %s; reconnecting to retry once: %s",
                           self._where, action, exc)
        attempt = _Attempt()
        with self._translated(action, attempt):
            return operation(attempt)

    @staticmethod
    def _may_retry(attempt: _Attempt, idempotent: bool) -> bool:
        """Return whether the try got a connection that then dropped, and repeating it is safe."""
        dropped = attempt.connection is not None and not attempt.connection.is_active()
        return dropped and (idempotent or not attempt.started)

    # -- channels -------------------------------------------------------------------------

    def _acquire_slot(self) -> None:
        """Wait for a free channel slot, closing an idle SFTP session to free one."""
        while not self._slots.acquire(timeout=_SLOT_POLL_S):
            with self._lock:
                idle = self._idle_sftp.pop() if self._idle_sftp else None
            if idle is not None:
                _close_quietly(idle)  # its slot passes to this caller
                return

    @contextlib.contextmanager
    def _session(self, attempt: _Attempt) -> Iterator[paramiko.Channel]:
        """Open a session channel for one command; close it and free its slot afterwards."""
        self._acquire_slot()
        try:
            channel = self._open_channel(attempt, self._open_session)
            try:
                yield channel
            finally:
                channel.close()
        finally:
            self._slots.release()

    @contextlib.contextmanager
    def _sftp(self, attempt: _Attempt) -> Iterator[paramiko.SFTPClient]:
        """Lend an SFTP session, reusing an idle one on the current connection."""
        sftp = self._take_idle_sftp(attempt)
        if sftp is None:
            sftp = self._open_sftp(attempt)
        healthy = False
        try:
            yield sftp
            healthy = True
        finally:
            self._return_sftp(sftp, healthy)

    def _open_channel(
        self, attempt: _Attempt, opener: Callable[[paramiko.Transport], T]
    ) -> T:
        """Open a channel with ``opener``, trying again while the server refuses it.

        sshd counts an SFTP session against MaxSessions until the session's
        child process has exited, which happens a moment after the channel is
        closed here, so the server may refuse a channel that the slot count allows.
        """
        for delay_s in _CHANNEL_RETRY_DELAYS_S:
            transport = self._connection(attempt)
            try:
                return opener(transport)
            except paramiko.SSHException as exc:
                # With several threads opening channels, paramiko may report the refusal as
                # "Unable to open channel." instead of ChannelException.
                if not transport.is_active():
                    raise
                logger.debug("%s rejected a channel open (%s); retrying in %.2f s",
                             self._where, exc, delay_s)
                time.sleep(delay_s)
        return opener(self._connection(attempt))

    def _open_session(self, transport: paramiko.Transport) -> paramiko.Channel:
        return transport.open_session(timeout=self.config.connect_timeout_s)

    def _take_idle_sftp(self, attempt: _Attempt) -> paramiko.SFTPClient | None:
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if not self._idle_sftp or transport is None or not transport.is_active():
                return None
            attempt.connection = transport
            return self._idle_sftp.pop()

    def _open_sftp(self, attempt: _Attempt) -> paramiko.SFTPClient:
        self._acquire_slot()
        try:
            return self._open_channel(attempt, _start_sftp)
        except BaseException:
            self._slots.release()
            raise

    def _return_sftp(self, sftp: paramiko.SFTPClient, healthy: bool) -> None:
        """Keep a session for reuse, or close it when it failed, belongs to an old
        connection, or the idle list is full."""
        with self._lock:
            current = self._client.get_transport() if self._client else None
            channel = sftp.get_channel()
            reusable = (
                healthy and channel is not None and not channel.closed
                and channel.get_transport() is current and len(self._idle_sftp) < _MAX_IDLE_SFTP
            )
            if reusable:
                self._idle_sftp.append(sftp)
                return
        _close_quietly(sftp)
        self._slots.release()

    # -- commands -------------------------------------------------------------------------

    def run(
        self,
        command: str | Sequence[str],
        *,
        check: bool = True,
        timeout_s: float | None = None,
        stdin: bytes | None = None,
        idempotent: bool = False,
    ) -> CommandResult:
        """Run a command through the remote user's login shell.

        The command runs as ``$SHELL -c``, which on clusters is bash or another
        POSIX shell. A command killed by a signal has exit code -1. On timeout
        the channel is closed and ConnectionLostError raised, but the remote
        process keeps running until it next writes to its closed output.
        """
        shell_command = self.join(command)
        logger.debug("%s: running %s", self._where, shell_command)
        exit_code, stdout, stderr = self._with_retry(
            f"running {shell_command!r}", idempotent,
            lambda attempt: self._execute(shell_command, attempt, timeout_s, stdin),
        )
        result = CommandResult(
            command=shell_command,
            exit_code=exit_code,
            stdout=stdout.decode("utf-8", errors="replace"),
            stderr=stderr.decode("utf-8", errors="replace"),
        )
        if check and exit_code != 0:
            raise RemoteCommandError(self.host, shell_command, exit_code, result.stdout,
                                     result.stderr)
        return result

    def _execute(
        self, shell_command: str, attempt: _Attempt, timeout_s: float | None = None,
        stdin: bytes | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run one command on one channel, without retrying; return exit code and output."""
        with self._session(attempt) as channel:
            attempt.started = True
            channel.exec_command(shell_command)
            output = _Output()
            threads = _start_io_threads(channel, output, stdin)
            if not _join_all(threads, timeout_s):
                channel.close()
                raise ConnectionLostError(
                    f"command timed out after {timeout_s} s on {self.host}: {shell_command}; "
                    "the remote process may still be running", self.host,
                )
            if not channel.status_event.wait(timeout_s):
                raise ConnectionLostError(
                    f"no exit status from {self.host} within {timeout_s} s: {shell_command}",
                    self.host,
                )
            exit_code = channel.recv_exit_status()
            if exit_code == -1 and not channel.get_transport().is_active():
                raise ConnectionLostError(
                    f"connection to {self._where} dropped while running {shell_command!r}",
                    self.host,
                )
            return exit_code, b"".join(output.stdout), b"".join(output.stderr)

    # -- small file operations ------------------------------------------------------------

    def read_bytes(self, remote_path: str, max_bytes: int | None = None) -> bytes:
        return self._with_retry(
            f"reading {remote_path}", True,
            lambda attempt: self._read_once(remote_path, max_bytes, attempt),
        )

    def _read_once(self, remote_path: str, max_bytes: int | None, attempt: _Attempt) -> bytes:
        with self._sftp(attempt) as sftp, sftp.open(remote_path, "rb") as handle:
            if max_bytes is None:
                handle.prefetch()
                return handle.read()
            return handle.read(max_bytes)

    def write_bytes(self, remote_path: str, data: bytes, mode: int = 0o644) -> None:
        self._with_retry(
            f"writing {remote_path}", True,
            lambda attempt: self._write_once(remote_path, data, mode, attempt),
        )

    def _write_once(self, remote_path: str, data: bytes, mode: int, attempt: _Attempt) -> None:
        directory, name = posixpath.split(remote_path)
        temporary = posixpath.join(directory, f".{name[:200]}.{uuid.uuid4().hex[:12]}.tmp")
        with self._sftp(attempt) as sftp:
            try:
                handle = sftp.open(temporary, "wb")
            except FileNotFoundError:
                _make_dirs(sftp, directory, 0o755)
                handle = sftp.open(temporary, "wb")
            try:
                with handle:
                    handle.set_pipelined(True)
                    handle.write(data)
                sftp.chmod(temporary, mode)
                sftp.posix_rename(temporary, remote_path)
            except BaseException:
                _remove_quietly(sftp, temporary)
                raise

    def list_dir(self, remote_path: str) -> list[RemoteFile]:
        return self._with_retry(
            f"listing {remote_path}", True, lambda attempt: self._list_once(remote_path, attempt)
        )

    def _list_once(self, remote_path: str, attempt: _Attempt) -> list[RemoteFile]:
        with self._sftp(attempt) as sftp:
            try:
                entries = sftp.listdir_attr(remote_path)
            except FileNotFoundError:
                return []
        files = [
            RemoteFile(entry.filename, entry.st_size or 0, float(entry.st_mtime or 0))
            for entry in entries
            if entry.st_mode is not None and stat.S_ISREG(entry.st_mode)
        ]
        return sorted(files, key=lambda item: item.name)

    def exists(self, remote_path: str) -> bool:
        return self._with_retry(
            f"checking {remote_path}", True, lambda attempt: self._exists_once(remote_path, attempt)
        )

    def _exists_once(self, remote_path: str, attempt: _Attempt) -> bool:
        with self._sftp(attempt) as sftp:
            try:
                sftp.lstat(remote_path)
            except FileNotFoundError:
                return False
        return True

    def make_dirs(self, remote_path: str, mode: int = 0o755) -> None:
        def make(attempt: _Attempt) -> None:
            with self._sftp(attempt) as sftp:
                _make_dirs(sftp, remote_path, mode)

        self._with_retry(f"creating {remote_path}", True, make)

    def remove_tree(self, remote_path: str) -> None:
        remote_path = check_removable_path(remote_path)
        self.run(["rm", "-rf", "--", remote_path], idempotent=True)

    # -- hashing --------------------------------------------------------------------------

    def _remote_sha256(self, remote_path: str, attempt: _Attempt, length: int | None = None) -> str:
        """Return the SHA-256 of a remote file (of its first ``length`` bytes when given).

        The cluster computes it with sha256sum or shasum; without either, the
        bytes are read over SFTP and hashed here.
        """
        if not self._remote_hasher_missing:
            quoted = shlex.quote(remote_path)
            if length is None:
                command = f"({_REMOTE_HASHER}) < {quoted}"
            else:
                command = f"head -c {int(length)} < {quoted} | ({_REMOTE_HASHER})"
            exit_code, stdout, stderr = self._execute(command, attempt)
            if exit_code == 0 and _SHA256_HEX.match(stdout.decode("ascii", "replace")):
                return stdout[:64].decode("ascii")
            if exit_code != 127:
                raise RemoteCommandError(self.host, command, exit_code, "",
                                         stderr.decode("utf-8", errors="replace"))
            logger.warning("%s has neither sha256sum nor shasum; hashing files over SFTP",
                           self._where)
            self._remote_hasher_missing = True
        return self._sftp_sha256(remote_path, attempt, length)

    def _sftp_sha256(self, remote_path: str, attempt: _Attempt, length: int | None) -> str:
        digest = hashlib.sha256()
        with self._sftp(attempt) as sftp, sftp.open(remote_path, "rb") as handle:
            size = handle.stat().st_size or 0
            remaining = size if length is None else min(size, length)
            handle.prefetch(remaining)
            while remaining > 0 and (chunk := handle.read(min(_CHUNK_BYTES, remaining))):
                digest.update(chunk)
                remaining -= len(chunk)
        return digest.hexdigest()

    # -- transfers ------------------------------------------------------------------------
    #
    # Measured on the benchmark machine (benchmarks/staging.py, 1 GiB file): the local
    # SHA-256 pass takes 0.9 s and coreutils sha256sum 4.4 s, against 2.9 s for scp to move
    # the file. So no transfer hashes in a pass of its own: the partial file is named by
    # the source's size and modification time, and the local digest is updated while the
    # bytes move. Only with verify_remote_sha256 does the cluster hash the bytes as they
    # arrive (uploads) or while they are sent (downloads). Content hashes are read first
    # only to skip a destination of the same size, and to check a partial file before
    # resuming it.

    def upload(
        self, local_path: Path, remote_path: str, *, progress: ProgressCallback | None = None
    ) -> TransferResult:
        return self.upload_many([(Path(local_path), remote_path)], progress=progress)[0]

    def upload_many(
        self, files: Sequence[tuple[Path, str]], *, progress: ProgressCallback | None = None,
        sha256: Sequence[str | None] | None = None,
    ) -> list[TransferResult]:
        """Upload several files in batches (see :meth:`_upload_batch`).

        With ``verify_remote_sha256``, without the ssh program (paramiko SFTP),
        or on a cluster without GNU head or SFTP, each file has a session of its
        own instead, ``transfer_streams`` files at a time.
        """
        paths = [(Path(local), remote) for local, remote in files]
        sources = [_local_source(local) for local, _ in paths]
        known = list(sha256) if sha256 is not None else [None] * len(paths)
        tracker = _BatchProgress(sum(source.size for source in sources), progress)
        with self._transfer_slots, _LazyLink(self) as link:
            results: dict[int, TransferResult] = {}
            if self._batch_streams_usable(link):
                self._upload_batch(paths, sources, known, link, tracker, results)
            rest = [index for index in range(len(paths)) if index not in results]
            for index, result in zip(rest, _map_threads(
                    lambda n: self._upload_retrying(*paths[rest[n]], sources[rest[n]], link,
                                                    tracker.for_file(rest[n])),
                    len(rest), self.transfer_streams), strict=True):
                results[index] = result
            return [results[index] for index in range(len(paths))]

    def _batch_streams_usable(self, link: _LazyLink) -> bool:
        return (link.program is not None and not self.config.verify_remote_sha256
                and not self._batch_receiver_missing)

    def _upload_batch(
        self, files: list[tuple[Path, str]], sources: list[_Source], known: list[str | None],
        link: _LazyLink, tracker: _BatchProgress, results: dict[int, TransferResult],
    ) -> None:
        """Upload ``files`` in batches, and once more after a dropped connection.

        Measured on the 2-core benchmark machine, a session and six SFTP round
        trips per file made the 24-file met_em-like set upload at 0.64 times
        scp's throughput, while one 1 GiB file kept up with scp. Now one command
        over the pooled connection reads the sizes of every destination and
        partial file, then one sftp program (or one session per stream, see
        :meth:`_upload_chunk`) carries all the files. ``results`` receives each
        file as it is done, so a retry sends only the others. A cluster without
        GNU head leaves files out of ``results``, for the caller to send one by one.
        """
        locks = sorted({id(lock): lock for lock in (
            self._transfer_lock(f"upload:{remote}") for _, remote in files)}.items())
        with contextlib.ExitStack() as held:
            for _, lock in locks:
                held.enter_context(lock)
            try:
                for chunk in _command_chunks(files):
                    self._upload_chunk_retrying(files, sources, known, chunk, link, tracker,
                                                results)
            except _BatchReceiverMissing:
                return

    def _upload_chunk_retrying(
        self, files: list[tuple[Path, str]], sources: list[_Source], known: list[str | None],
        chunk: list[int], link: _LazyLink, tracker: _BatchProgress,
        results: dict[int, TransferResult],
    ) -> None:
        generation = link.generation
        try:
            self._upload_chunk(files, sources, known, chunk, link, tracker, results)
        except ConnectionLostError as exc:
            logger.warning("connection to %s dropped while uploading a batch; resuming once: "
                           "%s", self._where, exc)
            link.reset(generation)
            rest = [index for index in chunk if index not in results]
            self._upload_chunk(files, sources, known, rest, link, tracker, results)

    def _upload_chunk(
        self, files: list[tuple[Path, str]], sources: list[_Source], known: list[str | None],
        chunk: list[int], link: _LazyLink, tracker: _BatchProgress,
        results: dict[int, TransferResult],
    ) -> None:
        """Plan and send the files ``chunk`` (indexes into ``files``)."""
        plans = self._plan_uploads(files, sources, known, chunk)
        outgoing = []
        for index, plan in zip(chunk, plans, strict=True):
            if isinstance(plan, TransferResult):
                results[index] = plan
            else:
                outgoing.append(_Outgoing(index, files[index][0], files[index][1],
                                          sources[index], plan[0], plan[1], known[index]))
        if not outgoing:
            return
        # One sftp program for the whole chunk: it keeps 64 requests in flight by itself,
        # and two at once took 2.03 to 2.08 s for the 24-file set against 1.81 to 1.92 s
        # for one on the 2-core benchmark machine. Batch sessions carry the files when a
        # progress callback must follow the bytes or a path needs quoting.
        if tracker.callback is None and self._sftp_usable(outgoing):
            try:
                self._sftp_group(outgoing, results)
                return
            except _SftpMissing:
                pass
        groups = _balanced_groups(outgoing, self.transfer_streams)
        _map_threads(lambda n: self._stream_group(groups[n], link, tracker, results),
                     len(groups), len(groups))

    def _sftp_usable(self, group: list[_Outgoing]) -> bool:
        return self.sftp_program is not None and not self._sftp_missing and sftp_batch_usable(
            [path for item in group for path in (
                str(item.local_path.absolute()), item.partial)])

    def _sftp_group(self, group: list[_Outgoing], results: dict[int, TransferResult]) -> None:
        """Upload ``group`` with OpenSSH's sftp, then check and rename each partial file.

        Each file's SHA-256 is its known value, or comes from a thread that
        reads the file while sftp sends it. The source's size and modification
        time, unchanged after the transfer, tie that digest to the bytes sent.
        """
        puts = [SftpPut(item.local_path.absolute(), item.partial, resume=item.offset > 0)
                # A partial file that is complete already needs no put (reput refuses one).
                for item in group if item.offset == 0 or item.offset < item.source.size]
        assert self.sftp_program is not None and self.ssh_program is not None
        runner = OpenSSHLink(self.config, self.ssh_program)
        unknown = [item for item in group if item.known_sha256 is None]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wrfbatch-hash") as hasher:
            # Copies, so that a fallback to shell sessions starts from the same states.
            hashing = hasher.submit(_hash_remainders, unknown) if unknown else None
            outcome = sftp_batch(runner, self.sftp_program, puts) if puts else None
            digests = hashing.result() if hashing is not None else []
        if outcome is not None and outcome.exit_code != 0:
            self._raise_sftp_failure(runner, outcome, group)
        for item, digest in zip(unknown, digests, strict=True):
            item.digest = digest
        for item in group:
            action = f"uploading {item.local_path} to {item.remote_path}"
            if item.changed():
                self._once(action, lambda a, item=item: self._remove_partial(item.partial, a))
                raise self._changed_error(item.local_path, item.remote_path)
            sha256 = item.known_sha256 or item.digest.hexdigest()
            self._once(action, lambda a, item=item, sha256=sha256:
                       self._finish_upload(item.partial, item.remote_path, item.source,
                                           sha256, None, a))
            results[item.index] = TransferResult(
                str(item.local_path), item.remote_path, item.source.size, sha256, False,
                item.source.size - item.offset)

    def _raise_sftp_failure(
        self, runner: OpenSSHLink, outcome: StreamResult, group: list[_Outgoing]
    ) -> None:
        text = " ".join(line.strip() for line in outcome.stderr.splitlines() if line.strip())
        if "subsystem request failed" in text:
            logger.info("%s serves no SFTP; uploading through shell sessions", self._where)
            self._sftp_missing = True
            raise _SftpMissing()
        # sftp dies of SIGPIPE (a negative status) when its ssh exits under it.
        if outcome.exit_code == SSH_ERROR_EXIT or outcome.exit_code < 0 \
                or any(sign in text for sign in _DROPPED):
            # Host key and authentication failures keep their own errors.
            raise runner.error(text, "uploading a batch of files with sftp")
        directory = posixpath.dirname(group[0].remote_path) or "."
        raise TransferError(
            f"upload of a batch of {len(group)} files to {self.host}:{directory} with sftp "
            f"failed: {text or f'exit status {outcome.exit_code}'}; if the cluster's file "
            f"system is full (df {directory}), free space there, then retry", self.host,
        )

    def _remove_partial(self, partial: str, attempt: _Attempt) -> None:
        with self._sftp(attempt) as sftp:
            _remove_quietly(sftp, partial)

    def _plan_uploads(
        self, files: list[tuple[Path, str]], sources: list[_Source], known: list[str | None],
        chunk: list[int],
    ) -> list[TransferResult | tuple[int, hashlib._Hash]]:
        """Return, per file, its result when the cluster already has it, or else the offset
        to send it from and the SHA-256 state of the bytes before that offset.

        One command creates the destination directories and prints the sizes
        of the destination and partial files. Only a destination of the source's
        size, or a partial file worth resuming, costs more: hashing on both sides.
        """
        paths = [path for index in chunk for path in (
            files[index][1], _partial_path(files[index][1], sources[index]))]
        directories = sorted({posixpath.dirname(files[index][1]) or "." for index in chunk})
        script = (f"mkdir -p -- {' '.join(map(shlex.quote, directories))} || exit 1; "
                  f"for p in {' '.join(map(shlex.quote, paths))}; do "
                  'if [ -f "$p" ]; then wc -c < "$p"; else echo -; fi; done')
        lines = self.run(["sh", "-c", script], idempotent=True).stdout.split()
        if len(lines) != len(paths):
            raise TransferError(f"reading file sizes on {self.host} failed: expected "
                                f"{len(paths)} lines, got {lines[:4]}...; retry", self.host)
        sizes = [int(line) if line.isdigit() else None for line in lines]
        return [self._plan_one(files[index], sources[index], known[index], sizes[2 * n],
                               sizes[2 * n + 1]) for n, index in enumerate(chunk)]

    def _plan_one(
        self, file: tuple[Path, str], source: _Source, known: str | None, existing: int | None,
        partial_length: int | None,
    ) -> TransferResult | tuple[int, hashlib._Hash]:
        local_path, remote_path = file
        action = f"uploading {local_path} to {remote_path}"
        if existing == source.size:
            skipped = self._once(action, lambda a: self._already_uploaded(
                local_path, remote_path, source, a, known))
            if skipped is not None:
                return skipped
        partial = _partial_path(remote_path, source)
        return self._once(action, lambda a: self._resume_point(local_path, partial, source,
                                                               partial_length or 0, a))

    def _stream_group(
        self, group: list[_Outgoing], link: _LazyLink, tracker: _BatchProgress,
        results: dict[int, TransferResult],
    ) -> None:
        """Send ``group`` through one batch session and record each file the cluster took."""
        if not group:
            return
        items = [OutgoingFile(
            path=item.local_path, partial=item.partial,
            final=item.remote_path, offset=item.offset, size=item.source.size,
            consume=None if item.known_sha256 else item.digest.update,
            sent=_progress_reporter(item.source.size, tracker.for_file(item.index)),
            unchanged=lambda item=item: not item.changed(),
        ) for item in group]
        streamed = stream_files(link.get(), items)
        for position in sorted(streamed.committed):
            item = group[position]
            results[item.index] = TransferResult(
                str(item.local_path), item.remote_path, item.source.size,
                item.known_sha256 or item.digest.hexdigest(), False,
                streamed.bytes_moved[position])
        for position, item in enumerate(group):
            if position in streamed.bytes_moved and item.changed():
                raise self._changed_error(item.local_path, item.remote_path)
        if len(streamed.committed) == len(group):
            return
        if streamed.exit_code == SSH_ERROR_EXIT:
            raise link.get().error(streamed.stderr, "uploading a batch of files")
        if streamed.exit_code == BATCH_RECEIVER_UNSUPPORTED:
            logger.info("%s has no GNU head; uploading each file in a session of its own",
                        self._where)
            self._batch_receiver_missing = True
            raise _BatchReceiverMissing()
        failed = group[len(streamed.committed)]
        raise TransferError(
            f"upload of {failed.local_path} to {self.host}:{failed.remote_path} failed: "
            f"{streamed.stderr.strip() or f'exit status {streamed.exit_code}'}; if the "
            f"cluster's file system is full (df {posixpath.dirname(failed.remote_path)}), "
            "free space there, then retry", self.host,
        )

    def _changed_error(self, local_path: Path, destination: str) -> TransferError:
        return TransferError(f"{local_path} changed during its upload to {self.host}:"
                             f"{destination}; upload it again once it is complete", self.host)

    def download(
        self, remote_path: str, local_path: Path, *, progress: ProgressCallback | None = None
    ) -> TransferResult:
        """Copy a remote file here; the file must not change while it is copied."""
        return self.download_many([(remote_path, Path(local_path))], progress=progress)[0]

    def download_many(
        self, files: Sequence[tuple[str, Path]], *, progress: ProgressCallback | None = None
    ) -> list[TransferResult]:
        """Download several files over one OpenSSH connection, ``transfer_streams`` at a time.

        Progress totals are unknown before each file's size is read, so ``progress``
        gets (bytes done of this file, size of this file) per file.
        """
        with self._transfer_slots, _LazyLink(self) as link:
            return _map_threads(
                lambda index: self._download_retrying(files[index][0], Path(files[index][1]),
                                                      link, progress),
                len(files), self.transfer_streams,
            )

    def _once(self, action: str, operation: Callable[[_Attempt], T]) -> T:
        """Run ``operation`` once, with errors translated; reconnection happens on next use."""
        attempt = _Attempt()
        with self._translated(action, attempt):
            return operation(attempt)

    # -- upload ---------------------------------------------------------------------------

    def _upload_retrying(
        self, local_path: Path, remote_path: str, source: _Source, link: _LazyLink,
        progress: ProgressCallback | None,
    ) -> TransferResult:
        """Upload one file, and once more after a dropped connection, resuming the partial file."""
        with self._transfer_lock(f"upload:{remote_path}"):
            generation = link.generation
            try:
                return self._upload_file(local_path, remote_path, source, link, progress)
            except ConnectionLostError as exc:
                logger.warning("connection to %s dropped while uploading %s; resuming once: %s",
                               self._where, local_path, exc)
                link.reset(generation)
            return self._upload_file(local_path, remote_path, source, link, progress)

    def _upload_file(
        self, local_path: Path, remote_path: str, source: _Source, link: _LazyLink,
        progress: ProgressCallback | None,
    ) -> TransferResult:
        action = f"uploading {local_path} to {remote_path}"
        existing = self._once(action, lambda attempt: self._remote_size(remote_path, attempt))
        if existing == source.size:
            skipped = self._once(action, lambda a: self._already_uploaded(
                local_path, remote_path, source, a))
            if skipped is not None:
                return skipped
        partial = _partial_path(remote_path, source)
        offset, digest = self._once(
            action, lambda a: self._remote_resume_offset(local_path, partial, source, a)
        )
        if link.program is not None and not self._needs_sftp_hash():
            moved, received = self._send_openssh(link, local_path, partial, offset, source,
                                                 digest, progress)
        else:
            moved = self._once(action, lambda a: self._send(local_path, partial, offset,
                                                           source.size, digest, progress, a))
            received = self._once(action, lambda a: self._verification_sha256(partial, a))
        self._once(action, lambda a: self._finish_upload(partial, remote_path, source,
                                                         digest.hexdigest(), received, a))
        return TransferResult(str(local_path), remote_path, source.size, digest.hexdigest(),
                              False, moved)

    def _remote_size(self, remote_path: str, attempt: _Attempt) -> int | None:
        with self._sftp(attempt) as sftp:
            try:
                return sftp.stat(remote_path).st_size or 0
            except FileNotFoundError:
                return None

    def _remote_resume_offset(
        self, local_path: Path, partial: str, source: _Source, attempt: _Attempt
    ) -> tuple[int, hashlib._Hash]:
        """Return how many bytes of a remote partial file can be kept and their SHA-256 state.

        The partial directory is created here when it is missing.
        """
        with self._sftp(attempt) as sftp:
            _make_dirs(sftp, posixpath.dirname(partial) or ".", 0o755)
            try:
                length = sftp.stat(partial).st_size or 0
            except FileNotFoundError:
                return 0, hashlib.sha256()
        return self._resume_point(local_path, partial, source, length, attempt)

    def _already_uploaded(
        self, local_path: Path, remote_path: str, source: _Source, attempt: _Attempt,
        known: str | None = None,
    ) -> TransferResult | None:
        """Return the skipped result when the destination (of the source's size) has the
        source's SHA-256 (``known``, or read here), else None."""
        sha256 = known or _file_sha256(local_path, self.host)
        if self._remote_sha256(remote_path, attempt) != sha256:
            return None
        logger.info("%s:%s already has %s; nothing uploaded", self.host, remote_path,
                    local_path.name)
        return TransferResult(str(local_path), remote_path, source.size, sha256, True, 0)

    def _resume_point(
        self, local_path: Path, partial: str, source: _Source, length: int, attempt: _Attempt
    ) -> tuple[int, hashlib._Hash]:
        """Return the offset to resume from, given the partial file's ``length``, and the
        SHA-256 state of the bytes before it: 0 unless they match the source's start."""
        if not 0 < length <= source.size:
            return 0, hashlib.sha256()
        digest = _prefix_digest(local_path, length)
        if self._remote_sha256(partial, attempt, length) != digest.hexdigest():
            logger.warning("partial file %s:%s does not match %s; uploading from the start",
                           self.host, partial, local_path)
            return 0, hashlib.sha256()
        logger.info("resuming upload of %s to %s:%s at byte %d of %d", local_path, self.host,
                    partial, length, source.size)
        return length, digest

    def _send_openssh(
        self, link: _LazyLink, local_path: Path, partial: str, offset: int, source: _Source,
        digest: hashlib._Hash, progress: ProgressCallback | None,
    ) -> tuple[int, str | None]:
        """Stream the file into the partial file through ``ssh``; return the bytes sent and
        the SHA-256 of the whole partial file as the cluster computed it while the bytes
        arrived. That SHA-256 is None when ``verify_remote_sha256`` is off."""
        command = _receive_command(shlex.quote(partial), offset,
                                   self.config.verify_remote_sha256)
        result = stream_from_file(link.get(), command, local_path, offset, digest.update,
                                  _progress_reporter(source.size, progress))
        # The hash comes from a second read of the file, so a change during the upload could
        # make it differ from the bytes sent: a source whose size or time changed is rejected.
        if _local_source(local_path) != source:
            raise self._changed_error(local_path, partial)
        if not self.config.verify_remote_sha256:
            self._check_stream(link.get(), command, result)
            return result.bytes_moved, None
        return result.bytes_moved, self._streamed_sha256(link.get(), command, result)

    def _check_stream(self, link: OpenSSHLink, command: str, result: StreamResult) -> None:
        """Raise the matching error when a streamed command failed."""
        if result.exit_code == SSH_ERROR_EXIT:
            raise link.error(result.stderr, f"running {command!r}")
        if result.exit_code != 0:
            raise RemoteCommandError(self.host, command, result.exit_code, result.stdout,
                                     result.stderr)

    def _needs_sftp_hash(self) -> bool:
        """Return whether verification needs the cluster's hash and the cluster has no hasher,
        so content must move over SFTP, where the file can be read back for hashing."""
        return self.config.verify_remote_sha256 and self._remote_hasher_missing

    def _verification_sha256(self, remote_path: str, attempt: _Attempt) -> str | None:
        """Return the remote file's SHA-256 when ``verify_remote_sha256`` is on, else None."""
        if not self.config.verify_remote_sha256:
            return None
        return self._remote_sha256(remote_path, attempt)

    def _streamed_sha256(self, link: OpenSSHLink, command: str, result: StreamResult) -> str:
        """Return the SHA-256 that a streamed command printed, or raise the matching error."""
        if result.exit_code == SSH_ERROR_EXIT:
            raise link.error(result.stderr, f"running {command!r}")
        if result.exit_code == 0 and _SHA256_HEX.match(result.stdout):
            return result.stdout[:64]
        if result.exit_code == 127:
            self._remote_hasher_missing = True
        raise RemoteCommandError(self.host, command, result.exit_code, result.stdout,
                                 result.stderr)

    def _send(
        self, local_path: Path, partial: str, offset: int, size: int, digest: hashlib._Hash,
        progress: ProgressCallback | None, attempt: _Attempt,
    ) -> int:
        """Write the local file from ``offset`` to the partial file over SFTP; return the bytes
        sent. This is the path when the ``ssh`` program is not installed."""
        with (
            self._sftp(attempt) as sftp,
            local_path.open("rb") as source,
            sftp.open(partial, "r+b" if offset else "wb") as target,
        ):
            source.seek(offset)
            target.seek(offset)
            target.set_pipelined(True)
            return _copy_chunks(source, target, offset, size, progress, digest)

    def _finish_upload(
        self, partial: str, remote_path: str, source: _Source, sent: str, received: str | None,
        attempt: _Attempt,
    ) -> None:
        """Check the partial file's size (and SHA-256 when the cluster computed one, see
        ``verify_remote_sha256``) against the source, then rename it."""
        with self._sftp(attempt) as sftp:
            size = sftp.stat(partial).st_size
            if size < source.size:
                # Pipelined SFTP writes that fail (OpenSSH reports ENOSPC as a bare
                # "Failure") leave a short file behind instead of raising.
                _remove_quietly(sftp, partial)
                raise TransferError(
                    f"upload to {self.host}:{remote_path} failed: the cluster received "
                    f"{size} of {source.size} bytes, so its file system is probably out of "
                    f"space; check free space with df {posixpath.dirname(remote_path)} and "
                    "retry", self.host,
                )
            if size != source.size or received not in (None, sent):
                _remove_quietly(sftp, partial)
                raise TransferError(
                    f"upload to {self.host}:{remote_path} failed verification: the cluster has "
                    f"{size} bytes with SHA-256 {received or '(not checked)'}, expected "
                    f"{source.size} bytes with {sent}; the source may have changed during the "
                    "upload, so retry", self.host,
                )
            sftp.chmod(partial, 0o644)
            sftp.posix_rename(partial, remote_path)

    # -- download -------------------------------------------------------------------------

    def _download_retrying(
        self, remote_path: str, local_path: Path, link: _LazyLink,
        progress: ProgressCallback | None,
    ) -> TransferResult:
        with self._transfer_lock(f"download:{local_path}"):
            generation = link.generation
            try:
                return self._download_file(remote_path, local_path, link, progress)
            except ConnectionLostError as exc:
                logger.warning("connection to %s dropped while downloading %s; resuming once: "
                               "%s", self._where, remote_path, exc)
                link.reset(generation)
            return self._download_file(remote_path, local_path, link, progress)

    def _download_file(
        self, remote_path: str, local_path: Path, link: _LazyLink,
        progress: ProgressCallback | None,
    ) -> TransferResult:
        action = f"downloading {remote_path} to {local_path}"
        source = self._once(action, lambda attempt: self._remote_source(remote_path, attempt))
        if local_path.is_file() and local_path.stat().st_size == source.size:
            sha256 = _file_sha256(local_path, self.host)
            if self._once(action, lambda a: self._remote_sha256(remote_path, a)) == sha256:
                return TransferResult(remote_path, str(local_path), source.size, sha256, True, 0)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        partial = local_path.parent / source.partial_name(local_path.name)
        digest = self._once(action, lambda a: self._local_resume_digest(remote_path, partial,
                                                                        source, a))
        offset = partial.stat().st_size if partial.exists() else 0
        if link.program is not None and not self._needs_sftp_hash():
            moved, sent = self._receive_openssh(link, remote_path, partial, offset, source,
                                                digest, progress)
        else:
            moved = self._once(action, lambda a: self._receive(remote_path, partial, offset,
                                                              source.size, digest, progress, a))
            sent = self._once(action, lambda a: self._verification_sha256(remote_path, a))
        received = partial.stat().st_size
        if received != source.size or sent not in (None, digest.hexdigest()):
            partial.unlink(missing_ok=True)
            raise TransferError(
                f"download of {self.host}:{remote_path} failed verification: received "
                f"{received} bytes with SHA-256 {digest.hexdigest()}, expected {source.size} "
                f"bytes with SHA-256 {sent or '(not checked)'}; the remote file may have "
                "changed during the download, so retry", self.host,
            )
        partial.chmod(0o644)
        os.replace(partial, local_path)
        return TransferResult(remote_path, str(local_path), source.size, digest.hexdigest(), False,
                              moved)

    def _remote_source(self, remote_path: str, attempt: _Attempt) -> _Source:
        with self._sftp(attempt) as sftp:
            info = sftp.stat(remote_path)
        return _Source(info.st_size or 0, int(info.st_mtime or 0))

    def _local_resume_digest(
        self, remote_path: str, partial: Path, source: _Source, attempt: _Attempt
    ) -> hashlib._Hash:
        """Return the SHA-256 state of a local partial file worth keeping.

        A partial file that is longer than the source or differs from the
        remote file's start is emptied, and the state of no bytes returned.
        """
        length = partial.stat().st_size if partial.exists() else 0
        if 0 < length <= source.size:
            digest = _prefix_digest(partial, length)
            if digest.hexdigest() == self._remote_sha256(remote_path, attempt, length):
                logger.info("resuming download of %s:%s at byte %d of %d", self.host,
                            remote_path, length, source.size)
                return digest
        if length:
            partial.write_bytes(b"")
        return hashlib.sha256()

    def _receive_openssh(
        self, link: _LazyLink, remote_path: str, partial: Path, offset: int, source: _Source,
        digest: hashlib._Hash, progress: ProgressCallback | None,
    ) -> tuple[int, str | None]:
        """Stream the remote file into the partial file through ``ssh``; return the bytes
        received and the remote file's SHA-256, or None when ``verify_remote_sha256`` is off.
        The cluster computes that SHA-256 meanwhile over the pooled connection, so hashing
        and sending overlap."""
        quoted = shlex.quote(remote_path)
        command = f"tail -c +{offset + 1} -- {quoted}" if offset else f"cat -- {quoted}"
        with ThreadPoolExecutor(max_workers=1) as hasher:
            remote_sha256 = hasher.submit(
                self._once, f"hashing {remote_path}",
                lambda attempt: self._remote_sha256(remote_path, attempt),
            ) if self.config.verify_remote_sha256 else None
            # Without a progress callback, ssh writes the file itself, which is faster.
            written = None if progress is None else _progress_reporter(source.size, progress)
            result = stream_into_file(link.get(), command, partial, offset, digest.update,
                                      written)
            self._check_stream(link.get(), command, result)
            return result.bytes_moved, remote_sha256.result() if remote_sha256 else None

    def _receive(
        self, remote_path: str, partial: Path, offset: int, size: int,
        digest: hashlib._Hash, progress: ProgressCallback | None, attempt: _Attempt,
    ) -> int:
        """Append the remote file from ``offset`` to the partial file over SFTP; return the
        bytes read. This is the path when the ``ssh`` program is not installed."""
        with (
            self._sftp(attempt) as sftp,
            sftp.open(remote_path, "rb") as source,
            partial.open("ab") as target,
        ):
            source.seek(offset)
            # NOTE: paramiko sends every read request at once and buffers the replies
            # until they are read. Its max_concurrent_requests limit bounds requests in
            # flight, not that buffer, and a limit of 64 made a 50 MiB download 7 times
            # slower on loopback, so none is set.
            source.prefetch(size)
            return _copy_chunks(source, target, offset, size, progress, digest)

    def _transfer_lock(self, key: str) -> threading.Lock:
        """Return the lock that serialises transfers to one destination.

        Such transfers would share one partial file. Destinations share a fixed
        set of locks, so two unrelated transfers wait for each other at times.
        """
        return self._transfer_locks[hash(key) % len(self._transfer_locks)]


@dataclass(frozen=True)
class _Source:
    """Size and modification time (whole seconds) of the file being transferred."""

    size: int
    mtime: int
    # Compared with the rest to notice a change during a transfer; not part of the name.
    mtime_ns: int = 0

    def partial_name(self, name: str) -> str:
        """Return the partial file's name: the same for every try while the source is unchanged.

        A partial file is resumed only after its content matches the source's
        first bytes, so a name shared by another file of the same size and
        time costs a restart, never a wrong file.
        """
        return f".{name[:180]}.{self.size}-{self.mtime}.part"


class _LazyLink:
    """The OpenSSH connection of one transfer batch, opened on first use and shared by the
    batch's threads. ``program`` is None when transfers go over paramiko SFTP instead."""

    def __init__(self, transport: SSHTransport) -> None:
        self.program = transport.ssh_program
        self._config = transport.config
        self._lock = threading.Lock()
        self._link: OpenSSHLink | None = None
        # Counts reconnections, so that threads whose streams broke together reconnect once.
        self.generation = 0

    def get(self) -> OpenSSHLink:
        assert self.program is not None
        with self._lock:
            if self._link is None:
                link = OpenSSHLink(self._config, self.program)
                self._link = link.__enter__()
            return self._link

    def reset(self, generation: int) -> None:
        """Close the connection unless another thread has already replaced it."""
        with self._lock:
            if generation != self.generation or self._link is None:
                return
            self._link.close()
            self._link = None
            self.generation += 1

    def __enter__(self) -> _LazyLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            if self._link is not None:
                self._link.close()
                self._link = None


class _BatchProgress:
    """Sums the progress of a batch's files into one (bytes done, bytes total) callback."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.callback = callback
        self._done: dict[int, int] = {}
        self._lock = threading.Lock()

    def for_file(self, index: int) -> ProgressCallback | None:
        if self.callback is None:
            return None

        def report(done: int, total: int) -> None:
            with self._lock:
                self._done[index] = done
                done_all = sum(self._done.values())
            assert self.callback is not None
            self.callback(done_all, self.total)

        return report


def _receive_command(quoted_partial: str, offset: int, verify: bool) -> str:
    """Return the cluster's command that writes an upload's stdin to the partial file.

    With ``verify``, the command prints the SHA-256 of the whole partial file,
    including the kept prefix of a resumed upload, which is read again.
    """
    if not verify:
        return f"cat >> {quoted_partial}" if offset else f"cat > {quoted_partial}"
    if offset:
        return (f"{{ head -c {offset} -- {quoted_partial} && tee -a -- {quoted_partial}; }} | "
                f"({_REMOTE_HASHER})")
    return f"tee -- {quoted_partial} | ({_REMOTE_HASHER})"


@dataclass
class _Outgoing:
    """A file of a batch upload that still has bytes to send."""

    index: int
    local_path: Path
    remote_path: str
    source: _Source
    offset: int
    digest: hashlib._Hash
    known_sha256: str | None = None

    @property
    def partial(self) -> str:
        return _partial_path(self.remote_path, self.source)

    def changed(self) -> bool:
        """Return whether the local file's size or modification time differ from the plan's."""
        return _local_source(self.local_path) != self.source


def _hash_remainders(items: list[_Outgoing]) -> list[hashlib._Hash]:
    """Return a copy of each item's digest brought from its offset to the end of its file."""
    return [_hash_range(item.digest.copy(), item.local_path, item.offset) for item in items]


# Messages that sftp prints when its connection ends under it.
_DROPPED = ("Connection closed", "Connection reset", "Broken pipe", "closed by remote host")


class _SftpMissing(Exception):
    """The cluster serves no SFTP; files go through shell sessions instead."""


class _BatchReceiverMissing(Exception):
    """The cluster cannot run the batch receiver; files go one session each instead."""


def _partial_path(remote_path: str, source: _Source) -> str:
    directory, name = posixpath.split(remote_path)
    return posixpath.join(directory, source.partial_name(name))


# Upper bound on the paths' quoted length in one batch command. The command reaches the
# cluster as one argument of the login shell, and Linux limits one argument to 128 KiB.
_MAX_COMMAND_PATH_CHARS = 60_000


def _command_chunks(files: list[tuple[Path, str]]) -> list[list[int]]:
    """Split the indexes of ``files`` so that each chunk's paths fit in one command (every
    file names its destination and its partial file, each under 255 + 30 characters)."""
    chunks: list[list[int]] = [[]]
    length = 0
    for index, (_, remote) in enumerate(files):
        cost = 2 * len(shlex.quote(remote)) + 64
        if chunks[-1] and length + cost > _MAX_COMMAND_PATH_CHARS:
            chunks.append([])
            length = 0
        chunks[-1].append(index)
        length += cost
    return [chunk for chunk in chunks if chunk]


def _balanced_groups(items: list[_Outgoing], count: int) -> list[list[_Outgoing]]:
    """Split ``items`` into up to ``count`` groups of similar byte totals, largest first,
    each group in its original order."""
    groups: list[list[_Outgoing]] = [[] for _ in range(max(1, min(count, len(items))))]
    totals = [0] * len(groups)
    for item in sorted(items, key=lambda item: item.source.size - item.offset, reverse=True):
        smallest = totals.index(min(totals))
        groups[smallest].append(item)
        totals[smallest] += item.source.size - item.offset
    return [sorted(group, key=lambda item: item.index) for group in groups]


def _map_threads(work: Callable[[int], T], count: int, threads: int) -> list[T]:
    """Return ``work(i)`` for i in range(count), run on up to ``threads`` threads."""
    if count <= 1 or threads <= 1:
        return [work(index) for index in range(count)]
    with ThreadPoolExecutor(max_workers=min(threads, count),
                            thread_name_prefix="wrfbatch-transfer") as pool:
        return list(pool.map(work, range(count)))


def _local_source(path: Path) -> _Source:
    try:
        info = path.stat()
    except OSError as exc:
        raise TransferError(f"reading {path} for upload failed: {exc.strerror or exc}") from exc
    return _Source(info.st_size, int(info.st_mtime), info.st_mtime_ns)


def _file_sha256(path: Path, host: str) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        raise TransferError(f"reading {path} failed: {exc.strerror or exc}", host) from exc


def _load_key(path: Path) -> paramiko.PKey:
    """Read the private key file; raise _KeyFileError (never with key content) on failure."""
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException as exc:
        raise _KeyFileError(
            f"SSH key {path} is encrypted with a passphrase; configure a key without one "
            "for the service, readable only by its user"
        ) from exc
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise _KeyFileError(
            f"SSH key {path} cannot be loaded: {_describe(exc)}; set ssh.key_file to a readable "
            "OpenSSH private key"
        ) from exc


def _start_sftp(transport: paramiko.Transport) -> paramiko.SFTPClient:
    sftp = paramiko.SFTPClient.from_transport(transport)
    if sftp is None:
        raise paramiko.SSHException("the server did not start its SFTP subsystem")
    return sftp


def _describe(exc: BaseException) -> str:
    """Return an exception's text, or its class name when it has none."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text or type(exc).__name__


def _start_io_threads(
    channel: paramiko.Channel, output: _Output, stdin: bytes | None
) -> list[threading.Thread]:
    """Start threads that read stdout and stderr and write stdin, so that none of them
    can block another when a buffer or the channel window is full."""
    threads = [
        threading.Thread(target=_drain, args=(channel.recv, output.stdout), daemon=True),
        threading.Thread(target=_drain, args=(channel.recv_stderr, output.stderr), daemon=True),
    ]
    if stdin is None:
        _send_eof(channel)
    else:
        threads.append(threading.Thread(target=_feed, args=(channel, stdin), daemon=True))
    for thread in threads:
        thread.start()
    return threads


def _drain(receive: Callable[[int], bytes], chunks: list[bytes]) -> None:
    while chunk := receive(_CHUNK_BYTES):
        chunks.append(chunk)


def _send_eof(channel: paramiko.Channel) -> None:
    """Send end of file on ``channel`` unless the channel is closed already.

    paramiko's shutdown_write builds the EOF message under the channel's lock
    but sends it after releasing the lock. A command that exits at once (such
    as ``true``) lets paramiko's transport thread reply to the server's CLOSE in
    between, and OpenSSH's sshd then drops the whole connection ("ieof packet
    referred to nonexistent channel"), as the ssh_reuse benchmark saw with
    8 threads. Sending while holding the lock keeps EOF before CLOSE. During a
    key exchange the SSH protocol allows no channel messages (RFC 4253),
    so the transport thread needs no channel lock until it ends, and waiting
    here for the exchange to end cannot deadlock.
    """
    # NOTE: uses paramiko's private Channel._send_eof and Transport._send_user_message
    # (paramiko 5.1); a paramiko release that renames them breaks every command here.
    with channel.lock:
        if channel.closed:
            return
        message = channel._send_eof()
        if message is not None:
            channel.transport._send_user_message(message)


def _feed(channel: paramiko.Channel, data: bytes) -> None:
    """Send stdin and then end of file; a command may exit before reading all of it."""
    try:
        channel.sendall(data)
        _send_eof(channel)
    except (OSError, EOFError, paramiko.SSHException) as exc:
        logger.debug("stdin not fully sent: %s", exc)


def _join_all(threads: list[threading.Thread], timeout_s: float | None) -> bool:
    """Wait for the threads to finish; return False when ``timeout_s`` passes first."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    for thread in threads:
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return False
    return True


def _copy_chunks(
    source: BinaryIO | paramiko.SFTPFile, target: BinaryIO | paramiko.SFTPFile,
    offset: int, size: int, progress: ProgressCallback | None,
    digest: hashlib._Hash | None = None,
) -> int:
    """Copy from ``source`` to ``target`` until ``size``; return the bytes copied."""
    done = offset
    while done < size and (chunk := source.read(min(_CHUNK_BYTES, size - done))):
        target.write(chunk)
        if digest is not None:
            digest.update(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, size)
    return done - offset


def _progress_reporter(size: int, progress: ProgressCallback | None) -> Callable[[int], None]:
    """Return a function that reports (bytes done, ``size``) to ``progress``, if given."""
    if progress is None:
        return lambda done: None
    return lambda done: progress(done, size)


def _prefix_digest(path: Path, length: int) -> hashlib._Hash:
    """Return the SHA-256 state of a local file's first ``length`` bytes."""
    return _hash_range(hashlib.sha256(), path, 0, length)


def _hash_range(
    digest: hashlib._Hash, path: Path, start: int, length: int | None = None
) -> hashlib._Hash:
    """Update ``digest`` with ``length`` bytes of a local file from ``start`` (to its end
    when ``length`` is None) and return it."""
    with path.open("rb") as handle:
        handle.seek(start)
        remaining = length
        while remaining is None or remaining > 0:
            chunk = handle.read(_CHUNK_BYTES if remaining is None
                                else min(_CHUNK_BYTES, remaining))
            if not chunk:
                break
            digest.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return digest


def _make_dirs(sftp: paramiko.SFTPClient, path: str, mode: int) -> None:
    """Create a remote directory and its missing parents, tolerating ones that exist."""
    try:
        if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
            return
    except FileNotFoundError:
        pass
    parent = posixpath.dirname(path.rstrip("/"))
    if parent and parent != path:
        _make_dirs(sftp, parent, mode)
    try:
        sftp.mkdir(path, mode)
    except OSError:
        # Another process may have created it meanwhile; anything else fails the stat below.
        if not stat.S_ISDIR(sftp.stat(path).st_mode or 0):
            raise


def _remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        sftp.remove(path)


def _close_quietly(sftp: paramiko.SFTPClient) -> None:
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        sftp.close()
