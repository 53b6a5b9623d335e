"""The transport interface: run commands and move files on a cluster.

A transport has no notion of runs or schedulers. Commands given as a list
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

from .. import names
from ..errors import InvalidInputError

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


def check_removable_path(path: str) -> str:
    """Return the normalised form of a path that ``remove_tree`` may delete.

    Raises InvalidInputError for a relative path, a path with ``..`` parts,
    ``/`` and any path with fewer than two components, such as ``/home``.
    """
    normalised = names.check_remote_path(path, "directory to remove")
    if len([part for part in normalised.split("/") if part]) < 2:
        raise InvalidInputError(
            f"refusing to remove {path!r}: give a directory at least two levels below '/'"
        )
    return normalised


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
        idempotent: bool = False,
    ) -> CommandResult:
        """Run a command through the cluster's shell (``/bin/sh -c`` semantics).

        Raises RemoteCommandError when ``check`` is true and the exit code is
        non-zero, and ConnectionLostError when the connection drops or
        ``timeout_s`` passes. A command that the connection drop interrupted is
        run again once only when ``idempotent`` is true (queries such as squeue),
        because running it twice must do no harm.
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

    def upload_many(
        self, files: Sequence[tuple[Path, str]], *, progress: ProgressCallback | None = None,
        sha256: Sequence[str | None] | None = None,
    ) -> list[TransferResult]:
        """Upload several (local path, remote path) pairs with :meth:`upload`'s rules.

        This default uploads one file after another. ``progress`` gets each file's
        (bytes done, file size) here; a transport that overrides this may sum them.
        ``sha256`` may give each local file's SHA-256, computed by the caller when
        it wrote the file. A transport may then record it instead of hashing the
        file again, once it has checked that the file's size and modification
        time did not change during the transfer. This default hashes every file.
        """
        return [self.upload(Path(local), remote, progress=progress) for local, remote in files]

    def download_many(
        self, files: Sequence[tuple[str, Path]], *, progress: ProgressCallback | None = None
    ) -> list[TransferResult]:
        """Download several (remote path, local path) pairs with :meth:`download`'s rules."""
        return [self.download(remote, Path(local), progress=progress) for remote, local in files]

    @abc.abstractmethod
    def read_bytes(self, remote_path: str, max_bytes: int | None = None) -> bytes:
        """Return a remote file's content (the first ``max_bytes`` when given)."""

    @abc.abstractmethod
    def write_bytes(self, remote_path: str, data: bytes, mode: int = 0o644) -> None:
        """Write a small remote file atomically (temporary name, then rename)."""

    @abc.abstractmethod
    def list_dir(self, remote_path: str) -> list[RemoteFile]:
        """List the regular files of a remote directory, sorted by name (not recursive).

        Symbolic links are not followed, so they are not listed. A missing
        directory gives an empty list.
        """

    @abc.abstractmethod
    def exists(self, remote_path: str) -> bool:
        """Return whether a remote path exists."""

    @abc.abstractmethod
    def make_dirs(self, remote_path: str, mode: int = 0o755) -> None:
        """Create a remote directory and its parents; an existing directory is fine."""

    @abc.abstractmethod
    def remove_tree(self, remote_path: str) -> None:
        """Remove a remote directory and everything below it; a missing one is fine.

        Raises InvalidInputError for a relative path, ``/`` or a top-level
        directory such as ``/home`` (see :func:`check_removable_path`).
        """

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
