"""The transport interface: run commands and move files on a cluster.

A transport knows nothing about runs or schedulers. Commands given as a list
of arguments are quoted with :func:`shlex.join`; a command given as a string
is passed to the remote shell as it is, so the caller must have quoted every
value in it.
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Called with (bytes done, bytes total) while a file moves.
ProgressCallback = Callable[[int, int], None]


@dataclass
class CommandResult:
    """Exit code and output of one command."""

    command: str
    exit_code: int
    stdout: str
    stderr: str


@dataclass
class TransferResult:
    """Outcome of one upload or download."""

    source: str
    destination: str
    size_bytes: int
    sha256: str
    # True when the destination already held the same content, so nothing moved.
    skipped: bool = False
    # Bytes sent or received; less than size_bytes after a resumed transfer.
    bytes_moved: int = 0


@dataclass
class RemoteFile:
    """A file in a listing of a directory on the cluster."""

    name: str
    size_bytes: int
    mtime: float


class Transport(abc.ABC):
    """Runs commands and moves files on one cluster."""

    #: Host name used in error messages and logs ("localhost" for the local transport).
    host: str = "localhost"

    @abc.abstractmethod
    def run(
        self,
        command: str | Sequence[str],
        *,
        check: bool = True,
        timeout_s: float | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run a command through the cluster's shell (``/bin/sh -c`` semantics).

        Raises RemoteCommandError when ``check`` is true and the exit code is
        non-zero, and ConnectionLostError when the connection drops.
        """

    @abc.abstractmethod
    def upload(
        self, local_path: Path, remote_path: str, *, progress: ProgressCallback | None = None
    ) -> TransferResult:
        """Copy a local file to the cluster, atomically (temporary name, then rename).

        A destination that already has the same size and SHA-256 is left as it
        is; a partial temporary file from an earlier attempt is resumed.
        """

    @abc.abstractmethod
    def download(
        self, remote_path: str, local_path: Path, *, progress: ProgressCallback | None = None
    ) -> TransferResult:
        """Copy a file from the cluster, atomically, with the same skip and resume rules."""

    @abc.abstractmethod
    def read_bytes(self, remote_path: str, max_bytes: int | None = None) -> bytes:
        """Return a remote file's content (the first ``max_bytes`` when given)."""

    @abc.abstractmethod
    def write_bytes(self, remote_path: str, data: bytes, mode: int = 0o644) -> None:
        """Write a small remote file atomically (temporary name, then rename)."""

    @abc.abstractmethod
    def list_dir(self, remote_path: str) -> list[RemoteFile]:
        """List the regular files of a remote directory (not recursive)."""

    @abc.abstractmethod
    def exists(self, remote_path: str) -> bool:
        """Return whether a remote path exists."""

    @abc.abstractmethod
    def make_dirs(self, remote_path: str, mode: int = 0o755) -> None:
        """Create a remote directory and its parents; an existing directory is fine."""

    @abc.abstractmethod
    def remove_tree(self, remote_path: str) -> None:
        """Remove a remote directory and everything below it; a missing one is fine."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close connections; the transport reconnects if it is used again."""

    def read_text(self, remote_path: str, max_bytes: int | None = None) -> str:
        return self.read_bytes(remote_path, max_bytes).decode("utf-8", errors="replace")

    def write_text(self, remote_path: str, text: str, mode: int = 0o644) -> None:
        self.write_bytes(remote_path, text.encode("utf-8"), mode)

    @staticmethod
    def join(command: str | Sequence[str]) -> str:
        """Return the shell form of a command: a list is quoted, a string is kept."""
        return command if isinstance(command, str) else shlex.join(command)

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
